"""PyAV primitives for reading frames, writing files and moving audio.

The video modules build on these, and so do the emulator's fake models
(:mod:`prefect_scenario.emulator.service.fakes`): which is why this module is public while the
package's ``__all__`` lists only the operations the product calls. Everything here streams: frames
are decoded and encoded one at a time, and audio goes through a small FIFO, so memory stays flat
whatever the length of the clip.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Required, TypedDict, Unpack, cast

import av
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.video.codeccontext import VideoCodecContext
from av.video.frame import VideoFrame
from av.video.reformatter import VideoReformatter
from av.video.stream import VideoStream

from ._errors import MediaError

# Without bitexact, the Matroska muxer writes random UIDs and the MP4 muxer its library version, so
# the same frames would not give the same bytes.
_MUX_OPTIONS = {"fflags": "+bitexact"}
_EXPORT_FIX = "export it again as MP4 (H.264) or WebM (VP9)"

# VP9 and VP8 keep alpha in a side channel that FFmpeg's native decoders ignore; only libvpx reads it.
_ALPHA_DECODERS = {"vp9": "libvpx-vp9", "vp8": "libvpx"}


def not_decodable(path: Path, reason: object, fix: str = _EXPORT_FIX) -> MediaError:
    """Build the one message shape used for unreadable videos."""
    return MediaError(f"{path} is not a decodable video: {reason}; fix: {fix}")


def open_input(path: Path) -> InputContainer:
    """Open a media file for reading, turning FFmpeg's refusal into a MediaError."""
    if not path.exists():
        raise FileNotFoundError(path)
    try:
        return av.open(str(path), "r")
    except av.FFmpegError as exc:
        reason = f"FFmpeg cannot read it ({_reason(exc)}): not a video, or truncated or damaged"
        raise not_decodable(path, reason) from exc


def first_video_stream(container: InputContainer, path: Path) -> VideoStream:
    """Return the first video stream, or raise MediaError when there is none."""
    if not container.streams.video:
        raise not_decodable(path, "it has no video stream")
    return container.streams.video[0]


def first_audio_stream(container: InputContainer) -> AudioStream | None:
    """Return the first audio stream, if any."""
    return container.streams.audio[0] if container.streams.audio else None


