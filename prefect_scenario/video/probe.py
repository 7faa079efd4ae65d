"""Probing: what a local video or image is, checked by actually reading it."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image, UnidentifiedImageError

from prefect_scenario.models import sniff_media_type

from ._errors import MediaError
from .media_io import (
    first_audio_stream,
    first_video_stream,
    has_alpha_channel,
    not_decodable,
    open_input,
    stream_rate,
)

_WEBM_VIDEO = {"vp8", "vp9", "av1"}
_WEBM_AUDIO = {None, "opus", "vorbis"}
_IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
_MIME_BY_SUFFIX = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".webm": "video/webm",
    ".mov": "video/quicktime",
    ".mkv": "video/x-matroska",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
}
_MIME_BY_CONTAINER = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "webm": "video/webm",
    "matroska": "video/x-matroska",
}


@dataclass(frozen=True)
class VideoProbe:
    """What a video file holds, as measured by demuxing it.

    `nb_frames` is counted packet by packet, so it is exact even when the header does not say.
    `container` is one of "mp4", "mov", "webm", "matroska" or FFmpeg's short name for others.
    """

    path: Path
    size_bytes: int
    container: str
    video_codec: str
    width: int
    height: int
    frame_rate: float
    duration_seconds: float
    nb_frames: int
    has_audio: bool
    audio_codec: str | None
    pixel_format: str
    has_alpha: bool

    @property
    def mime_type(self) -> str:
        """MIME type matching `container`."""
        return _MIME_BY_CONTAINER.get(self.container, "application/octet-stream")


@dataclass(frozen=True)
class ImageProbe:
    """What an image file holds. `format` is "png", "jpeg" or "webp"."""

    path: Path
    size_bytes: int
    format: str
    width: int
    height: int
    mime_type: str


def probe_video(path: Path) -> VideoProbe:
    """Read a video's container, streams and exact frame count.

    Args:
        path: the file to probe.

    Returns:
        The measured properties.

    Raises:
        MediaError: the file is not a decodable video (text, truncated, no frames, unknown codec).
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise not_decodable(path, "the file is empty")
    with open_input(path) as container:
        stream = first_video_stream(container, path)
        audio = first_audio_stream(container)
        video_codec = stream.codec_context.name
        header_frames = stream.frames
        time_base = stream.time_base or Fraction(1, 90_000)
        # Read here, not after the block: once the container is closed the stream's fields are
        # freed memory (a probe in another thread then read a start time of -3.9e11 ticks).
        start_time = stream.start_time or 0
        stream_seconds = float(stream.duration * time_base) if stream.duration else None
        tag_seconds = _parse_tag_duration(stream.metadata.get("DURATION"))
        container_seconds = container.duration / 1_000_000 if container.duration else None
        pix_fmt = stream.codec_context.pix_fmt or ""
        alpha = has_alpha_channel(stream)
        rate = stream_rate(stream)
        major_brand = container.metadata.get("major_brand", "")
        format_name = container.format.name
        count, corrupt, first_frame, last_end = 0, False, None, None
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                count += 1
                corrupt = corrupt or packet.is_corrupt
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is not None:
                    # A packet without a duration lasts one frame.
                    end = stamp + (packet.duration or round(1 / (rate * time_base)))
                    last_end = end if last_end is None else max(last_end, end)
                # Decoding the first frame proves the codec is usable without paying for the rest.
                if first_frame is None:
                    frames = packet.decode()
                    first_frame = frames[0] if frames else None
        except av.FFmpegError as exc:
            raise not_decodable(path, f"reading packet {count + 1} failed ({exc})") from exc
        if first_frame is None and count > 0:
            try:
                frames = stream.decode(None)
            except av.FFmpegError as exc:
                raise not_decodable(path, f"no frame could be decoded ({exc})") from exc
            first_frame = frames[0] if frames else None
    if count == 0 or first_frame is None:
        raise not_decodable(path, "it holds no video frames")
    if corrupt:
        raise not_decodable(path, "it is truncated (a packet runs past the end of the file)")
    if header_frames and count < header_frames:
        raise not_decodable(
            path, f"it is truncated: the header lists {header_frames} frames but {count} remain"
        )
    expected_seconds = stream_seconds or tag_seconds
    if expected_seconds and last_end is not None:
        # Packet timestamps, not count / rate, so variable-frame-rate files are judged fairly.
        covered = float((last_end - start_time) * time_base)
        if covered < expected_seconds - 0.5 / float(rate):
            raise not_decodable(
                path, f"it is truncated: frames cover {covered:.2f} s of {expected_seconds:.2f} s"
            )
    width, height = first_frame.width, first_frame.height
    duration = container_seconds or stream_seconds or tag_seconds or float(count / rate)
    audio_codec = audio.codec_context.name if audio is not None else None
    if alpha and not pix_fmt.startswith(("yuva", "rgba", "argb", "bgra", "abgr", "gbrap", "ya")):
        # Native VP9 decoding reports yuv420p; the alpha side channel makes it yuva420p.
        pix_fmt = pix_fmt.replace("yuv", "yuva", 1) if pix_fmt.startswith("yuv") else pix_fmt
    return VideoProbe(
        path=path,
        size_bytes=size,
        container=_container_name(format_name, major_brand, path, video_codec, audio_codec),
        video_codec=video_codec,
        width=width,
        height=height,
        frame_rate=float(rate),
        duration_seconds=float(duration),
        nb_frames=count,
        has_audio=audio is not None,
        audio_codec=audio_codec,
        pixel_format=pix_fmt,
        has_alpha=alpha,
    )


