"""Cutting, joining and shrinking clips to fit a model's limits (Aleph takes at most 30 s, 16 MiB)."""

from __future__ import annotations

import itertools
import math
import os
import shutil
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from ._errors import MediaError
from ._media import (
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
_CHUNK_CODEC = H264(crf=18, preset="veryfast")
_JOIN_CODEC = H264(crf=18, preset="veryfast")


def split_video(source: Path, out_dir: Path, *, max_seconds: float, max_bytes: int) -> list[Path]:
    """Cut a video into consecutive chunks that each meet both limits, audio included.

    Chunks are re-encoded (each starts on a keyframe) and of equal length; any chunk still over
    `max_bytes` is re-encoded at a bitrate that fits.

    Args:
        source: the video to cut.
        out_dir: where the chunks go, named `<stem>_partNN.mp4`.
        max_seconds: longest chunk allowed.
        max_bytes: largest chunk allowed.

    Returns:
        The chunk files, in order.

    Raises:
        MediaError: the source cannot be decoded, or a chunk cannot be made small enough.
        ValueError: a limit is too small to hold even one frame.
    """
    source, out_dir = Path(source), Path(out_dir)
    probe = probe_video(source)
    rate = _rate(source)
    frames_limit = math.floor(max_seconds * rate + Fraction(1, 1000))
    if frames_limit < 1 or max_bytes <= 0:
        raise ValueError(f"limits too small: max_seconds={max_seconds}, max_bytes={max_bytes}")
    total = probe.nb_frames
    count = max(1, math.ceil(total / frames_limit), math.ceil(probe.size_bytes / (max_bytes * _BUDGET_SHARE)))
    count = min(count, total)
    bounds = [round(k * total / count) for k in range(count + 1)]
    longest = max(b - a for a, b in itertools.pairwise(bounds)) / rate
    spec = AudioSpec.of(source) if probe.has_audio else None
    audio_bitrate = _audio_bitrate(spec)
    # A one-second VBV cap at the chunk's share of the budget keeps sizes near the plan.
    cap = int(max_bytes * 8 * _BUDGET_SHARE / float(longest)) - audio_bitrate
    codec = H264(crf=_CHUNK_CODEC.crf, preset=_CHUNK_CODEC.preset, max_bitrate=max(cap, 50_000))
    out_dir.mkdir(parents=True, exist_ok=True)
    cursor = AudioCursor(source, spec) if spec is not None else None
    frames = iter_video_frames(source)
    parts: list[Path] = []
    try:
        for number, (start, stop) in enumerate(itertools.pairwise(bounds), start=1):
            part = out_dir / f"{source.stem}_part{number:02d}.mp4"
            with VideoWriter(
                part,
                width=probe.width,
                height=probe.height,
                rate=rate,
                codec=codec,
                audio=spec,
                audio_bitrate=audio_bitrate,
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
        with VideoWriter(
            Path(out), width=first.width, height=first.height, rate=rate, codec=_JOIN_CODEC, audio=spec
        ) as writer:
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
        with VideoWriter(
            out,
            width=probe.width,
            height=probe.height,
            rate=out_rate,
            codec=codec,
            audio=spec,
            audio_bitrate=audio_bitrate,
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