def stream_rate(stream: VideoStream) -> Fraction:
    """Frame rate of a video stream as an exact fraction (24, 30000/1001, ...)."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        return Fraction(25)
    # WebM stores millisecond timestamps, so measured rates come out as 23.98...-style fractions
    # with huge denominators; snapping recovers the nominal rate the encoder was given.
    return Fraction(rate).limit_denominator(1001)


def has_alpha_channel(stream: VideoStream) -> bool:
    """True when the stream carries transparency (VP8/VP9 side-channel alpha or an alpha pixel format)."""
    if stream.metadata.get("alpha_mode") == "1" or stream.metadata.get("ALPHA_MODE") == "1":
        return True
    pix_fmt = stream.codec_context.pix_fmt or ""
    return any(tag in pix_fmt for tag in ("yuva", "rgba", "argb", "bgra", "abgr", "gbrap", "ya"))


def iter_video_frames(path: Path, *, alpha: bool = False) -> Generator[VideoFrame, None, None]:
    """Decode the first video stream of a file frame by frame.

    Args:
        path: the video file.
        alpha: decode VP8/VP9 with libvpx so the alpha plane survives (frames come as yuva420p).

    Yields:
        Decoded frames in presentation order.
    """
    with open_input(path) as container:
        stream = first_video_stream(container, path)
        decoder_name = _ALPHA_DECODERS.get(stream.codec_context.name) if alpha else None
        # Without libvpx in this FFmpeg build, frames still decode, only opaque.
        usable = decoder_name is not None and decoder_name in av.codecs_available
        if decoder_name is not None and usable and has_alpha_channel(stream):
            decoder = cast(VideoCodecContext, av.CodecContext.create(decoder_name, "r"))
            if stream.codec_context.extradata:
                decoder.extradata = stream.codec_context.extradata
            try:
                for packet in container.demux(stream):
                    # demux ends with an empty packet, which flushes the decoder.
                    yield from decoder.decode(packet)
            except av.FFmpegError as exc:
                raise not_decodable(path, _reason(exc)) from exc
            return
        stream.thread_type = "AUTO"
        try:
            for packet in container.demux(stream):
                yield from packet.decode()
        except av.FFmpegError as exc:
            raise not_decodable(path, _reason(exc)) from exc


def iter_rgb(path: Path) -> Iterator[np.ndarray]:
    """Yield each frame of a video as an RGB uint8 array of shape (height, width, 3)."""
    # One reformatter per stream: VideoFrame.to_ndarray(format=...) builds a new swscale
    # context per frame, which costs more than decoding a small frame.
    reformatter = VideoReformatter()
    for frame in iter_video_frames(path):
        yield reformatter.reformat(frame, format="rgb24").to_ndarray()


def iter_rgba(path: Path) -> Iterator[np.ndarray]:
    """Yield each frame as RGBA uint8 (height, width, 4); opaque videos get alpha 255."""
    reformatter = VideoReformatter()
    for frame in iter_video_frames(path, alpha=True):
        yield reformatter.reformat(frame, format="rgba").to_ndarray()


@dataclass(frozen=True)
class AudioSpec:
    """Sample rate and channel layout shared by an audio reader and writer."""

    rate: int
    layout: str

    @classmethod
    def of(cls, path: Path) -> AudioSpec | None:
        """The audio format of a file's first audio stream, or None when it has no audio."""
        with open_input(path) as container:
            stream = first_audio_stream(container)
            if stream is None:
                return None
            layout = stream.layout.name
            # AAC has no layout for odd channel maps; stereo is the safe common ground.
            if layout not in ("mono", "stereo", "5.1", "7.1"):
                layout = "stereo"
            return cls(rate=stream.rate or 48_000, layout=layout)


class AudioCursor:
    """Reads a file's audio as planar float at a fixed format and hands out exact sample ranges.

    Sample 0 is the first decoded sample, which matches video time 0 for the files this module
    handles (encoder priming is trimmed by the decoder).
    """

    def __init__(self, path: Path, spec: AudioSpec) -> None:
        self.path = path
        self.spec = spec
        self.position = 0
        self._container = open_input(path)
        stream = first_audio_stream(self._container)
        if stream is None:
            self._container.close()
            raise MediaError(f"{path} has no audio stream; fix: pass a source that has audio")
        self._packets = self._container.demux(stream)
        self._resampler = av.AudioResampler(format="fltp", layout=spec.layout, rate=spec.rate)
        self._fifo = av.AudioFifo()
        self._exhausted = False

    def _fill(self, needed: int) -> None:
        while self._fifo.samples < needed and not self._exhausted:
            try:
                packet = next(self._packets)
                decoded = packet.decode()
            except StopIteration:
                self._exhausted = True
                decoded = []
            except av.FFmpegError as exc:
                raise not_decodable(self.path, _reason(exc)) from exc
            frames = [out for frame in decoded for out in self._resampler.resample(frame)]
            if self._exhausted:
                frames += self._resampler.resample(None)
            for frame in frames:
                # The FIFO insists on contiguous pts; positions are tracked in samples instead.
                frame.pts = None
                self._fifo.write(frame)

    def take(self, until: int, *, pad: bool = False) -> AudioFrame | None:
        """Return the samples from the current position up to sample `until` (exclusive).

        Args:
            until: absolute sample index to stop at.
            pad: fill with silence when the audio ends first, so the position still reaches `until`.
        """
        wanted = until - self.position
        if wanted <= 0:
            return None
        self._fill(wanted)
        frame = self._fifo.read(wanted, partial=True)
        got = frame.samples if frame is not None else 0
        if pad and got < wanted:
            silence = silent_audio(self.spec, wanted - got)
            frame = silence if frame is None else _join_audio(frame, silence, self.spec)
            got = wanted
        self.position += got
        return frame

    def close(self) -> None:
        """Release the underlying file."""
        self._container.close()


