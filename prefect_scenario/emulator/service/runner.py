"""Runs a generation job's fake model on the state's worker pool and files its outputs as assets."""

from __future__ import annotations

import logging
from collections.abc import Callable

from prefect_scenario.emulator.service.fakes import FakeOutput, WorkOrder
from prefect_scenario.emulator.service.ids import new_id
from prefect_scenario.emulator.service.media import describe_video
from prefect_scenario.emulator.service.records import AssetRecord, JobRecord, WorkResult
from prefect_scenario.emulator.service.state import EmulatorState

logger = logging.getLogger(__name__)

MODEL_ERROR_HINT = (
    "The model could not process this input; check that the source video plays, then submit again"
)


def start_work(
    state: EmulatorState, job: JobRecord, order: WorkOrder, model: Callable[[WorkOrder], list[FakeOutput]]
) -> None:
    """Submit the fake model of ``job`` to the worker pool; its result lands on the job when done."""
    job.future = state.work_pool().submit(_run, state, job.id, order, model)


def _run(
    state: EmulatorState, job_id: str, order: WorkOrder, model: Callable[[WorkOrder], list[FakeOutput]]
) -> None:
    try:
        outputs = model(order)
        assets = [_asset_for(state, job_id, order.model_id, output) for output in outputs]
    except Exception as exc:  # any failure of the fake is the job's failure, never the server's
        logger.info("fake model %s failed for %s: %s", order.model_id, job_id, exc)
        state.finish_work(job_id, WorkResult(error=f"Generation failed: {exc}", hint=MODEL_ERROR_HINT))
        return
    with state.lock:
        if state.finish_work(job_id, WorkResult(asset_ids=[asset.id for asset in assets])):
            for asset in assets:
                state.add_asset(asset)


def _asset_for(state: EmulatorState, job_id: str, model_id: str, output: FakeOutput) -> AssetRecord:
    facts = describe_video(output.path)
    return AssetRecord(
        id=new_id("asset_"),
        path=output.path,
        mime_type=output.mime_type,
        kind="video",
        source="video2video",
        properties=facts.properties,
        created_at=state.clock.now(),
        name=output.path.name,
        output_index=output.output_index,
        parent_job_id=job_id,
        model_id=model_id,
    )
