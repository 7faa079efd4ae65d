"""Synthetic media for demos and tests: a textured static scene with coloured shapes moving across it."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
from av.audio.frame import AudioFrame
from PIL import Image

from .media_io import H264, AudioSpec, VideoWriter
from .probe import ImageProbe, VideoProbe, probe_image, probe_video

_SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross")
# Saturated colours stand out from the muted background in at least one channel, which is what
# the motion masks of the emulator's layer extractor threshold on.
_COLOURS = (
    (235, 40, 40),
    (30, 200, 70),
    (40, 80, 240),
    (245, 205, 20),
    (210, 50, 220),
    (20, 215, 225),
    (250, 130, 10),
    (250, 250, 250),
)
# Mono: FFmpeg's AAC encoder costs about 1 s per minute per channel, and tests make long clips.
_AUDIO = AudioSpec(rate=48_000, layout="mono")


def make_sample_clip(
    path: Path,
    *,
    seconds: float = 4.0,
    width: int = 320,
    height: int = 240,
    fps: int = 24,
    moving_objects: int = 2,
    with_audio: bool = False,
    seed: int = 0,
    bitrate: int | None = None,
    noise: bool = False,
) -> VideoProbe:
    """Write a deterministic H.264 MP4 test clip.

    Each object moves back and forth in its own horizontal band, so objects never overlap and are
    always separated by background.

    Args:
        path: where to write the MP4.
        seconds: length; the clip has round(seconds * fps) frames.
        width: frame width in pixels.
        height: frame height in pixels.
        fps: frames per second.
        moving_objects: number of shapes (0 for a static scene).
        with_audio: add an AAC stereo tone.
        seed: varies background, shapes' speeds and phases, and the tone.
        bitrate: encode at this constant bitrate (bits/s), padding with filler, so the file size is
            about bitrate * seconds / 8 (handy for files over a size limit).
        noise: add per-frame pixel noise (hard to compress, like grainy footage).

    Returns:
        The probe of the written file.
    """
    n_frames = max(1, round(seconds * fps))
    if moving_objects < 0 or (moving_objects and height // moving_objects < 8):
        raise ValueError(f"moving_objects={moving_objects} does not fit in {height} px of height")
    rng = np.random.default_rng(seed)
    background = _background(width, height, rng)
    objects = [_SampleObject(i, moving_objects, width, height, rng) for i in range(moving_objects)]
    noise_rng = np.random.default_rng(seed + 1)
    tone = 330.0 * 2 ** ((seed % 7) / 12)
    codec = H264(crf=17, preset="ultrafast", bitrate=bitrate, cbr=bitrate is not None, gop=2 * fps)
    rate = Fraction(fps)
    audio = _AUDIO if with_audio else None
    with VideoWriter(Path(path), width=width, height=height, rate=rate, codec=codec, audio=audio) as writer:
        for index in range(n_frames):
            frame = background.copy()
            t = index / fps
            for obj in objects:
                obj.draw(frame, t)
            if noise:
                # XOR with small random values: full-entropy grain at numpy speed.
                frame ^= noise_rng.integers(0, 24, frame.shape, dtype=np.uint8)
            writer.add_frame(frame)
            if with_audio:
                until = writer.audio_sample_at(writer.seconds_written)
                writer.add_audio(_tone(writer.audio_samples_written, until, tone))
    return probe_video(Path(path))


def make_sample_image(
    path: Path, *, color: tuple[int, int, int], width: int = 64, height: int = 64
) -> ImageProbe:
    """Write a solid-colour PNG (e.g. a style reference) and return its probe."""
    Image.new("RGB", (width, height), color).save(path, format="PNG")
    return probe_image(Path(path))


class _SampleObject:
    """A sprite with a ping-pong horizontal path and a small vertical wobble inside its band."""

    def __init__(self, index: int, count: int, width: int, height: int, rng: np.random.Generator) -> None:
        band = height / count
        self.size = max(4, min(int(band * 0.6), int(width * 0.22)))
        self.band_top = index * band + (band - self.size) / 2
        self.wobble = max(0.0, min((band - self.size) / 2 - 2, self.size * 0.25))
        self.travel = max(1, width - self.size)
        cross_seconds = float(rng.uniform(1.3, 2.3))
        self.speed = self.travel / cross_seconds
        self.phase = float(rng.uniform(0, 2 * self.travel))
        self.wobble_period = float(rng.uniform(1.5, 3.0))
        self.wobble_phase = float(rng.uniform(0, 2 * math.pi))
        colour = np.array(_COLOURS[index % len(_COLOURS)], np.uint8)
        self.mask = _shape_mask(_SHAPES[index % len(_SHAPES)], self.size)
        edge = self.mask & ~_erode(self.mask)
        sprite = np.empty((self.size, self.size, 3), np.uint8)
        sprite[:] = colour
        sprite[edge] = colour // 2  # a darker rim reads as a solid object
        self.sprite = sprite

    def draw(self, frame: np.ndarray, t: float) -> None:
        pos = (self.phase + self.speed * t) % (2 * self.travel)
        x = round(pos if pos < self.travel else 2 * self.travel - pos)
        wobble = self.wobble * math.sin(2 * math.pi * t / self.wobble_period + self.wobble_phase)
        y = round(self.band_top + wobble)
        region = frame[y : y + self.size, x : x + self.size]
        rows, cols = region.shape[:2]
        np.copyto(region, self.sprite[:rows, :cols], where=self.mask[:rows, :cols, None])


def _background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(1, width - 1), y / max(1, height - 1)
    tint = rng.uniform(-14, 14, 3).astype(np.float32)
    angle = float(rng.uniform(0, math.pi))
    period = float(rng.uniform(18, 30))
    stripes = np.sin((x * math.cos(angle) + y * math.sin(angle)) * 2 * math.pi / period)
    checker = ((x // 16 + y // 16) % 2) * 2 - 1
    # Muted (low saturation, mid grey) so the saturated shapes differ from it clearly.
    base = 95 + 55 * u + 30 * v + 8 * stripes + 6 * checker
    image = np.stack([base + tint[c] + 10 * (v - u) * (c - 1) for c in range(3)], axis=-1)
    return np.asarray(np.clip(image, 0, 255), np.uint8)


def _shape_mask(shape: str, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2
    r = size / 2
    dx, dy = x - c, y - c
    if shape == "circle":
        return np.asarray(dx**2 + dy**2 <= r**2)
    if shape == "square":
        return np.ones((size, size), bool)
    if shape == "triangle":
        return np.asarray(np.abs(dx) <= (y + 1) / 2)
    if shape == "diamond":
        return np.asarray(np.abs(dx) + np.abs(dy) <= r)
    if shape == "ring":
        d2 = dx**2 + dy**2
        return np.asarray((d2 <= r**2) & (d2 >= (r * 0.45) ** 2))
    third = size / 3
    return np.asarray((np.abs(dx) <= third / 2 + 0.5) | (np.abs(dy) <= third / 2 + 0.5))


def _erode(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] &= mask[:-1]
    out[:-1] &= mask[1:]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    return out


def _tone(start: int, stop: int, hertz: float) -> AudioFrame | None:
    if stop <= start:
        return None
    t = np.arange(start, stop, dtype=np.float64) / _AUDIO.rate
    # A slow tremolo makes the tone recognisable as "the source audio" when listening to outputs.
    wave = 0.2 * np.sin(2 * math.pi * hertz * t) * (0.75 + 0.25 * np.sin(2 * math.pi * 0.5 * t))
    data = wave.astype(np.float32)[None, :]
    frame = AudioFrame.from_ndarray(data, format="fltp", layout=_AUDIO.layout)
    frame.sample_rate = _AUDIO.rate
    return frame
