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
logs a failure here and goes on; so does the batch, per clip.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

from prefect.filesystems import LocalFileSystem, WritableFileSystem
from prefect.logging import get_run_logger

from prefect_scenario import video as media
from prefect_scenario.flows.reporting import (
    COMPOSITE_PSNR_WARNING_DB,
    PREVIEW_MAX_BYTES,
    local_copies,
    psnr_verdict,
)
from prefect_scenario.flows.result import ScenarioRunResult
from prefect_scenario.manifest import StoredOutput
from prefect_scenario.storage import discard, new_temp_dir, sha256_file, store_file

# A preview picture as stored (its location) and its JPEG bytes (empty when too big to embed).
Preview = tuple[str, bytes]

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
    destination: str,
    storage: WritableFileSystem | None,
) -> StoredOutput:
    # Hashed before storing: a local store moves the file into place.
    digest = await asyncio.to_thread(sha256_file, local)
    location = await store_file(local, relative, destination, storage, content_type=mime_type, digest=digest)
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


@dataclass(frozen=True)
class LayersReview:
    """What a look at one job's layers found and stored.

    Attributes:
        previews: the composite preview (MP4) and the contact sheet (JPEG), stored beside the layers.
        psnr_db: how closely the layers add back up to the source (None: no local source to compare).
        note: why there is no PSNR, when there is none.
        preview: the contact sheet as the run's preview picture (location, JPEG bytes or b"" when
            too big to embed).
    """

    previews: list[StoredOutput]
    psnr_db: float | None
    note: str | None
    preview: Preview


NO_SOURCE_NOTE = (
    "the layers were not compared with the source (no PSNR): the clip was given as a Scenario asset id, "
    "so there is no local copy to compare with"
)


async def review_layer_outputs(
    job_id: str,
    layers_stored: list[StoredOutput],
    *,
    source: Path | None,
    destination: str,
    destination_storage: WritableFileSystem | None,
) -> LayersReview | None:
    """Store the composite preview and the contact sheet beside a job's layers; measure the PSNR.

    Args:
        job_id: the Scenario job (the previews go into its folder).
        layers_stored: the job's stored layers.
        source: the source clip as a local file (None: an asset id, nothing to compare with).
        destination: where the layers were stored.
        destination_storage: the block they were stored in (None: the local disk).

    Returns:
        The review; None when there were no layers to look at.
    """
    logger = get_run_logger()
    layers = await local_copies(layers_stored, destination, destination_storage)
    if not layers:
        return None
    fetched = destination_storage is not None and not isinstance(destination_storage, LocalFileSystem)
    scratch = new_temp_dir()
    try:
        rendered = await asyncio.to_thread(_render, layers, source, scratch)
        jpeg = await asyncio.to_thread(rendered.sheet.read_bytes)
        composite = await _store_preview(
            rendered.composite,
            f"{job_id}/{COMPOSITE_PREVIEW_NAME}",
            "video/mp4",
            0,
            destination,
            destination_storage,
        )
        sheet = await _store_preview(
            rendered.sheet,
            f"{job_id}/{CONTACT_SHEET_NAME}",
            "image/jpeg",
            1,
            destination,
            destination_storage,
        )
    finally:
        if fetched:
            for layer in layers:
                discard(layer)
        shutil.rmtree(scratch, ignore_errors=True)
    if rendered.psnr_db is not None:
        if rendered.psnr_db < COMPOSITE_PSNR_WARNING_DB:
            logger.warning(
                "The %d layers of Scenario job %s reach only %.1f dB PSNR against the source (under "
                "%.0f dB): %s",
                len(layers),
                job_id,
                rendered.psnr_db,
                COMPOSITE_PSNR_WARNING_DB,
                psnr_verdict(rendered.psnr_db),
            )
        else:
            logger.info(
                "The %d layers of Scenario job %s composite back to the source at %.1f dB PSNR",
                len(layers),
                job_id,
                rendered.psnr_db,
            )
    logger.info("Layer previews stored: %s, %s", composite.location, sheet.location)
    return LayersReview(
        previews=[composite, sheet],
        psnr_db=rendered.psnr_db,
        note=NO_SOURCE_NOTE if source is None else None,
        # Too big to embed: the sheet is still stored; the summary just shows no picture.
        preview=(sheet.location, jpeg if len(jpeg) <= PREVIEW_MAX_BYTES else b""),
    )


async def review_layers(
    result: ScenarioRunResult,
    *,
    source: Path | None,
    destination_storage: WritableFileSystem | None,
) -> tuple[ScenarioRunResult, Preview | None]:
    """:func:`review_layer_outputs` for a single run: the result gains previews, PSNR and note.

    Args:
        result: the run's result, its layers stored.
        source: the source clip as a local file (None: an asset id).
        destination_storage: where the layers were stored (None: the local disk).

    Returns:
        The result with ``previews``, ``composite_psnr_db`` and a note when the PSNR was skipped;
        and the contact sheet as the run's preview picture.
    """
    if result.job_id is None:
        return result, None
    review = await review_layer_outputs(
        result.job_id,
        result.outputs,
        source=source,
        destination=result.destination,
        destination_storage=destination_storage,
    )
    if review is None:
        return result, None
    reviewed = result.model_copy(
        update={
            "previews": review.previews,
            "composite_psnr_db": review.psnr_db,
            "notes": [*result.notes, *([review.note] if review.note else [])],
        }
    )
    return reviewed, review.preview
