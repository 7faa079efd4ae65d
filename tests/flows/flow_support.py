"""Helpers of the flow tests: the emulator's control plane, and a flow run read back from Prefect."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

LAYERS = "model_scenario-video-layers-extractor"
ALEPH = "model_runway-aleph-2"
GENERATE_ROUTE = "POST /v1/generate/custom/{modelId}"
FILES_ROUTE = "GET /files/{assetId}"
MANIFEST_KEYS = ["model_id", "job_id", "status", "inputs", "creative_units_cost", "outputs"]
# The API secret of every flow test: it must never appear anywhere Prefect records a run.
CANARY_SECRET = "canary-secret-" + uuid.uuid4().hex
OUTPUT_KEYS = ["asset_id", "path", "mime_type", "size", "sha256", "output_index"]


def control(emulator: Any, method: str, path: str, body: Any = None) -> Any:
    """Call the emulator's control plane (``/_emulator/...``) and return its JSON."""
    response = httpx.request(method, f"{emulator.root_url}/_emulator/{path}", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def stats(emulator: Any) -> dict[str, Any]:
    """``GET /_emulator/stats``."""
    return dict(control(emulator, "GET", "stats"))


def faults(emulator: Any, *rules: dict[str, Any]) -> None:
    """``POST /_emulator/faults``."""
    control(emulator, "POST", "faults", list(rules))


def advance_clock(emulator: Any, seconds: float) -> None:
    """``POST /_emulator/clock``."""
    control(emulator, "POST", "clock", {"advance_seconds": seconds})


def copy_file(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    return target


def size_of(path: str | Path) -> int:
    return Path(path).stat().st_size


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_local_outputs(result: Any, destination: Path) -> None:
    """Every output of a result is a file under ``destination`` whose size and sha256 match."""
    assert result.outputs, "no outputs"
    for output in result.outputs:
        file = destination / output.path
        assert file.is_file(), file
        assert file.stat().st_size == output.size
        assert sha256_of(file) == output.sha256
        assert Path(output.location) == file.resolve()


def check_manifest(manifest: dict[str, Any], result: Any, base: Path) -> None:
    """A manifest has exactly the agreed keys first, and describes files that are really there."""
    assert list(manifest)[: len(MANIFEST_KEYS)] == MANIFEST_KEYS
    assert manifest["job_id"] == result.job_id
    assert manifest["model_id"] == result.model_id
    assert manifest["status"] == "success"
    assert len(manifest["outputs"]) == len(result.outputs) > 0
    for entry in manifest["outputs"]:
        assert list(entry) == OUTPUT_KEYS
        file = base / entry["path"]
        assert not Path(entry["path"]).is_absolute()
        assert file.stat().st_size == entry["size"]
        assert sha256_of(file) == entry["sha256"]


async def flow_run(flow_run_id: UUID) -> Any:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_flow_run(flow_run_id)


async def _filter(path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST a ``/…/filter`` query as raw JSON.

    The ``read_*`` methods of Prefect 3.8's client send nulls (limit, sort, offset) that its own
    server refuses with 422, so the tests spell every query out.
    """
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        response = await client._client.post(path, json=body)
        response.raise_for_status()
        return list(response.json())


async def task_runs(flow_run_id: UUID) -> list[Any]:
    from prefect.client.schemas.objects import TaskRun

    items = await _filter(
        "/task_runs/filter",
        {
            "flow_runs": {"id": {"any_": [str(flow_run_id)]}},
            "sort": "EXPECTED_START_TIME_ASC",
            "limit": 200,
            "offset": 0,
        },
    )
    return [TaskRun.model_validate(item) for item in items]


async def logs(flow_run_id: UUID) -> list[Any]:
    from prefect.client.schemas.objects import Log
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()
    items = await _filter(
        "/logs/filter",
        {
            "logs": {"flow_run_id": {"any_": [str(flow_run_id)]}},
            "sort": "TIMESTAMP_ASC",
            "limit": 200,
            "offset": 0,
        },
    )
    return [Log.model_validate(item) for item in items]


async def artifacts(flow_run_id: UUID) -> list[Any]:
    """The artifacts of a flow run, its tasks' included (empty run filters would drop the flow's own)."""
    from prefect.client.schemas.objects import Artifact

    items = await _filter(
        "/artifacts/filter",
        {
            "artifacts": {"flow_run_id": {"any_": [str(flow_run_id)]}},
            "sort": "CREATED_DESC",
            "limit": 200,
            "offset": 0,
        },
    )
    return [Artifact.model_validate(item) for item in items]


async def events(flow_run_id: UUID, *, expect: set[str], timeout: float = 30.0) -> list[Any]:
    """Every event related to the flow run, once all of ``expect`` arrived (they come asynchronously)."""
    import inspect

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventOccurredFilter, EventRelatedFilter
    from prefect.events.worker import EventsWorker

    drained = EventsWorker.drain_all()
    if inspect.isawaitable(drained):
        await drained
    deadline = time.monotonic() + timeout
    while True:
        async with get_client() as client:
            page = await client.read_events(
                filter=EventFilter(
                    occurred=EventOccurredFilter(since=datetime.now(timezone.utc) - timedelta(hours=1)),
                    related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
                ),
                limit=50,
            )
        found = list(page.events)
        if expect <= {event.event for event in found} or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)
