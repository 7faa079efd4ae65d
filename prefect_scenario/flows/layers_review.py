"""A look at the layers of a Video to Layers run: what was separated, and whether it adds back up.

Beside the layers, two previews are stored (``kind`` ``preview`` in the result, never mixed with the
job's own outputs):

* ``composite-preview.mp4``: every layer composited over a grey checkerboard, as a video, so a
  person sees the separation move (transparency shows as the checkerboard);
* ``contact-sheet.jpg``: one row per layer, a few frames each, small enough to embed in the run's
  summary artifact (it is the run's preview picture).

When the source clip is at hand (a local path, or a file in a storage block), the layers are
composited back over black and compared with it: the PSNR figure (dB) goes into the result
(``composite_psnr_db``) and the summary. A good separation loses almost nothing (well over 30 dB);
under 30 dB, pixels went missing or were duplicated across layers, and the run log says so.

Everything here reports on outputs that are already stored and paid for: the caller (``run_generation``)
logs a failure here and goes on.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

from prefect.filesystems import LocalFileSystem, WritableFileSystem
from prefect.logging import get_run_logger

from prefect_scenario import video as media
from prefect_scenario.flows._common import Preview, SourceStorage, local_clip, readable
from prefect_scenario.flows.reporting import (
    COMPOSITE_PSNR_WARNING_DB,
    PREVIEW_MAX_BYTES,
    local_copies,
    psnr_verdict,
)
from prefect_scenario.flows.result import ScenarioRunResult
from prefect_scenario.manifest import StoredOutput
from prefect_scenario.storage import discard, materialize, new_temp_dir, sha256_file, store_file
from prefect_scenario.validation import is_asset_id

COMPOSITE_PREVIEW_NAME = "composite-preview.mp4"
CONTACT_SHEET_NAME = "contact-sheet.jpg"


@dataclass(frozen=True)
class _Rendered:
    composite: Path
    sheet: Path
    psnr_db: float | None


def _render(layers: list[Path], source: Path | None, scratch: Path) -> _Rendered:
    """The media work, in one worker thread: two previews and the PSNR against the source."""
    composite = media.composite_preview(layers, scratch / COMPOSITE_PREVIEW_NAME)
    sheet = media.contact_sheet(layers, scratch / CONTACT_SHEET_NAME, max_bytes=PREVIEW_MAX_BYTES)
    psnr = round(media.layers_psnr(source, layers), 2) if source is not None else None
    return _Rendered(composite=composite, sheet=sheet, psnr_db=psnr)


async def _store_preview(
    local: Path,
    relative: str,
    mime_type: str,
    index: int,
    result: ScenarioRunResult,
    storage: WritableFileSystem | None,
) -> StoredOutput:
    # Hashed before storing: a local store moves the file into place.
    digest = await asyncio.to_thread(sha256_file, local)
    location = await store_file(
        local, relative, result.destination, storage, content_type=mime_type, digest=digest
    )
    return StoredOutput(
        asset_id="",
        path=relative,
        location=location,
        mime_type=mime_type,
        size=digest.size,
        sha256=digest.sha256,
        output_index=index,
        kind="preview",
    )


async def _source_copy(video: str, storage: SourceStorage | None) -> Path | None:
    """The source clip as a local file, or None when it is an asset id (nothing local to compare)."""
    if is_asset_id(video):
        return None
    if storage is None:
        return local_clip(video, None)
    return await materialize(video, readable(storage))


async def review_layers(
    result: ScenarioRunResult,
    *,
    video: str,
    video_storage: SourceStorage | None,
    destination_storage: WritableFileSystem | None,
) -> tuple[ScenarioRunResult, Preview | None]:
    """Store the composite preview and the contact sheet beside the layers; measure the PSNR.

    Args:
        result: the run's result, its layers stored.
        video: the source clip as the flow was given it (a path, a path in ``video_storage``, or an
            asset id).
        video_storage: the block holding the clip, if any.
        destination_storage: where the layers were stored (None: the local disk).

    Returns:
        The result with ``previews``, ``composite_psnr_db`` (None when the clip was an asset id) and
        a note when the PSNR was skipped; and the contact sheet as the run's preview picture.
    """
    logger = get_run_logger()
    if result.job_id is None:
        return result, None
    layers = await local_copies(result.outputs, result.destination, destination_storage)
    if not layers:
        return result, None
    fetched = destination_storage is not None and not isinstance(destination_storage, LocalFileSystem)
    scratch = new_temp_dir()
    source: Path | None = None
    notes = list(result.notes)
    try:
        source = await _source_copy(video, video_storage)
        if source is None:
            notes.append(
                "the layers were not compared with the source (no PSNR): the clip was given as a Scenario "
                "asset id, so there is no local copy to compare with"
            )
        rendered = await asyncio.to_thread(_render, layers, source, scratch)
        jpeg = await asyncio.to_thread(rendered.sheet.read_bytes)
        composite = await _store_preview(
            rendered.composite,
            f"{result.job_id}/{COMPOSITE_PREVIEW_NAME}",
            "video/mp4",
            0,
            result,
            destination_storage,
        )
        sheet = await _store_preview(
            rendered.sheet,
            f"{result.job_id}/{CONTACT_SHEET_NAME}",
            "image/jpeg",
            1,
            result,
            destination_storage,
        )
    finally:
        if fetched:
            for layer in layers:
                discard(layer)
        if source is not None and video_storage is not None:
            discard(source)
        shutil.rmtree(scratch, ignore_errors=True)
    if rendered.psnr_db is not None:
        if rendered.psnr_db < COMPOSITE_PSNR_WARNING_DB:
            logger.warning(
                "The %d layers of Scenario job %s reach only %.1f dB PSNR against the source (under "
                "%.0f dB): %s",
                len(layers),
                result.job_id,
                rendered.psnr_db,
                COMPOSITE_PSNR_WARNING_DB,
                psnr_verdict(rendered.psnr_db),
            )
        else:
            logger.info(
                "The %d layers of Scenario job %s composite back to the source at %.1f dB PSNR",
                len(layers),
                result.job_id,
                rendered.psnr_db,
            )
    logger.info("Layer previews stored: %s, %s", composite.location, sheet.location)
    reviewed = result.model_copy(
        update={
            "previews": [composite, sheet],
            "composite_psnr_db": rendered.psnr_db,
            "notes": notes,
        }
    )
    # Too big to embed: the sheet is still stored; the summary just shows no picture.
    return reviewed, (sheet.location, jpeg if len(jpeg) <= PREVIEW_MAX_BYTES else b"")
