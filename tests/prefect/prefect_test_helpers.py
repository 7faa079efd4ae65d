"""Helpers of the Prefect-side tests: the emulator's control plane, and reading a run back from Prefect."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
    TaskRunFilter,
)
from prefect.client.schemas.objects import Artifact, FlowRun, Log, TaskRun
from prefect.client.schemas.sorting import ArtifactSort, TaskRunSort
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventRelatedFilter
from prefect.events.schemas.events import ReceivedEvent

LAYERS = "model_scenario-video-layers-extractor"
ALEPH = "model_runway-aleph-2"
GENERATE_ROUTE = "POST /v1/generate/custom/{modelId}"
FILES_ROUTE = "GET /files/{assetId}"
ASSET_ROUTE = "GET /v1/assets/{assetId}"


async def stats(emulator: Any) -> dict[str, Any]:
    """``GET /_emulator/stats``."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{emulator.root_url}/_emulator/stats")
        response.raise_for_status()
        return dict(response.json())


async def faults(emulator: Any, *rules: dict[str, Any]) -> None:
    """``POST /_emulator/faults``."""
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{emulator.root_url}/_emulator/faults", json=list(rules))
        response.raise_for_status()


async def configure(emulator: Any, **settings: Any) -> None:
    """``POST /_emulator/config``."""
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{emulator.root_url}/_emulator/config", json=settings)
        response.raise_for_status()


async def advance_clock(emulator: Any, seconds: float) -> None:
    """``POST /_emulator/clock``."""
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{emulator.root_url}/_emulator/clock", json={"advance_seconds": seconds}
        )
        response.raise_for_status()


async def flow_run(flow_run_id: UUID | str) -> FlowRun:
    async with get_client() as client:
        return await client.read_flow_run(UUID(str(flow_run_id)))


async def task_runs(flow_run_id: UUID | str) -> list[TaskRun]:
    async with get_client() as client:
        return await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(str(flow_run_id))])),
            task_run_filter=TaskRunFilter(),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            limit=200,
        )


async def flush_logs() -> None:
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()


async def logs(flow_run_id: UUID | str) -> list[Log]:
    await flush_logs()
    async with get_client() as client:
        return await client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(str(flow_run_id))])), limit=200, offset=0
        )


async def artifacts(flow_run_id: UUID | str) -> list[Artifact]:
    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(str(flow_run_id))])
            ),
            sort=ArtifactSort.CREATED_DESC,
            limit=100,
            offset=0,
        )


async def events(
    flow_run_id: UUID | str, *, expect: set[str] | None = None, timeout: float = 30.0
) -> list[ReceivedEvent]:
    """The ``scenario.*`` events related to a flow run, as the Prefect server stored them.

    Waits until every event name in ``expect`` is there (events reach the server asynchronously).
    """
    import inspect

    from prefect.events.worker import EventsWorker

    drained = EventsWorker.drain_all()
    if inspect.isawaitable(drained):
        await drained
    deadline = time.monotonic() + timeout
    wanted = expect or set()
    found: list[ReceivedEvent] = []
    while True:
        async with get_client() as client:
            page = await client.read_events(
                filter=EventFilter(
                    occurred=EventOccurredFilter(since=_since()),
                    event=EventNameFilter(prefix=["scenario."]),
                    related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
                ),
                limit=50,
            )
        found = [event for event in page.events if event.event.startswith("scenario.")]
        if wanted <= {event.event for event in found} or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


def _since() -> Any:
    from datetime import datetime, timedelta, timezone

    return datetime.now(timezone.utc) - timedelta(hours=1)
