"""``/v1/jobs``: one job, the cursor-paginated list, and the cancel action."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from prefect_scenario.emulator.api import paging
from prefect_scenario.emulator.api.auth import require_auth
from prefect_scenario.emulator.api.deps import get_state
from prefect_scenario.emulator.api.errors import bad_request, record_or_404
from prefect_scenario.emulator.api.wire import job_model
from prefect_scenario.emulator.service.clock import parse_iso
from prefect_scenario.emulator.service.records import JobRecord
from prefect_scenario.emulator.service.state import EmulatorState
from prefect_scenario.models import JobEnvelope, JobPage, JobStatus

router = APIRouter(dependencies=[Depends(require_auth)])

STATUS_VALUES = [status.value for status in JobStatus]


def _job_or_404(state: EmulatorState, job_id: str) -> JobRecord:
    job = record_or_404(state.jobs, job_id, "Job")
    return job


def _envelope(state: EmulatorState, job: JobRecord) -> JSONResponse:
    state.refresh(job)
    now = state.clock.now()
    return JSONResponse(JobEnvelope(job=job_model(job, now, state.config)).to_wire())


@router.get("/jobs/{jobId}")
async def get_job(request: Request, job_id: Annotated[str, Path(alias="jobId")]) -> JSONResponse:
    """A job, brought up to the emulator clock."""
    state = get_state(request)
    with state.lock:
        return _envelope(state, _job_or_404(state, job_id))


@router.post("/jobs/{jobId}/action")
async def job_action(request: Request, job_id: Annotated[str, Path(alias="jobId")]) -> JSONResponse:
    """Cancel a job: refused for custom jobs ("Cannot cancel this type of job") unless allowed."""
    state = get_state(request)
    try:
        body: Any = await request.json() if (await request.body()).strip() else {}
    except ValueError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}") from exc
    action = body.get("action", "cancel") if isinstance(body, dict) else None
    if action != "cancel":
        raise bad_request('Invalid action: the only action is "cancel"', field="action")
    with state.lock:
        job = state.refresh(_job_or_404(state, job_id))
        if job.job_type != "custom" or not state.config.allow_cancel:
            raise bad_request("Cannot cancel this type of job", field="action")
        if job.is_terminal:
            raise bad_request(f"Cannot cancel job {job_id}: it is already {job.status}", field="action")
        job.history.append(("canceled", state.clock.now()))
        if job.future is not None:
            job.future.cancel()
        return _envelope(state, job)


@router.get("/jobs")
async def list_jobs(
    request: Request,
    page_size: Annotated[str | None, Query(alias="pageSize")] = None,
    pagination_token: Annotated[str | None, Query(alias="paginationToken")] = None,
    status: str | None = None,
    type: str | None = None,
    types: str | None = None,
    workflow_id: Annotated[str | None, Query(alias="workflowId")] = None,
    author_id: Annotated[str | None, Query(alias="authorId")] = None,
    created_after: Annotated[str | None, Query(alias="createdAfter")] = None,
    updated_after: Annotated[str | None, Query(alias="updatedAfter")] = None,
) -> JSONResponse:
    """Jobs, newest first (by creation, or by update when filtered), in cursor pages."""
    state = get_state(request)
    size = paging.parse_page_size(page_size)
    if status is not None and status not in STATUS_VALUES:
        raise bad_request(
            f'Invalid status "{status}": expected one of {", ".join(STATUS_VALUES)}', field="status"
        )
    wanted_types = [item for item in (types or "").split(",") if item] or ([type] if type else [])
    filtered = status is not None or bool(wanted_types) or workflow_id is not None
    if created_after is not None and filtered:
        raise bad_request(
            "createdAfter cannot be combined with status, type, types or workflowId: use updatedAfter",
            field="createdAfter",
        )
    if updated_after is not None and not filtered:
        raise bad_request(
            "updatedAfter is only allowed with status, type, types or workflowId: use createdAfter",
            field="updatedAfter",
        )
    created_floor = _timestamp("createdAfter", created_after)
    updated_floor = _timestamp("updatedAfter", updated_after)
    with state.lock:
        now = state.refresh_all()
        jobs = [
            job
            for job in state.jobs.values()
            if (status is None or job.status == status)
            and (not wanted_types or job.job_type in wanted_types)
            and workflow_id is None  # the emulator runs no workflows
            and (author_id is None or author_id == state.config.author_id)
            and (created_floor is None or job.created_at > created_floor)
            and (updated_floor is None or job.updated_at > updated_floor)
        ]

        def sort_key(job: JobRecord) -> tuple[float, int]:
            return (job.updated_at if filtered else job.created_at, job.seq)

        page, token = paging.paginate(
            jobs, sort_key, token=pagination_token, page_size=size, short_pages=state.config.short_pages
        )
        result = JobPage(
            jobs=[job_model(job, now, state.config) for job in page], next_pagination_token=token
        )
        return JSONResponse(result.to_wire())


def _timestamp(name: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_iso(text)
    except ValueError as exc:
        raise bad_request(f"Invalid {name}: expected an ISO 8601 date, got {text!r}", field=name) from exc
