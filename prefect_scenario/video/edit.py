"""Cutting, joining and shrinking clips to fit a model's limits (Aleph takes at most 30 s, 16 MiB)."""

from __future__ import annotations

import itertools
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from av.video.reformatter import VideoReformatter

from ._errors import MediaError
from .media_io import (
    H264,
    AudioCursor,
    AudioSpec,
    VideoWriter,
    first_video_stream,
    iter_video_frames,
    open_input,
    silent_audio,
    stream_rate,
)
from .probe import VideoProbe, probe_video

# Muxing overhead and VBV overshoot eat into a byte budget; plan for this share of it.
_BUDGET_SHARE = 0.85
_MIN_VIDEO_BITRATE = 16_000
# A cut may move this share of a chunk's planned length away from the even split to land on a scene
# cut or a keyframe: far enough to find one in ordinary footage, near enough to keep chunks alike.
_CUT_WINDOW_SHARE = 0.2
# Frames are compared as small grey thumbnails: a scene cut changes the whole picture, motion does not.
_THUMB_SIZE = (32, 18)
# A scene cut stands out from the clip's ordinary frame-to-frame change by this many median
# absolute deviations, and by at least this many grey levels (0..255) on average.
_CUT_MAD_FACTOR = 8.0
_CUT_MIN_LEVELS = 4.0


@dataclass(frozen=True)
class ChunkSpan:
    """One chunk of a planned split: frames ``start_frame`` (included) to ``end_frame`` (excluded).

    Attributes:
        index: the chunk's place, from 0.
        start_frame: the first frame of the source in the chunk.
        end_frame: the frame after the chunk's last one.
        start_seconds: where the chunk starts in the source.
        end_seconds: where it ends in the source.
        cut: why the chunk starts where it does: ``start`` (the first chunk), ``scene`` (a scene
            cut), ``keyframe`` (a keyframe of the source) or ``even`` (an even split, nothing better
            nearby).
    """

    index: int
    start_frame: int
    end_frame: int
    start_seconds: float
    end_seconds: float
    cut: str = "even"

    @property
    def duration_seconds(self) -> float:
        """The chunk's length."""
        return self.end_seconds - self.start_seconds


def _chunk_count(probe: VideoProbe, frames_limit: int, max_bytes: int) -> int:
    count = max(
        1,
        math.ceil(probe.nb_frames / frames_limit),
        math.ceil(probe.size_bytes / (max_bytes * _BUDGET_SHARE)),
    )
    return min(count, probe.nb_frames)


def _frames_limit(rate: Fraction, max_seconds: float, max_bytes: int) -> int:
    frames_limit = math.floor(max_seconds * rate + Fraction(1, 1000))
    if frames_limit < 1 or max_bytes <= 0:
        raise ValueError(f"limits too small: max_seconds={max_seconds}, max_bytes={max_bytes}")
    return frames_limit