def silent_audio(spec: AudioSpec, samples: int) -> AudioFrame:
    """A planar-float frame of silence."""
    channels = av.AudioLayout(spec.layout).nb_channels
    frame = AudioFrame.from_ndarray(
        np.zeros((channels, samples), np.float32), format="fltp", layout=spec.layout
    )
    frame.sample_rate = spec.rate
    return frame


def _join_audio(first: AudioFrame, second: AudioFrame, spec: AudioSpec) -> AudioFrame:
    data = np.concatenate([first.to_ndarray(), second.to_ndarray()], axis=1)
    frame = AudioFrame.from_ndarray(data.astype(np.float32), format="fltp", layout=spec.layout)
    frame.sample_rate = spec.rate
    return frame


@dataclass(frozen=True)
class H264:
    """libx264 settings.

    Constant quality (`crf`) by default; `max_bitrate` caps it with a one-second VBV buffer. With
    `bitrate`, the encoder targets that average under the same cap, so the size is predictable;
    `cbr` also pads with filler to hit the bitrate exactly.
    """

    crf: int = 18
    preset: str = "veryfast"
    bitrate: int | None = None
    max_bitrate: int | None = None
    cbr: bool = False
    gop: int | None = None

    def options(self) -> dict[str, str]:
        """Encoder options for PyAV."""
        options: dict[str, str] = {"preset": self.preset}
        if self.bitrate is None:
            options["crf"] = str(self.crf)
        cap = self.bitrate if self.bitrate is not None else self.max_bitrate
        if cap is not None:
            options.update({"maxrate": str(cap), "bufsize": str(cap)})
        if self.bitrate is not None:
            options["b"] = str(self.bitrate)
            if self.cbr:
                options["x264-params"] = "nal-hrd=cbr"
        if self.gop is not None:
            options["g"] = str(self.gop)
        return options


@dataclass(frozen=True)
class VP9Alpha:
    """libvpx-vp9 settings for layers with transparency (yuva420p).

    Realtime mode: on the 4 s sample clip it encodes 3-4x faster than "good" mode, for files 2-3x
    bigger and a composite PSNR of ~39.5 dB instead of ~41.8 dB. The emulator runs it in every test
    that makes layers, so speed wins.
    """

    crf: int = 18
    cpu_used: int = 8

    def options(self) -> dict[str, str]:
        """Encoder options for PyAV."""
        return {
            "crf": str(self.crf),
            "b": "0",  # constant quality, no bitrate target
            "deadline": "realtime",
            "cpu-used": str(self.cpu_used),
            "row-mt": "0",
            # No look-ahead: it buffers 25 frames per encoder (two encoders per layer with alpha),
            # which costs ~25 MB a layer and buys little in realtime mode.
            "lag-in-frames": "0",
        }


class WriterSettings(TypedDict, total=False):
    """What :meth:`VideoWriter.sized_like` passes on: everything but the size."""

    rate: Required[Fraction]
    codec: Required[H264 | VP9Alpha]
    audio: AudioSpec | None
    audio_bitrate: int | None


class FrameSize(Protocol):
    """Anything with a picture size: a :class:`~prefect_scenario.video.VideoProbe`, for one."""

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...


