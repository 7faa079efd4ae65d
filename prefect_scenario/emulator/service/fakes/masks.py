"""Binary-mask tools in plain numpy: morphology, run-length labelling, and object tracking.

Masks are stored as runs (row, start, stop) rather than images: a frame's objects then cost a few
hundred integers, so a whole clip's segmentation fits in memory between the analysis pass and the
encoding pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow a boolean mask by `radius` pixels (square structuring element)."""
    out = mask
    for _ in range(radius):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        wide = grown.copy()
        wide[:, 1:] |= grown[:, :-1]
        wide[:, :-1] |= grown[:, 1:]
        out = wide
    return out


def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Shrink a boolean mask by `radius` pixels; the frame border does not eat into objects."""
    return ~dilate(~mask, radius)


def clean(mask: np.ndarray, *, speckle: int, fill: int) -> np.ndarray:
    """Opening (drops specks up to `speckle` px) then closing (fills gaps up to `fill` px)."""
    opened = dilate(erode(mask, speckle), speckle) if speckle else mask
    closed = erode(dilate(opened, fill), fill) if fill else opened
    return np.asarray(closed, bool)


@dataclass
class Runs:
    """Horizontal runs of set pixels: row, start column, stop column (exclusive), and a label."""

    rows: np.ndarray
    starts: np.ndarray
    stops: np.ndarray
    labels: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        """Pixels in each run."""
        return np.asarray(self.stops - self.starts)

    def with_labels(self, labels: np.ndarray) -> Runs:
        """Same runs, other labels."""
        return Runs(self.rows, self.starts, self.stops, labels.astype(np.int32))

    def select(self, keep: np.ndarray) -> Runs:
        """Only the runs where `keep` is True."""
        return Runs(self.rows[keep], self.starts[keep], self.stops[keep], self.labels[keep])

    def paint(self, shape: tuple[int, int], values: np.ndarray | None = None) -> np.ndarray:
        """Render runs into an int32 image, each run filled with its label (or `values`)."""
        height, width = shape
        image = np.zeros(height * width, np.int32)
        fill = self.labels if values is None else values
        index = self.pixel_index(width)
        image[index] = np.repeat(fill, self.lengths)
        return image.reshape(height, width)

    def pixel_index(self, width: int) -> np.ndarray:
        """Flat indices of every pixel covered by the runs, run after run."""
        lengths = self.lengths
        if lengths.size == 0:
            return np.zeros(0, np.int64)
        firsts = self.rows.astype(np.int64) * width + self.starts
        offsets = np.cumsum(lengths) - lengths
        return np.repeat(firsts - offsets, lengths) + np.arange(int(lengths.sum()))


def find_runs(mask: np.ndarray) -> Runs:
    """Runs of a boolean mask, in row-major order, all labelled 0."""
    height, width = mask.shape
    padded = np.zeros((height, width + 2), np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, stops = np.nonzero(edges == -1)
    zeros = np.zeros(rows.size, np.int32)
    return Runs(rows.astype(np.int32), starts.astype(np.int32), stops.astype(np.int32), zeros)


def label_runs(runs: Runs) -> tuple[Runs, int]:
    """Label 8-connected components; labels are 0..n-1 in order of first appearance."""
    count = runs.rows.size
    if count == 0:
        return runs, 0
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rows = runs.rows.tolist()
    starts = runs.starts.tolist()
    stops = runs.stops.tolist()
    # Boundaries of each row's runs in the sorted run list.
    row_begin: dict[int, int] = {}
    row_end: dict[int, int] = {}
    for i, row in enumerate(rows):
        row_begin.setdefault(row, i)
        row_end[row] = i + 1
    for row, begin in row_begin.items():
        if row - 1 not in row_begin:
            continue
        i, i_end = row_begin[row - 1], row_end[row - 1]
        j, j_end = begin, row_end[row]
        while i < i_end and j < j_end:
            # 8-connectivity: runs touch if their column ranges overlap or meet diagonally.
            if starts[i] <= stops[j] and starts[j] <= stops[i]:
                a, b = root(i), root(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            if stops[i] < stops[j]:
                i += 1
            else:
                j += 1
    roots = np.array([root(i) for i in range(count)], np.int64)
    _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return runs.with_labels(order[inverse]), int(first.size)


@dataclass
class Component:
    """One connected object in one frame."""

    area: int
    cx: float
    cy: float


def components(runs: Runs, count: int) -> list[Component]:
    """Area and centroid of each label of labelled runs."""
    lengths = runs.lengths.astype(np.float64)
    area = np.bincount(runs.labels, weights=lengths, minlength=count)
    mid_x = (runs.starts + runs.stops - 1) / 2.0
    sum_x = np.bincount(runs.labels, weights=mid_x * lengths, minlength=count)
    sum_y = np.bincount(runs.labels, weights=runs.rows * lengths, minlength=count)
    return [
        Component(int(area[k]), float(sum_x[k] / area[k]), float(sum_y[k] / area[k])) for k in range(count)
    ]


@dataclass
class Track:
    """An object followed across frames."""

    track_id: int
    total_area: int = 0
    frames: int = 0
    last_frame: int = -1
    cx: float = 0.0
    cy: float = 0.0
    vx: float = 0.0
    vy: float = 0.0
    size: float = 0.0

    def predict(self, frame: int) -> tuple[float, float]:
        """Expected centroid at `frame`, assuming constant velocity."""
        gap = frame - self.last_frame
        return self.cx + self.vx * gap, self.cy + self.vy * gap

    def update(self, frame: int, comp: Component) -> None:
        """Fold in this frame's component (several components of one track arrive merged)."""
        if self.frames:
            gap = max(1, frame - self.last_frame)
            self.vx, self.vy = (comp.cx - self.cx) / gap, (comp.cy - self.cy) / gap
        self.cx, self.cy = comp.cx, comp.cy
        self.size = float(np.sqrt(comp.area))
        self.total_area += comp.area
        self.frames += 1
        self.last_frame = frame


