"""``POST /v1/generate/custom/{modelId}``: validate, price, and (unless a dry run) start a job.

The body is validated BEFORE a dry run is priced, so our dry runs reject bad bodies. The real API
is reported to price without validating (an invalid payload can quote fine and fail at run time);
the emulator is deliberately stricter, because a client that relies on a dry run to catch mistakes
is wrong either way, and an emulator that quotes garbage would hide that.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from prefect_scenario.emulator.api.auth import require_auth
from prefect_scenario.emulator.api.deps import get_state
from prefect_scenario.emulator.api.errors import ApiError, bad_request, not_found
from prefect_scenario.emulator.api.paths import GENERATE_ROUTE
from prefect_scenario.emulator.api.validation import AssetFacts, validate_body
from prefect_scenario.emulator.api.wire import job_model
from prefect_scenario.emulator.service import catalog, lifecycle, pricing
from prefect_scenario.emulator.service.fakes import FAKE_MODELS, WorkOrder, referenced_images
from prefect_scenario.emulator.service.ids import new_id
from prefect_scenario.emulator.service.records import CheckedBody, JobRecord, WorkResult
from prefect_scenario.emulator.service.runner import start_work
from prefect_scenario.emulator.service.state import CeilingReachedError, EmulatorState
from prefect_scenario.models import GenerateResponse, model_input_body

router = APIRouter(dependencies=[Depends(require_auth)])

DRY_RUN_STATUS = 269
DEFAULT_FAILURE_ERROR = "Generation failed on the provider side"
DEFAULT_FAILURE_HINT = "This is a transient provider error; submit the job again"


def asset_facts(state: EmulatorState, asset_id: str) -> AssetFacts | None:
    """What validation needs about ``asset_id`` (None when unknown)."""
    with state.lock:
        asset = state.assets.get(asset_id)
        if asset is None:
            return None
        duration = asset.properties.get("duration")
        return AssetFacts(
            kind=asset.kind,
            status=asset.status,
            size=int(asset.properties.get("size", 0)),
            duration=float(duration) if duration is not None else None,
        )


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise bad_request("The request body is empty: send the model's inputs as a JSON object")
    try:
        return await request.json()
    except ValueError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}") from exc


@router.post("/generate/custom/{modelId}")
async def run_model(
    request: Request,
    model_id: Annotated[str, Path(alias="modelId")],
    dry_run: Annotated[str | None, Query(alias="dryRun")] = None,
    project_id: Annotated[str | None, Query(alias="projectId")] = None,
) -> JSONResponse:
    """Generate with a model (or price it, with ``?dryRun=true|api``)."""
    state = get_state(request)
    inputs = catalog.model_inputs(model_id)
    if inputs is None:
        raise not_found(f"Model {model_id} not found")
    if dry_run not in (None, "true", "api", "false"):
        raise bad_request('Invalid dryRun: expected "true" or "api"', field="dryRun")
    body = await _json_body(request)
    checked = validate_body(model_id, body, inputs, lambda asset_id: asset_facts(state, asset_id))
    price = pricing.price(checked)
    if dry_run in ("true", "api"):
        state.count("dry_runs")
        return JSONResponse(price.estimate().to_wire(), status_code=DRY_RUN_STATUS)
    job = _create_job(state, checked, price, project_id or None)
    with state.lock:
        wire = job_model(job, state.clock.now(), state.config)
    response = GenerateResponse(
        job=wire,
        creative_units_cost=price.cost,
        creative_units_discount=price.discount,
        cost_details={"custom-generation": price.cost},
    )
    return JSONResponse(response.to_wire())


def _create_job(
    state: EmulatorState, checked: CheckedBody, price: pricing.Price, project_id: str | None
) -> JobRecord:
    with state.lock:
        now = state.clock.now()
        config = state.config
        job = JobRecord(
            id=new_id("job_"),
            job_type="custom",
            created_at=now,
            history=[("pending", now), ("queued", now)],
            input=model_input_body(checked.model_id, checked.body),
            cu_cost=price.cost,
            cu_discount=price.discount,
            job_seconds=config.job_seconds,
            queue_seconds=lifecycle.queue_seconds_for(config.job_seconds, config.queue_seconds),
            route=GENERATE_ROUTE,
            # Whose webhook endpoints hear of the job (the emulator keeps no other per-project state).
            project_id=project_id,
        )
        try:
            state.admit_custom_job(job)
        except CeilingReachedError as exc:
            raise ApiError(
                429,
                f"Too many custom jobs in progress: your team may run {exc.limit} at a time. "
                "Submit more as jobs finish",
                details={"actionName": "parallel-custom-jobs", "actionLimit": exc.limit},
            ) from exc
        planned = _planned_failure(state)
        if planned is not None:
            # No model runs: the job fails when its time is up, as a provider failure would.
            job.work_done_at = now
            job.result = planned
            return job
        order = WorkOrder(
            request=checked,
            video_path=state.assets[checked.video_asset_id].path,
            out_dir=state.directory("work") / job.id,
            image_paths={
                asset_id: state.assets[asset_id].path for asset_id in referenced_images(checked.body)
            },
        )
        start_work(state, job, order, FAKE_MODELS[checked.model_id])
        return job


def _planned_failure(state: EmulatorState) -> WorkResult | None:
    rule = state.take_fault(GENERATE_ROUTE, {"fail_job"})
    if rule is not None:
        state.count("jobs_failed_by_faults")
        return WorkResult(error=rule.error or DEFAULT_FAILURE_ERROR, hint=rule.hint or DEFAULT_FAILURE_HINT)
    if state.config.failure_rate > 0 and state.rng.random() < state.config.failure_rate:
        state.count("jobs_failed_by_faults")
        return WorkResult(error=DEFAULT_FAILURE_ERROR, hint=DEFAULT_FAILURE_HINT)
    return None
