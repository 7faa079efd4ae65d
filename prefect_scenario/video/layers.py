"""Layer files back together: composite them back to front, and measure the result against the source.

What a layer review needs (a composite preview, a PSNR figure) whatever produced the layers: each
layer is a video with alpha (VP9 WebM, yuva420p, or any opaque video), all of one size and length.
Frames stream one at a time, so memory stays flat whatever the length of the clip.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import zip_longest
from pathlib import Path

import numpy as np

from ._errors import MediaError
from .media_io import iter_rgb, iter_rgba

_PSNR_CAP = 100.0


def composite_layers(layers: Sequence[Path]) -> Iterator[np.ndarray]:
    """Composite layers back to front (first = back) over black, frame by frame.

    Yields:
        RGB uint8 frames.

    Raises:
        MediaError: the layers differ in size or frame count.
    """
    yield from _composite(layers, base=None)


def psnr_against_source(source: Path, frames: Iterable[np.ndarray]) -> float:
    """Mean PSNR (dB) of `frames` against the source's frames, each frame capped at 100 dB.

    Raises:
        MediaError: the frame counts or sizes differ, or there are no frames.
    """
    total, count = 0.0, 0
    missing = object()
    for original, candidate in zip_longest(iter_rgb(Path(source)), frames, fillvalue=missing):
        if original is missing or candidate is missing:
            raise MediaError(
                f"{source}: frame counts differ after {count} frames; fix: compare videos of the same length"
            )
        assert isinstance(original, np.ndarray)
        assert isinstance(candidate, np.ndarray)
        if original.shape != candidate.shape:
            raise MediaError(
                f"{source}: frame {count} is {original.shape} but the candidate is "
                f"{candidate.shape}; fix: compare videos of the same size"
            )
        diff = (original.astype(np.int32) - candidate).ravel()
        mse = float(np.dot(diff, diff)) / diff.size
        total += _PSNR_CAP if mse == 0 else min(_PSNR_CAP, 10 * np.log10(255.0**2 / mse))
        count += 1
    if count == 0:
        raise MediaError(f"{source} has no frames to compare; fix: pass a non-empty video")
    return total / count


def layers_psnr(source: Path, layers: Sequence[Path]) -> float:
    """PSNR (dB) of the composited layers against the source."""
    return psnr_against_source(source, composite_layers(layers))


def _composite(layers: Sequence[Path], base: np.ndarray | None) -> Iterator[np.ndarray]:
    if not layers:
        raise ValueError("no layers to composite")
    for number, frames in enumerate(zip_longest(*(iter_rgba(Path(p)) for p in layers))):
        if any(f is None for f in frames):
            raise MediaError(
                f"layers end at different frames (after frame {number}); "
                "fix: pass layers produced from one source"
            )
        first = frames[0]
        assert first is not None
        if any(f is not None and f.shape != first.shape for f in frames):
            raise MediaError("layers differ in size; fix: pass layers produced from one source")
        canvas = np.zeros((*first.shape[:2], 3), np.uint8) if base is None else base
        for rgba in frames:
            assert rgba is not None
            alpha = rgba[..., 3:4]
            if alpha.min() == 255:
                # An opaque layer hides everything behind it; skipping the blend keeps long
                # single-layer comparisons fast.
                canvas = rgba[..., :3]
                continue
            wide = alpha.astype(np.uint16)
            # Integer "over": exact for alpha 0 and 255, and fits uint16 (255*255 + 127 < 2**16).
            blended = (rgba[..., :3] * wide + canvas * (255 - wide) + 127) // 255
            canvas = blended.astype(np.uint8)
        yield np.ascontiguousarray(canvas)
