"""The fake "Video to Layers": background plus moving objects, each a VP9 WebM with alpha.

Three streaming passes (the first stops at its last sample) over the source:

1. sample at most ~61 frames and take their per-pixel median: the static background;
2. threshold each frame against it, clean the mask, label connected objects and track them,
   keeping only run-length masks;
3. rank tracks by total area, give the largest their own layers, and encode every layer.

The background layer is each frame with the objects' pixels replaced by the median background, and
every object layer carries the source pixels under its opaque mask. So compositing the layers back
to front gives back the source wherever the segmentation lands, and anything the masks miss simply
stays in the background layer.

Memory: the median samples (at most ~192 MiB, ~14 MB at 320x240), one run-length mask per frame,
and about 35 MB of libvpx state per layer being written; none of it grows with frame count except
the run lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from prefect_scenario.emulator.service.fakes.masks import Runs, Tracker, clean, dilate, find_runs, label_runs
from prefect_scenario.video import probe_video
from prefect_scenario.video.media_io import (
    VideoWriter,
    VP9Alpha,
    first_video_stream,
    iter_rgb,
    open_input,
    stream_rate,
)

_MAX_SAMPLES = 61  # odd, so the median is an actual pixel value
_SAMPLE_BUDGET_BYTES = 192 * 1024 * 1024
_MIN_THRESHOLD = 25  # max-channel difference that counts as motion in a clean clip
_MARGIN = 2  # pixels of background kept around each object, so edges are never cut
_MINOR_SHARE = 0.01  # tracks under 1% of the largest one's area are noise; left in the background
_LAYER_CODEC = VP9Alpha()


@dataclass(frozen=True)
class LayerFile:
    """One output layer. `index` 0 is the background (back-most); `role` is "background" or "object"."""

    path: Path
    index: int
    role: str


def extract_layers(source: Path, out_dir: Path, *, max_layers: int, instruction: str = "") -> list[LayerFile]:
    """Split a video into a background layer and moving-object layers with alpha.

    Args:
        source: the video to split.
        out_dir: where the layer files go (created if missing).
        max_layers: at most this many layers, background included. Objects beyond the free slots
            are merged into the last object layer; 1 gives the whole clip as one opaque layer.
        instruction: accepted like the real model's separation instruction; the fake splits by
            motion only, whatever it says.

    Returns:
        The layers, back to front, each a VP9 WebM (yuva420p) with the source's size, frame rate
        and frame count.

    Raises:
        MediaError: the source is not a decodable video.
        ValueError: max_layers is below 1.
    """
    del instruction  # part of the model's contract; motion alone drives the fake
    if max_layers < 1:
        raise ValueError(f"max_layers must be at least 1, got {max_layers}")
    source = Path(source)
    out_dir = Path(out_dir)
    probe = probe_video(source)
    rate = _source_rate(source)
    height, width = probe.height, probe.width
    background, threshold = _median_background(source, probe.nb_frames, (height, width))
    per_frame, tracker = _track_objects(source, background, threshold, rate)
    layer_of_track = _assign_layers(tracker, max_layers)
    object_layers = int(layer_of_track.max()) if layer_of_track.size else 0
    out_dir.mkdir(parents=True, exist_ok=True)
    layers = [LayerFile(out_dir / "layer_00_background.webm", 0, "background")]
    layers += [
        LayerFile(out_dir / f"layer_{k:02d}_object.webm", k, "object") for k in range(1, object_layers + 1)
    ]
    plate = np.zeros((height * width, 4), np.uint8)
    plate[:, :3] = background.reshape(-1, 3)
    writers: list[VideoWriter] = []
    try:
        for layer in layers:
            writers.append(VideoWriter(layer.path, width=width, height=height, rate=rate, codec=_LAYER_CODEC))
        for index, frame in enumerate(iter_rgb(source)):
            runs = per_frame[index] if index < len(per_frame) else _empty_runs()
            _write_layers(writers, frame, plate, runs, layer_of_track[runs.labels])
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    for writer in writers:
        writer.close()
    return layers


def _source_rate(source: Path) -> Fraction:
    with open_input(source) as container:
        return stream_rate(first_video_stream(container, source))


def _median_background(source: Path, nb_frames: int, shape: tuple[int, int]) -> tuple[np.ndarray, int]:
    """The per-pixel median of sampled frames, and a motion threshold above the clip's noise."""
    height, width = shape
    scale = 1
    # Hold at most ~192 MiB of samples: fewer samples first, then a coarser grid for huge frames.
    samples = min(_MAX_SAMPLES, nb_frames, max(5, _SAMPLE_BUDGET_BYTES // (height * width * 3)))
    while samples * (height // scale) * (width // scale) * 3 > _SAMPLE_BUDGET_BYTES:
        scale += 1
    if samples % 2 == 0:
        samples -= 1
    samples = max(1, samples)
    picks = np.unique(np.linspace(0, nb_frames - 1, samples).round().astype(int))
    wanted = {int(p): k for k, p in enumerate(picks)}
    small = (height // scale, width // scale)
    stack = np.empty((len(picks), small[0], small[1], 3), np.uint8)
    for index, frame in enumerate(iter_rgb(source)):
        if index in wanted:
            stack[wanted[index]] = frame if scale == 1 else _resize(frame, small)
        if index >= picks[-1]:
            break
    middle = len(picks) // 2
    median = np.empty(stack.shape[1:], np.uint8)
    # Row strips bound the extra copy np.partition makes.
    strip = max(1, 4_000_000 // max(1, len(picks) * small[1] * 3))
    for top in range(0, small[0], strip):
        part = np.partition(stack[:, top : top + strip], middle, axis=0)
        median[top : top + strip] = part[middle]
    # Grainy sources need a higher bar than clean ones: measure how far typical samples sit from
    # the median (most pixels are background, so the median of the difference is the noise).
    levels = [
        float(np.median(np.abs(sample[::2, ::2].astype(np.int16) - median[::2, ::2]).max(axis=2)))
        for sample in stack[:: max(1, len(stack) // 9)]
    ]
    threshold = int(max(_MIN_THRESHOLD, 4 * float(np.median(levels)) + 8))
    return (median if scale == 1 else _resize(median, (height, width))), threshold


def _track_objects(
    source: Path, background: np.ndarray, threshold: int, rate: Fraction
) -> tuple[list[Runs], Tracker]:
    height, width = background.shape[:2]
    min_area = max(12, int(height * width * 0.0005))
    tracker = Tracker(shape=(height, width), max_gap_frames=max(2, round(float(rate) / 2)))
    per_frame: list[Runs] = []
    reference = background.astype(np.int16)
    for index, frame in enumerate(iter_rgb(source)):
        moving = np.abs(frame.astype(np.int16) - reference).max(axis=2) > threshold
        mask = dilate(clean(moving, speckle=1, fill=2), _MARGIN)
        runs, count = label_runs(find_runs(mask))
        if count:
            # Drop specks before tracking so they never claim a track (they stay in the background).
            areas = np.bincount(runs.labels, weights=runs.lengths, minlength=count)
            keep = areas >= min_area
            relabel = np.cumsum(keep) - 1
            runs = runs.select(keep[runs.labels])
            runs = runs.with_labels(relabel[runs.labels])
            count = int(keep.sum())
        tracked = tracker.step(index, runs, count)
        # Compact dtypes: this list lives for the whole clip.
        per_frame.append(
            Runs(
                tracked.rows.astype(np.int32),
                tracked.starts.astype(np.int32),
                tracked.stops.astype(np.int32),
                tracked.labels.astype(np.int32),
            )
        )
    return per_frame, tracker


def _assign_layers(tracker: Tracker, max_layers: int) -> np.ndarray:
    """Map track id + 1 -> layer index (0 = stays in the background)."""
    mapping = np.zeros(len(tracker.tracks) + 1, np.int32)
    slots = max_layers - 1
    if slots <= 0 or not tracker.tracks:
        return mapping
    ranked = sorted(tracker.tracks, key=lambda t: (-t.total_area, t.track_id))
    largest = ranked[0].total_area
    major = [t for t in ranked if t.total_area >= largest * _MINOR_SHARE]
    for position, track in enumerate(major):
        # When objects outnumber slots, the last slot takes every remaining object.
        mapping[track.track_id + 1] = min(position + 1, slots)
    return mapping


def _write_layers(
    writers: list[VideoWriter], frame: np.ndarray, plate: np.ndarray, runs: Runs, layers: np.ndarray
) -> None:
    """Encode one frame of every layer; `plate` is the background as RGBA with alpha 0, flat."""
    pixels = frame.reshape(-1, 3)
    index = runs.pixel_index(frame.shape[1])
    layer_of_pixel = np.repeat(layers, runs.lengths)
    base = np.empty_like(plate)
    base[:, :3] = pixels
    base[:, 3] = 255
    if len(writers) > 1:
        covered = index[layer_of_pixel > 0]
        base[covered, :3] = plate[covered, :3]
    writers[0].add_frame(base.reshape(*frame.shape[:2], 4))
    for layer, writer in enumerate(writers[1:], start=1):
        inside = index[layer_of_pixel == layer]
        # Under transparent pixels lies the clean background, not black: chroma subsampling mixes
        # neighbours, and background-coloured neighbours leave no dark fringe at the edges.
        rgba = plate.copy()
        rgba[inside, :3] = pixels[inside]
        rgba[inside, 3] = 255
        writer.add_frame(rgba.reshape(*frame.shape[:2], 4))


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, np.uint8)


def _empty_runs() -> Runs:
    empty = np.zeros(0, np.int32)
    return Runs(empty, empty, empty, empty)
