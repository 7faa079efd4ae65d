"""Small pictures of videos for Prefect artifacts: JPEG contact sheets and a composited preview."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ._errors import MediaError
from .layers import _composite
from .media_io import H264, VideoWriter, first_video_stream, iter_rgba, open_input, stream_rate
from .probe import probe_video

_CHECKER_CELL = 8
_GUTTER = 2
_LABEL_HEIGHT = 12
_SHEET_BACKGROUND = (32, 32, 32)


def layer_name(index: int) -> str:
    """What a user calls output ``index`` of Video to Layers: the background first, then layer 1, 2, …"""
    return "background" if index == 0 else f"layer {index}"


def contact_sheet(
    layers: Sequence[Path],
    out: Path,
    *,
    tile_width: int = 160,
    frames_per_layer: int = 3,
    max_bytes: int = 60_000,
) -> Path:
    """Draw a JPEG grid: one row per layer, a few frames from across each, alpha over a checkerboard.

    Quality, then size, drop until the file fits `max_bytes` (it is meant for a `data:` URI in a
    markdown artifact).

    Returns:
        `out`.

    Raises:
        ValueError: no layers.
        MediaError: a layer cannot be decoded, or no readable sheet fits `max_bytes`.
    """
    labels = [layer_name(k) for k in range(len(layers))]
    return _sheet(layers, out, labels, tile_width, frames_per_layer, max_bytes, centred=True)


def first_frames_sheet(
    videos: Sequence[Path],
    out: Path,
    *,
    tile_width: int = 200,
    frames: int = 4,
    max_bytes: int = 60_000,
) -> Path:
    """Draw a JPEG grid: one row per video, `frames` frames from its first frame to its last.

    Returns:
        `out`.

    Raises:
        ValueError: no videos.
        MediaError: a video cannot be decoded, or no readable sheet fits `max_bytes`.
    """
    labels = [Path(p).name for p in videos]
    return _sheet(videos, out, labels, tile_width, frames, max_bytes, centred=False)


def composite_preview(layers: Sequence[Path], out: Path) -> Path:
    """Composite all layers over a grey checkerboard into an H.264 MP4 (transparency stays visible).

    Returns:
        `out`.
    """
    if not layers:
        raise ValueError("no layers to preview")
    first = Path(layers[0])
    probe = probe_video(first)
    with open_input(first) as container:
        rate = stream_rate(first_video_stream(container, first))
    board = checkerboard(probe.height, probe.width)
    with VideoWriter.sized_like(probe, Path(out), rate=rate, codec=H264(crf=20)) as writer:
        for frame in _composite(layers, base=board):
            writer.add_frame(frame)
    return Path(out)


def checkerboard(height: int, width: int, cell: int = _CHECKER_CELL) -> np.ndarray:
    """The usual grey checkerboard that shows transparency, as RGB uint8."""
    y, x = np.mgrid[0:height, 0:width]
    light = ((y // cell + x // cell) % 2) == 0
    board = np.where(light, 0x99, 0x66).astype(np.uint8)
    return np.repeat(board[..., None], 3, axis=2)


def _sheet(
    videos: Sequence[Path],
    out: Path,
    labels: list[str],
    tile_width: int,
    per_row: int,
    max_bytes: int,
    *,
    centred: bool,
) -> Path:
    if not videos:
        raise ValueError("no videos for the sheet")
    if per_row < 1 or tile_width < 8:
        raise ValueError("need at least one frame per row and tiles of 8 px or more")
    rows = []
    for path in videos:
        count = probe_video(Path(path)).nb_frames
        rows.append([_over_checker(f) for f in _pick_frames(Path(path), count, per_row, centred)])
    tile_height = max(1, round(tile_width * rows[0][0].shape[0] / rows[0][0].shape[1]))
    sheet = Image.new(
        "RGB",
        (
            _GUTTER + per_row * (tile_width + _GUTTER),
            _GUTTER + len(rows) * (tile_height + _LABEL_HEIGHT + _GUTTER),
        ),
        _SHEET_BACKGROUND,
    )
    draw = ImageDraw.Draw(sheet)
    for r, (tiles, label) in enumerate(zip(rows, labels, strict=True)):
        top = _GUTTER + r * (tile_height + _LABEL_HEIGHT + _GUTTER)
        draw.text((_GUTTER + 2, top), label[:60], fill=(230, 230, 230))
        for c, tile in enumerate(tiles):
            image = Image.fromarray(tile).resize((tile_width, tile_height), Image.Resampling.BILINEAR)
            sheet.paste(image, (_GUTTER + c * (tile_width + _GUTTER), top + _LABEL_HEIGHT))
    Path(out).write_bytes(_jpeg_under(sheet, max_bytes, out))
    return Path(out)


def _pick_frames(path: Path, count: int, wanted: int, centred: bool) -> list[np.ndarray]:
    wanted = min(wanted, count)
    if centred:
        picks = [int((k + 0.5) * count / wanted) for k in range(wanted)]
    else:
        picks = np.linspace(0, count - 1, wanted).round().astype(int).tolist()
    chosen: dict[int, np.ndarray] = {}
    for index, frame in enumerate(iter_rgba(path)):
        if index in picks:
            chosen[index] = frame
        if index >= picks[-1]:
            break
    # Frames past the decodable end (a count that overstates) repeat the last one read.
    last = chosen[max(chosen)] if chosen else None
    if last is None:
        raise MediaError(f"{path} has no decodable frames; fix: pass a valid video")
    return [chosen.get(p, last) for p in picks]


def _over_checker(rgba: np.ndarray) -> np.ndarray:
    board = checkerboard(rgba.shape[0], rgba.shape[1]).astype(np.uint16)
    alpha = rgba[..., 3:4].astype(np.uint16)
    return ((rgba[..., :3] * alpha + board * (255 - alpha) + 127) // 255).astype(np.uint8)


def _jpeg_under(sheet: Image.Image, max_bytes: int, out: Path) -> bytes:
    image = sheet
    while True:
        for quality in (85, 75, 65, 55, 45, 35, 25):
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=quality, optimize=True)
            if buffer.tell() <= max_bytes:
                return buffer.getvalue()
        width, height = image.size
        if width < 64 or height < 32:
            raise MediaError(
                f"{out}: no readable JPEG sheet fits {max_bytes} bytes; fix: raise max_bytes or "
                "show fewer layers or frames"
            )
        # Shrinking beats dropping quality further: blocky thumbnails are unreadable.
        image = image.resize((int(width * 0.8), int(height * 0.8)), Image.Resampling.BILINEAR)