@dataclass
class Tracker:
    """Assigns each frame's components to tracks by overlap with the previous frame, then by
    predicted position, so an object keeps one identity (and one layer) through the clip."""

    shape: tuple[int, int]
    max_gap_frames: int
    tracks: list[Track] = field(default_factory=list)
    _previous: np.ndarray | None = None

    def step(self, frame: int, runs: Runs, count: int) -> Runs:
        """Track one frame's labelled runs; returns the runs labelled with track ids."""
        comps = components(runs, count)
        assigned = np.full(count, -1, np.int64)
        width = self.shape[1]
        if self._previous is not None and count:
            index = runs.pixel_index(width)
            before = self._previous.ravel()[index]
            labels = np.repeat(runs.labels, runs.lengths)
            hit = before > 0
            if hit.any():
                keys = labels[hit].astype(np.int64) * (len(self.tracks) + 1) + before[hit]
                pairs, overlaps = np.unique(keys, return_counts=True)
                # Largest overlaps first; a track may take several components (an object that
                # split), but a component joins only one track.
                for key in pairs[np.argsort(-overlaps, kind="stable")]:
                    comp, track_plus_one = divmod(int(key), len(self.tracks) + 1)
                    if assigned[comp] < 0:
                        assigned[comp] = track_plus_one - 1
        taken = set(int(t) for t in assigned if t >= 0)
        for comp_index in np.argsort([-c.area for c in comps], kind="stable"):
            if assigned[comp_index] >= 0:
                continue
            comp = comps[comp_index]
            best, best_distance = -1, float("inf")
            for track in self.tracks:
                gap = frame - track.last_frame
                if track.track_id in taken or gap > self.max_gap_frames or gap <= 0:
                    continue
                px, py = track.predict(frame)
                distance = float(np.hypot(comp.cx - px, comp.cy - py))
                reach = max(8.0, 1.5 * max(track.size, float(np.sqrt(comp.area))))
                if distance <= reach and distance < best_distance:
                    best, best_distance = track.track_id, distance
            if best < 0:
                best = len(self.tracks)
                self.tracks.append(Track(track_id=best))
            assigned[comp_index] = best
            taken.add(best)
        for track_id in sorted(set(int(t) for t in assigned)):
            members = [comps[k] for k in range(count) if assigned[k] == track_id]
            area = sum(m.area for m in members)
            merged = Component(
                area,
                sum(m.cx * m.area for m in members) / area,
                sum(m.cy * m.area for m in members) / area,
            )
            self.tracks[track_id].update(frame, merged)
        tracked = runs.with_labels(assigned[runs.labels] + 1 if count else runs.labels)
        # Track ids are stored +1 so that 0 means background in painted maps.
        self._previous = tracked.paint(self.shape)
        return tracked