class VideoWriter:
    """Streams frames (and optionally audio) into an H.264 MP4 or a VP9-alpha WebM.

    The file is written beside the target and renamed into place on a clean close, so a crash never
    leaves a half-written output under the final name.
    """

    def __init__(
        self,
        path: Path,
        *,
        width: int,
        height: int,
        rate: Fraction,
        codec: H264 | VP9Alpha,
        audio: AudioSpec | None = None,
        audio_bitrate: int | None = None,
    ) -> None:
        self.path = path
        self.width = width
        self.height = height
        self.rate = rate
        self.frames_written = 0
        self.audio_samples_written = 0
        self._scaler = VideoReformatter()
        self._tmp = path.with_name(f".{path.name}.partial")
        if audio is not None and not isinstance(codec, H264):
            raise ValueError("audio is only written to MP4 (AAC)")
        container_format: Literal["mp4", "webm"] = "mp4" if isinstance(codec, H264) else "webm"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container: OutputContainer = av.open(
            str(self._tmp), "w", format=container_format, options=_MUX_OPTIONS
        )
        try:
            self._video, self._input_format = self._add_video(codec)
            self._audio = self._add_audio(audio, audio_bitrate)
        except BaseException:
            self.abort()
            raise
        self._audio_spec = audio

    @classmethod
    def sized_like(cls, source: FrameSize, path: Path, **settings: Unpack[WriterSettings]) -> VideoWriter:
        """A writer at ``source``'s picture size (a probe): an edit, a chunk or a preview of that clip."""
        return cls(path, width=source.width, height=source.height, **settings)

    def _add_video(self, codec: H264 | VP9Alpha) -> tuple[VideoStream, str]:
        width, height, rate = self.width, self.height, self.rate
        if isinstance(codec, H264):
            stream = self._container.add_stream("libx264", rate=rate)
            # 4:2:0 needs even sizes; 4:4:4 keeps odd sizes exact rather than cropping them.
            stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
            if codec.bitrate is not None:
                stream.bit_rate = codec.bitrate
            input_format = "rgb24"
        else:
            stream = self._container.add_stream("libvpx-vp9", rate=rate)
            stream.pix_fmt = "yuva420p"
            input_format = "rgba"
        stream.width = width
        stream.height = height
        # One thread: libx264/libvpx output depends on the thread count, and same input must give
        # the same bytes on every machine.
        stream.codec_context.thread_count = 1
        stream.codec_context.options = codec.options()
        return stream, input_format

    def _add_audio(self, audio: AudioSpec | None, bitrate: int | None) -> AudioStream | None:
        if audio is None:
            return None
        stream = self._container.add_stream("aac", rate=audio.rate)
        stream.layout = audio.layout
        channels = av.AudioLayout(audio.layout).nb_channels
        stream.bit_rate = bitrate or 64_000 * min(channels, 2)
        return stream

    @property
    def seconds_written(self) -> Fraction:
        """Duration of the video written so far."""
        return self.frames_written / self.rate

    def add_frame(self, image: np.ndarray) -> None:
        """Encode one frame (RGB for MP4, RGBA for WebM) of the writer's size."""
        frame = VideoFrame.from_ndarray(np.ascontiguousarray(image), format=self._input_format)
        self.add_video_frame(frame)

    def add_video_frame(self, frame: VideoFrame) -> None:
        """Encode one already decoded frame, rescaling it when its size differs."""
        if frame.width != self.width or frame.height != self.height:
            frame = self._scaler.reformat(frame, width=self.width, height=self.height)
        frame.pts = self.frames_written
        frame.time_base = 1 / self.rate
        self.frames_written += 1
        self._container.mux(self._video.encode(frame))

    def add_audio(self, frame: AudioFrame | None) -> None:
        """Encode audio that follows what was written before (None is ignored)."""
        if frame is None or self._audio is None or self._audio_spec is None:
            return
        frame.pts = self.audio_samples_written
        frame.time_base = Fraction(1, self._audio_spec.rate)
        frame.sample_rate = self._audio_spec.rate
        self.audio_samples_written += frame.samples
        self._container.mux(self._audio.encode(frame))

    def audio_sample_at(self, seconds: Fraction) -> int:
        """Index of the audio sample that plays at `seconds`."""
        rate = self._audio_spec.rate if self._audio_spec is not None else 0
        return round(seconds * rate)

    def close(self) -> None:
        """Flush encoders and move the file into place."""
        self._container.mux(self._video.encode(None))
        if self._audio is not None:
            self._container.mux(self._audio.encode(None))
        self._container.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop the partial file."""
        with contextlib.suppress(av.FFmpegError):
            self._container.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).rstrip(".")
