"""The fake "Runway Aleph 2": a deterministic colour restyle driven by the prompt and the seed."""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from prefect_scenario.video import MediaError, VideoProbe, probe_video
from prefect_scenario.video.media_io import (
    H264,
    AudioCursor,
    AudioSpec,
    VideoWriter,
    first_video_stream,
    iter_rgb,
    open_input,
    stream_rate,
)

# How far (seconds, one standard deviation) a reference image's palette reaches, and how much of
# the frame it may take over at its own time.
_REFERENCE_SIGMA_SECONDS = 0.75
_REFERENCE_MAX_WEIGHT = 0.6
# Fixed encoder settings (H264()'s defaults): with one thread, libx264 is byte-for-byte repeatable.
_RESTYLE_CODEC = H264()


@dataclass(frozen=True)
class StyleReference:
    """A reference image pinned at a time (seconds) in the clip."""

    image: Path
    seconds: float


@dataclass(frozen=True)
class _Grade:
    matrix: np.ndarray  # 3x3, applied to (rgb - 128)
    offset: np.ndarray  # 3, added after the matrix
    levels: int  # posterise to this many levels per channel; 0 = off

    @classmethod
    def derive(cls, prompt: str, seed: int) -> _Grade:
        digest = hashlib.sha256(f"{prompt}\x00{seed}".encode()).digest()
        u = [v / 2**32 for v in struct.unpack(">8I", digest)]
        hue = (u[0] * 2 - 1) * math.pi
        saturation = 0.6 + 1.0 * u[1]
        contrast = 0.85 + 0.5 * u[2]
        brightness = (u[3] * 2 - 1) * 20
        tint = 0.85 + 0.3 * np.array([u[4], u[5], u[6]])
        levels = (0, 5, 6, 8, 10, 12)[int(u[7] * 6)]
        # Rotation about the grey axis turns hues without changing brightness.
        axis = np.ones(3) / math.sqrt(3)
        cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rotation = (
            math.cos(hue) * np.eye(3) + math.sin(hue) * cross + (1 - math.cos(hue)) * np.outer(axis, axis)
        )
        grey = np.full((3, 3), 1 / 3)
        saturate = grey + saturation * (np.eye(3) - grey)
        matrix = np.diag(tint) @ (contrast * saturate @ rotation)
        return cls(matrix.astype(np.float32), np.full(3, 128 + brightness, np.float32), levels)


def restyle_video(
    source: Path,
    out: Path,
    *,
    prompt: str,
    seed: int,
    references: Sequence[StyleReference] = (),
) -> VideoProbe:
    """Restyle a video deterministically, keeping its frames, timing and audio.

    The look (hue turn, saturation, contrast, tint, posterisation) comes from sha256(prompt, seed),
    so the same inputs give the same bytes and another seed gives other colours. Near each
    reference's time the frame's palette is pulled toward the reference image's mean colour.

    Args:
        source: the video to restyle.
        out: where to write the H.264 MP4 (yuv420p; yuv444p for odd sizes, which 4:2:0 cannot
            hold exactly).
        prompt: the text prompt.
        seed: the generation seed.
        references: images pinned at times in the clip.

    Returns:
        The probe of the output, which has the source's frame count, frame rate and size.

    Raises:
        MediaError: the source or a reference image cannot be decoded.
    """
    source, out = Path(source), Path(out)
    probe = probe_video(source)
    with open_input(source) as container:
        rate = stream_rate(first_video_stream(container, source))
    grade = _Grade.derive(prompt, seed)
    pinned = [(ref.seconds, _mean_colour(Path(ref.image))) for ref in references]
    spec = AudioSpec.of(source) if probe.has_audio else None
    cursor = AudioCursor(source, spec) if spec is not None else None
    try:
        with VideoWriter.sized_like(probe, out, rate=rate, codec=_RESTYLE_CODEC, audio=spec) as writer:
            for index, frame in enumerate(iter_rgb(source)):
                styled = _apply(grade, frame)
                styled = _pull_to_references(styled, float(index / rate), pinned)
                writer.add_frame(_finish(styled, grade.levels))
                if cursor is not None:
                    writer.add_audio(cursor.take(writer.audio_sample_at(writer.seconds_written)))
            if cursor is not None:
                # The rest of the track, up to the source's own duration: decoders hand out the
                # encoder's end padding too, which would lengthen the clip on every generation.
                end = writer.audio_sample_at(Fraction(probe.duration_seconds))
                writer.add_audio(cursor.take(max(end, writer.audio_samples_written)))
    finally:
        if cursor is not None:
            cursor.close()
    return probe_video(out)


def _apply(grade: _Grade, frame: np.ndarray) -> np.ndarray:
    centred = frame.astype(np.float32) - 128
    return np.asarray(centred @ grade.matrix.T + grade.offset, np.float32)


def _pull_to_references(
    frame: np.ndarray, seconds: float, pinned: list[tuple[float, np.ndarray]]
) -> np.ndarray:
    if not pinned:
        return frame
    weights = [math.exp(-0.5 * ((seconds - at) / _REFERENCE_SIGMA_SECONDS) ** 2) for at, _ in pinned]
    total = sum(weights)
    if total < 1e-3:
        return frame
    target = sum(w * colour for w, (_, colour) in zip(weights, pinned, strict=True)) / total
    strength = min(_REFERENCE_MAX_WEIGHT, total * _REFERENCE_MAX_WEIGHT)
    # Shift the palette so its mean moves toward the reference, then tint toward it: structure
    # stays, colour follows the reference.
    mean = frame.reshape(-1, 3).mean(axis=0)
    shifted = frame + strength * (target - mean)
    return np.asarray(shifted * (1 - 0.35 * strength) + target * 0.35 * strength, np.float32)


def _finish(frame: np.ndarray, levels: int) -> np.ndarray:
    clipped = np.clip(frame, 0, 255)
    if levels:
        step = 255 / (levels - 1)
        clipped = np.round(clipped / step) * step
    return np.asarray(np.round(clipped), np.uint8)


def _mean_colour(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            small = image.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)
    except (OSError, ValueError, SyntaxError) as exc:
        raise MediaError(
            f"{path} is not a decodable image: {exc}; fix: use a PNG, JPEG or WebP reference"
        ) from exc
    return np.asarray(np.asarray(small, np.float32).reshape(-1, 3).mean(axis=0), np.float32)
