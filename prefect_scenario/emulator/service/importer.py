"""Validation of a completed multipart upload, in a worker thread started by the complete action.

Parts are assembled in order, the total checked against the declared ``fileSize``, and the file
probed for real (a video with :func:`video.probe_video`, an image with :func:`video.probe_image`).
The upload then reads ``imported`` with ``entityId`` = the new asset, or ``failed`` with an
``errorMessage``; its ``upload`` job follows (``metadata.output.entityId`` once imported).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from prefect_scenario.emulator.service.ids import new_id
from prefect_scenario.emulator.service.media import FileFacts, describe_image, describe_video
from prefect_scenario.emulator.service.records import AssetRecord, UploadRecord, WorkResult
from prefect_scenario.emulator.service.state import EmulatorState

IMPORTABLE_KINDS = {"video": "uploaded-video", "image": "uploaded"}
FAILED_UPLOAD_HINT = "Upload the file again; videos must be MP4 or WebM that play locally"


class ImportRefusedError(Exception):
    """The uploaded file cannot become an asset; the message is the upload's errorMessage."""


def start_import(state: EmulatorState, upload_id: str) -> None:
    """Validate and import ``upload_id`` on the state's upload pool."""
    state.io_pool().submit(run_import, state, upload_id)


def run_import(state: EmulatorState, upload_id: str) -> None:
    """Assemble, check and probe an upload, then record the asset or the failure."""
    with state.lock:
        upload = state.uploads.get(upload_id)
        if upload is None:
            return
        asset_id = new_id("asset_")
        target = state.directory("assets") / f"{asset_id}{Path(upload.file_name).suffix.lower()}"
    try:
        facts = _import(upload, target)
    except ImportRefusedError as exc:
        target.unlink(missing_ok=True)
        _finish(state, upload, error=str(exc))
        return
    except Exception as exc:  # a broken emulator must still answer the upload, never hang it
        target.unlink(missing_ok=True)
        _finish(state, upload, error=f"The upload could not be validated: {exc}")
        return
    finally:
        shutil.rmtree(upload.directory, ignore_errors=True)
    asset = AssetRecord(
        id=asset_id,
        path=target,
        mime_type=facts.mime_type,
        kind=upload.kind,
        source=IMPORTABLE_KINDS[upload.kind],
        properties=facts.properties,
        created_at=state.clock.now(),
        name=upload.file_name,
    )
    _finish(state, upload, asset=asset)


def _import(upload: UploadRecord, target: Path) -> FileFacts:
    if upload.kind not in IMPORTABLE_KINDS:
        raise ImportRefusedError(f"The emulator only imports videos and images, not kind {upload.kind!r}")
    for number in range(1, upload.parts_count + 1):
        if not upload.part_path(number).is_file():
            raise ImportRefusedError(
                f"Part {number} of {upload.parts_count} was never uploaded: PUT every part before completing"
            )
    with target.open("wb") as out:
        for number in range(1, upload.parts_count + 1):
            with upload.part_path(number).open("rb") as part:
                shutil.copyfileobj(part, out)
    size = target.stat().st_size
    if size != upload.file_size:
        raise ImportRefusedError(
            f"The uploaded parts add up to {size} bytes but fileSize says {upload.file_size} bytes"
        )
    try:
        return describe_video(target) if upload.kind == "video" else describe_image(target)
    except (ValueError, OSError) as exc:
        raise ImportRefusedError(f"{upload.file_name} is not a decodable {upload.kind}: {exc}") from exc


def _finish(
    state: EmulatorState, upload: UploadRecord, *, asset: AssetRecord | None = None, error: str = ""
) -> None:
    with state.lock:
        if state.uploads.get(upload.id) is not upload:
            return  # the emulator was reset meanwhile
        now = state.clock.now()
        upload.updated_at = now
        job = state.jobs.get(upload.job_id)
        if asset is not None:
            state.add_asset(asset)
            upload.status = "imported"
            upload.entity_id = asset.id
            if job is not None:
                job.output = {"entityId": asset.id}
                job.result = WorkResult(asset_ids=[asset.id])
                job.history.append(("success", now))
        else:
            upload.status = "failed"
            upload.error_message = error
            if job is not None:
                job.result = WorkResult(error=error, hint=FAILED_UPLOAD_HINT)
                job.history.append(("failure", now))