def _cut_candidates(source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: how much the picture changed from the frame before, and whether it is a keyframe.

    One decoding pass over small grey thumbnails, so memory stays flat however long the clip.
    """
    reformatter = VideoReformatter()
    changes: list[float] = []
    keyframes: list[bool] = []
    previous: np.ndarray | None = None
    for frame in iter_video_frames(source):
        grey = reformatter.reformat(frame, format="gray", width=_THUMB_SIZE[0], height=_THUMB_SIZE[1])
        thumb = grey.to_ndarray().astype(np.int16)
        changes.append(0.0 if previous is None else float(np.abs(thumb - previous).mean()))
        keyframes.append(bool(frame.key_frame))
        previous = thumb
    return np.asarray(changes, np.float64), np.asarray(keyframes, bool)


def plan_split(source: Path, *, max_seconds: float, max_bytes: int) -> list[ChunkSpan]:
    """Plan where to cut a video into chunks that each meet both limits, cutting where it shows least.

    The number of chunks is the fewest that meet both limits (the same as :func:`split_video`'s
    even split). Each cut starts from the even split and moves, within a fifth of a chunk and
    never past a limit, to a scene cut when there is one nearby (an edit hides there), else to
    the nearest keyframe of the source, else stays.

    Args:
        source: the video to cut.
        max_seconds: longest chunk allowed.
        max_bytes: largest chunk allowed (a chunk's share of the file's bytes; :func:`split_video`
            re-encodes any chunk that still comes out over it).

    Returns:
        The chunks, in order, covering every frame.

    Raises:
        MediaError: the source cannot be decoded.
        ValueError: a limit is too small to hold even one frame.
    """
    source = Path(source)
    probe = probe_video(source)
    rate = _rate(source)
    frames_limit = _frames_limit(rate, max_seconds, max_bytes)
    total = probe.nb_frames
    count = _chunk_count(probe, frames_limit, max_bytes)
    cuts: list[tuple[int, str]] = [(0, "start")]
    if count > 1:
        changes, keyframes = _cut_candidates(source)
        # The decoder is the truth about frames: a header that overstates is ignored.
        total = min(total, len(changes)) or total
        ordinary = changes[1:]
        median = float(np.median(ordinary)) if ordinary.size else 0.0
        spread = float(np.median(np.abs(ordinary - median))) if ordinary.size else 0.0
        threshold = max(median + _CUT_MAD_FACTOR * spread, median + _CUT_MIN_LEVELS)
        window = max(1, round(_CUT_WINDOW_SHARE * total / count))
        for k in range(1, count):
            previous = cuts[-1][0]
            even = round(k * total / count)
            # Every chunk, this one and those left, must stay within the frame limit.
            low = max(previous + 1, total - (count - k) * frames_limit, even - window)
            high = min(previous + frames_limit, total - (count - k), even + window)
            if low > high:
                cuts.append((min(max(even, previous + 1), previous + frames_limit), "even"))
                continue
            span = np.arange(low, high + 1)
            scenes = span[changes[span] >= threshold]
            if scenes.size:
                best = max(scenes.tolist(), key=lambda i: (changes[i], -abs(i - even)))
                cuts.append((int(best), "scene"))
                continue
            keys = span[keyframes[span]]
            if keys.size:
                cuts.append((int(min(keys.tolist(), key=lambda i: (abs(i - even), i))), "keyframe"))
                continue
            cuts.append((min(max(even, low), high), "even"))
    bounds = [frame for frame, _ in cuts] + [total]
    return [
        ChunkSpan(
            index=index,
            start_frame=start,
            end_frame=stop,
            start_seconds=float(Fraction(start) / rate),
            end_seconds=float(Fraction(stop) / rate),
            cut=cuts[index][1],
        )
        for index, (start, stop) in enumerate(itertools.pairwise(bounds))
    ]


def split_video(
    source: Path,
    out_dir: Path,
    *,
    max_seconds: float,
    max_bytes: int,
    spans: Sequence[ChunkSpan] | None = None,
) -> list[Path]:
    """Cut a video into consecutive chunks that each meet both limits, audio included.

    Chunks are re-encoded (each starts on a keyframe) and of equal length, or as ``spans`` says
    (see :func:`plan_split`); any chunk still over `max_bytes` is re-encoded at a bitrate that fits.

    Args:
        source: the video to cut.
        out_dir: where the chunks go, named `<stem>_partNN.mp4`.
        max_seconds: longest chunk allowed.
        max_bytes: largest chunk allowed.
        spans: where to cut (from :func:`plan_split`); None for an even split.

    Returns:
        The chunk files, in order.

    Raises:
        MediaError: the source cannot be decoded, or a chunk cannot be made small enough.
        ValueError: a limit is too small to hold even one frame, or ``spans`` do not cover the
            source's frames in order within the limit.
    """
    source, out_dir = Path(source), Path(out_dir)
    probe = probe_video(source)
    rate = _rate(source)
    frames_limit = _frames_limit(rate, max_seconds, max_bytes)
    total = probe.nb_frames
    if spans:
        bounds = [spans[0].start_frame] + [span.end_frame for span in spans]
        contiguous = all(a.end_frame == b.start_frame for a, b in itertools.pairwise(spans))
        if bounds[0] != 0 or not contiguous or bounds[-1] > total:
            raise ValueError(f"spans must cover frames 0 to {total} of {source.name} in order")
        if any(not 0 < span.end_frame - span.start_frame <= frames_limit for span in spans):
            raise ValueError(f"every span must hold 1 to {frames_limit} frames ({max_seconds} s)")
        total = bounds[-1]
    else:
        count = _chunk_count(probe, frames_limit, max_bytes)
        bounds = [round(k * total / count) for k in range(count + 1)]
    longest = max(b - a for a, b in itertools.pairwise(bounds)) / rate
    spec = AudioSpec.of(source) if probe.has_audio else None
    audio_bitrate = _audio_bitrate(spec)
    # A one-second VBV cap at the chunk's share of the budget keeps sizes near the plan.
    cap = int(max_bytes * 8 * _BUDGET_SHARE / float(longest)) - audio_bitrate
    codec = H264(max_bitrate=max(cap, 50_000))  # H264() defaults: constant quality 18, veryfast
    out_dir.mkdir(parents=True, exist_ok=True)
    cursor = AudioCursor(source, spec) if spec is not None else None
    frames = iter_video_frames(source)
    parts: list[Path] = []
    try:
        for number, (start, stop) in enumerate(itertools.pairwise(bounds), start=1):
            part = out_dir / f"{source.stem}_part{number:02d}.mp4"
            with VideoWriter.sized_like(
                probe, part, rate=rate, codec=codec, audio=spec, audio_bitrate=audio_bitrate
            ) as writer:
                for index in range(start, stop):
                    frame = next(frames, None)
                    if frame is None:
                        raise MediaError(
                            f"{source} ended at frame {index} of {total}; fix: re-export the file"
                        )
                    writer.add_video_frame(frame)
                    if cursor is not None and spec is not None:
                        writer.add_audio(cursor.take(round((index + 1) / rate * spec.rate)))
                if cursor is not None and spec is not None and stop == total:
                    end = round(Fraction(probe.duration_seconds) * spec.rate)
                    writer.add_audio(cursor.take(end))
            parts.append(part)
    finally:
        frames.close()
        if cursor is not None:
            cursor.close()
    for part in parts:
        if part.stat().st_size > max_bytes:
            fit_to_limits(part, part, max_bytes=max_bytes, max_fps=float("inf"))
    return parts


def concat_videos(parts: Sequence[Path], out: Path, *, audio_from: Path | None = None) -> VideoProbe:
    """Join videos end to end into one H.264 MP4.

    Frames of parts with another size are scaled to the first part's size; the frame rate is the
    first part's.

    Args:
        parts: the videos, in order.
        out: the joined file.
        audio_from: take the audio from this file (e.g. the original before splitting), cut to
            the joined length; otherwise each part's own audio is used, silence where it has none.

    Returns:
        The probe of the joined file.

    Raises:
        ValueError: no parts.
        MediaError: a part cannot be decoded.
    """
    if not parts:
        raise ValueError("no parts to join")
    paths = [Path(p) for p in parts]
    probes = [probe_video(p) for p in paths]
    first = probes[0]
    rate = _rate(paths[0])
    audio_source = Path(audio_from) if audio_from is not None else None
    if audio_source is not None:
        spec = AudioSpec.of(audio_source)
    else:
        spec = next((AudioSpec.of(p.path) for p in probes if p.has_audio), None)
    shared = AudioCursor(audio_source, spec) if audio_source and spec else None
    try:
        with VideoWriter.sized_like(first, Path(out), rate=rate, codec=H264(), audio=spec) as writer:
            for path, probe in zip(paths, probes, strict=True):
                own = AudioCursor(path, spec) if shared is None and spec and probe.has_audio else None
                part_start = writer.seconds_written
                try:
                    for frame in iter_video_frames(path):
                        writer.add_video_frame(frame)
                        if spec is None:
                            continue
                        until = writer.audio_sample_at(writer.seconds_written)
                        if shared is not None:
                            writer.add_audio(shared.take(until, pad=True))
                        elif own is not None:
                            local = writer.audio_sample_at(writer.seconds_written - part_start)
                            writer.add_audio(own.take(local, pad=True))
                        elif until > writer.audio_samples_written:
                            writer.add_audio(silent_audio(spec, until - writer.audio_samples_written))
                finally:
                    if own is not None:
                        own.close()
    finally:
        if shared is not None:
            shared.close()
    return probe_video(Path(out))


def fit_to_limits(source: Path, out: Path, *, max_bytes: int, max_fps: float = 30.0) -> VideoProbe:
    """Re-encode a video as H.264 MP4 at a bitrate (and frame rate) that fits the limits.

    A file that is already an H.264 MP4 within both limits is copied as is. Frames are dropped
    evenly when the source is faster than `max_fps`. Audio is kept (AAC). `out` may be `source`.

    Returns:
        The probe of the result.

    Raises:
        MediaError: the source cannot be decoded, or no sensible bitrate fits (too long for the
            byte budget).
    """
    source, out = Path(source), Path(out)
    probe = probe_video(source)
    rate = _rate(source)
    fits_already = (
        probe.size_bytes <= max_bytes
        and probe.frame_rate <= max_fps + 1e-6
        and probe.container == "mp4"
        and probe.video_codec == "h264"
    )
    if fits_already:
        if out.resolve() != source.resolve():
            shutil.copyfile(source, out)
        return probe_video(out)
    out_rate = rate if float(rate) <= max_fps else Fraction(max_fps).limit_denominator(1001)
    spec = AudioSpec.of(source) if probe.has_audio else None
    seconds = max(probe.duration_seconds, 1e-3)
    budget = max_bytes * 8 / seconds
    audio_bitrate = min(_audio_bitrate(spec), int(budget * 0.1)) if spec else 0
    # Attempts go beside `out` and replace it only when one fits, so `out` may be `source`.
    attempt = out.with_name(f".{out.name}.attempt.mp4")
    try:
        for share in (0.9, 0.75, 0.6, 0.45, 0.3):
            video_bitrate = int(budget * share) - audio_bitrate
            if video_bitrate < _MIN_VIDEO_BITRATE:
                break
            codec = H264(preset="veryfast", bitrate=video_bitrate)
            _transcode(source, attempt, codec, rate, out_rate, probe, spec, max(audio_bitrate, 16_000))
            if attempt.stat().st_size <= max_bytes:
                os.replace(attempt, out)
                return probe_video(out)
    finally:
        attempt.unlink(missing_ok=True)
    raise MediaError(
        f"{source} cannot fit in {max_bytes} bytes ({probe.duration_seconds:.1f} s, "
        f"{probe.size_bytes} bytes); fix: trim the clip or lower its resolution"
    )


def _transcode(
    source: Path,
    out: Path,
    codec: H264,
    rate: Fraction,
    out_rate: Fraction,
    probe: VideoProbe,
    spec: AudioSpec | None,
    audio_bitrate: int,
) -> None:
    cursor = AudioCursor(source, spec) if spec is not None else None
    try:
        with VideoWriter.sized_like(
            probe, out, rate=out_rate, codec=codec, audio=spec, audio_bitrate=audio_bitrate
        ) as writer:
            for index, frame in enumerate(iter_video_frames(source)):
                # Keep a frame when it opens a new output frame slot: even decimation.
                if index and math.floor(index * out_rate / rate) == math.floor((index - 1) * out_rate / rate):
                    continue
                writer.add_video_frame(frame)
                if cursor is not None:
                    writer.add_audio(cursor.take(writer.audio_sample_at(writer.seconds_written)))
            if cursor is not None:
                end = writer.audio_sample_at(Fraction(probe.duration_seconds))
                writer.add_audio(cursor.take(end))
    finally:
        if cursor is not None:
            cursor.close()


def _rate(path: Path) -> Fraction:
    with open_input(path) as container:
        return stream_rate(first_video_stream(container, path))


def _audio_bitrate(spec: AudioSpec | None) -> int:
    if spec is None:
        return 0
    channels = 1 if spec.layout == "mono" else 2
    return 64_000 * channels