def probe_image(path: Path) -> ImageProbe:
    """Decode an image fully and report its format and size.

    Raises:
        MediaError: the file is not a decodable PNG, JPEG or WebP image.
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    size = path.stat().st_size
    fix = "export it again as PNG, JPEG or WebP"
    try:
        with Image.open(path) as image:
            # load() decodes every pixel: open() alone accepts truncated files.
            image.load()
            format_name = image.format or ""
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise MediaError(f"{path} is not a decodable image: {exc}; fix: {fix}") from exc
    if format_name not in _IMAGE_FORMATS:
        raise MediaError(f"{path} is not a supported image: it is {format_name or 'unknown'}; fix: {fix}")
    return ImageProbe(
        path=path,
        size_bytes=size,
        format=_IMAGE_FORMATS[format_name],
        width=width,
        height=height,
        mime_type=Image.MIME[format_name],
    )


def mime_type_for(path: Path) -> str:
    """MIME type of a media file, from its leading bytes, else its extension.

    Content wins over the name, so a WebM saved as `.mp4` is reported as `video/webm`. Unknown
    files give "application/octet-stream".
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(64)
    except OSError:
        head = b""
    sniffed = sniff_media_type(head)
    if sniffed is not None:
        if sniffed == "video/x-matroska" and path.suffix.lower() == ".webm":
            return "video/webm"
        return sniffed
    return _MIME_BY_SUFFIX.get(path.suffix.lower(), "application/octet-stream")


def _container_name(
    format_name: str, major_brand: str, path: Path, video_codec: str, audio_codec: str | None
) -> str:
    if format_name.startswith("mov,mp4"):
        return "mov" if major_brand.strip() == "qt" else "mp4"
    if format_name.startswith("matroska"):
        webm_codecs = video_codec in _WEBM_VIDEO and audio_codec in _WEBM_AUDIO
        return "webm" if webm_codecs and path.suffix.lower() != ".mkv" else "matroska"
    return format_name.split(",")[0]


def _parse_tag_duration(text: str | None) -> float | None:
    """Parse Matroska's per-track DURATION tag ("00:00:04.000000000")."""
    if not text:
        return None
    try:
        hours, minutes, seconds = text.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None
