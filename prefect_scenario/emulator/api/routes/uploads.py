"""``/v1/uploads``: multipart uploads whose presigned part URLs the emulator serves itself."""

from __future__ import annotations

from typing import Annotated, Any, get_args

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from prefect_scenario.emulator.api.auth import require_auth
from prefect_scenario.emulator.api.deps import get_state, json_object, root_url
from prefect_scenario.emulator.api.errors import bad_request, record_or_404
from prefect_scenario.emulator.api.paths import part_path
from prefect_scenario.emulator.api.wire import upload_wire
from prefect_scenario.emulator.service import signing
from prefect_scenario.emulator.service.ids import new_id
from prefect_scenario.emulator.service.importer import start_import
from prefect_scenario.emulator.service.records import JobRecord, UploadRecord
from prefect_scenario.emulator.service.state import EmulatorState
from prefect_scenario.models import UploadKind

router = APIRouter(dependencies=[Depends(require_auth)])

UPLOAD_KINDS: tuple[str, ...] = get_args(UploadKind)
MAX_PARTS = 10_000


def _envelope(state: EmulatorState, upload: UploadRecord, request: Request) -> JSONResponse:
    urls: list[str] = []
    if upload.status == "pending":
        expires = int(upload.parts_expire_at)
        root = root_url(request)
        urls = [
            signing.sign_url(state.signing_key, "PUT", root, part_path(upload.id, number), expires)
            for number in range(1, upload.parts_count + 1)
        ]
    return JSONResponse({"upload": upload_wire(upload, urls, state.config)})


def _upload_or_404(state: EmulatorState, upload_id: str) -> UploadRecord:
    upload = record_or_404(state.uploads, upload_id, "Upload")
    return upload


def _require(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if value is None:
        raise bad_request(f'"{name}" is required for a multipart upload', field=name)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
            raise bad_request(f'"{name}" must be an integer', field=name)
        return int(value)
    if not isinstance(value, str) or not value.strip():
        raise bad_request(f'"{name}" must be a non-empty string', field=name)
    return value


@router.post("/uploads")
async def create_upload(request: Request) -> JSONResponse:
    """Start a multipart upload: presigned part URLs, a ``pending`` upload and its ``upload`` job."""
    state = get_state(request)
    body = await json_object(request)
    if body.get("url") is not None:
        raise bad_request(
            "URL imports are not supported by the emulator: upload the file in parts", field="url"
        )
    file_name = _require(body, "fileName", str)
    content_type = _require(body, "contentType", str)
    file_size = _require(body, "fileSize", int)
    kind = _require(body, "kind", str)
    parts = _require(body, "parts", int)
    if kind not in UPLOAD_KINDS:
        raise bad_request(f'Invalid kind "{kind}": expected one of {", ".join(UPLOAD_KINDS)}', field="kind")
    if file_size < 1:
        raise bad_request('"fileSize" must be at least 1 byte', field="fileSize")
    if not 1 <= parts <= MAX_PARTS:
        raise bad_request(f'"parts" must be from 1 to {MAX_PARTS}', field="parts")
    with state.lock:
        now = state.clock.now()
        upload_id = new_id("upload_")
        job = JobRecord(id=new_id("job_"), job_type="upload", created_at=now, history=[("pending", now)])
        upload = UploadRecord(
            id=upload_id,
            file_name=file_name,
            content_type=content_type,
            file_size=file_size,
            kind=kind,
            parts_count=parts,
            directory=state.directory("uploads") / upload_id,
            created_at=now,
            updated_at=now,
            parts_expire_at=now + state.config.part_url_ttl_seconds,
            job_id=job.id,
        )
        upload.directory.mkdir(parents=True, exist_ok=True)
        state.add_job(job)
        state.uploads[upload_id] = upload
        state.count("uploads_created")
        return _envelope(state, upload, request)


@router.get("/uploads/{uploadId}")
async def get_upload(request: Request, upload_id: Annotated[str, Path(alias="uploadId")]) -> JSONResponse:
    """An upload as its validation thread left it."""
    state = get_state(request)
    with state.lock:
        return _envelope(state, _upload_or_404(state, upload_id), request)


@router.post("/uploads/{uploadId}/action")
async def upload_action(request: Request, upload_id: Annotated[str, Path(alias="uploadId")]) -> JSONResponse:
    """``{"action": "complete"}``: the upload turns ``validating`` and its parts are checked."""
    state = get_state(request)
    body = await json_object(request)
    if body.get("action") != "complete":
        raise bad_request('Invalid action: the only action is "complete"', field="action")
    with state.lock:
        upload = _upload_or_404(state, upload_id)
        if upload.status != "pending":
            raise bad_request(f"Upload {upload_id} is already {upload.status}", field="action")
        now = state.clock.now()
        upload.status = "validating"
        upload.updated_at = now
        job = state.jobs.get(upload.job_id)
        if job is not None:
            job.history += [("queued", now), ("in-progress", now)]
        response = _envelope(state, upload, request)
    start_import(state, upload_id)
    return response
