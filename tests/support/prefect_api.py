"""A flow run read back from a Prefect API: its state, task runs, logs, artifacts and events.

Two ways in. The async readers ask the session's Prefect test server (whatever ``PREFECT_API_URL``
says now) through Prefect's own client. :class:`PrefectAPI` is the REST API as the UI uses it: plain
HTTP on a server's ``/api``, no Prefect client, so a test talking to a ``prefect server start`` of
its own through it depends on no Prefect setting (the rest of the session may run a test harness
with settings of its own).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import httpx

T = TypeVar("T")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RETRIED = {429, 502, 503}

# The state the UI's "Run" dialog sends with a custom run (Prefect UI v2,
# QuickRunParametersDialog): Scheduled, to start now.
UI_RUN_STATE = {
    "type": "SCHEDULED",
    "message": "Run from the Prefect UI",
    "state_details": {"deferred": False, "untrackable_result": False, "pause_reschedule": False},
}


def _an_hour_ago() -> datetime:
    """Where the event queries start: no test session runs for an hour."""
    return datetime.now(UTC) - timedelta(hours=1)


# ---------------------------------------------------------------------------------------------
# The session's Prefect test server, through Prefect's client
# ---------------------------------------------------------------------------------------------


async def flow_run(flow_run_id: UUID | str) -> Any:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_flow_run(UUID(str(flow_run_id)))


async def _filter(collection: str, where: dict[str, Any], sort: str) -> list[dict[str, Any]]:
    """POST ``/{collection}/filter`` with ``where``, ``sort`` and a page of 200, as raw JSON.

    The ``read_*`` methods of Prefect 3.8's client send nulls (limit, sort, offset) that its own
    server refuses with 422, so the tests spell every query out.
    """
    from prefect.client.orchestration import get_client

    body = {**where, "sort": sort, "limit": 200, "offset": 0}
    async with get_client() as client:
        response = await client._client.post(f"/{collection}/filter", json=body)
        response.raise_for_status()
        return list(response.json())


async def task_runs(flow_run_id: UUID | str) -> list[Any]:
    from prefect.client.schemas.objects import TaskRun

    where = {"flow_runs": {"id": {"any_": [str(flow_run_id)]}}}
    return [
        TaskRun.model_validate(item) for item in await _filter("task_runs", where, "EXPECTED_START_TIME_ASC")
    ]


async def flush_logs() -> None:
    """Send the log lines Prefect still holds in this process to the server."""
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()


async def logs(flow_run_id: UUID | str) -> list[Any]:
    from prefect.client.schemas.objects import Log

    await flush_logs()
    where = {"logs": {"flow_run_id": {"any_": [str(flow_run_id)]}}}
    return [Log.model_validate(item) for item in await _filter("logs", where, "TIMESTAMP_ASC")]


async def artifacts(flow_run_id: UUID | str) -> list[Any]:
    """The artifacts of a flow run, its tasks' included (empty run filters would drop the flow's own)."""
    from prefect.client.schemas.objects import Artifact

    where = {"artifacts": {"flow_run_id": {"any_": [str(flow_run_id)]}}}
    return [Artifact.model_validate(item) for item in await _filter("artifacts", where, "CREATED_DESC")]


async def drain_services() -> None:
    """Stop Prefect's process-wide services (events worker, API log worker, ...) once their queues
    are sent. Each is bound to the API URL of the moment it started; the next use starts a new one
    on the settings of then."""
    from prefect.events.worker import EventsWorker

    drained = EventsWorker.drain_all()
    if inspect.isawaitable(drained):
        await drained


async def events(
    flow_run_id: UUID | str, *, expect: set[str], prefix: str | None = None, timeout: float = 30.0
) -> list[Any]:
    """The events related to a flow run (named ``prefix...`` only, if given), once every name in
    ``expect`` arrived: events reach the server asynchronously."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventRelatedFilter

    await drain_services()
    deadline = time.monotonic() + timeout
    while True:
        async with get_client() as client:
            page = await client.read_events(
                filter=EventFilter(
                    occurred=EventOccurredFilter(since=_an_hour_ago()),
                    event=EventNameFilter(prefix=[prefix]) if prefix else None,
                    related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
                ),
                limit=50,
            )
        found = [event for event in page.events if event.event.startswith(prefix or "")]
        if expect <= {event.event for event in found} or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


# ---------------------------------------------------------------------------------------------
# Any Prefect server, over plain REST
# ---------------------------------------------------------------------------------------------


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    """Call ``probe`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class PrefectAPI:
    """A few REST endpoints of a Prefect server, typed loosely (JSON in, JSON out)."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.http = httpx.Client(base_url=self.api_url, timeout=30)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """One request, retried on 429/502/503 as Prefect's own client does (a SQLite server under
        load answers 503 "database is locked"; the transaction was rolled back, nothing was made)."""
        for attempt in range(6):
            response = self.http.request(method, path, json=body)
            if response.status_code not in RETRIED or attempt == 5:
                return response
            time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def get(self, path: str) -> Any:
        response = self.request("GET", path)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any) -> Any:
        response = self.request("POST", path, body)
        if response.status_code >= 400:
            raise AssertionError(f"POST {path} -> {response.status_code}: {response.text}")
        return response.json() if response.content else None

    def deployment(self, flow_name: str, deployment_name: str) -> dict[str, Any]:
        return dict(self.get(f"/deployments/name/{flow_name}/{deployment_name}"))

    def run_like_the_ui(self, deployment: dict[str, Any], **parameters: Any) -> dict[str, Any]:
        """What the UI's Run button does: the form starts from the deployment's parameters, the
        user edits some, and the UI posts them to ``/deployments/{id}/create_flow_run``."""
        body = {
            "parameters": {**deployment["parameters"], **parameters},
            "enforce_parameter_schema": deployment.get("enforce_parameter_schema", True),
            "state": UI_RUN_STATE,
        }
        return dict(self.post(f"/deployments/{deployment['id']}/create_flow_run", body))

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/flow_runs/{flow_run_id}"))

    def wait_until_final(self, flow_run_id: str, timeout: float = 180) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            run = self.flow_run(flow_run_id)
            return run if run["state_type"] in TERMINAL else None

        return wait_for(f"flow run {flow_run_id} to end", final, timeout)

    def flow_runs_of(self, deployment_id: str) -> list[dict[str, Any]]:
        body = {"deployments": {"id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC"}
        return list(self.post("/flow_runs/filter", body))

    def task_runs(self, flow_run_id: str) -> list[dict[str, Any]]:
        return list(self.post("/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}}))

    def artifacts(self, flow_run_id: str) -> list[dict[str, Any]]:
        return list(self.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}))

    def logs_of(self, flow_run_id: str) -> list[dict[str, Any]]:
        """The flow run's logs (its tasks' included), oldest first, every page of them.

        All pages (the server's is 200 lines): a test counting a long run's lines, the last
        attempt's above all, must see every one.
        """
        logs: list[dict[str, Any]] = []
        while True:
            body = {
                "logs": {"flow_run_id": {"any_": [flow_run_id]}},
                "sort": "TIMESTAMP_ASC",
                "limit": 200,
                "offset": len(logs),
            }
            page = list(self.post("/logs/filter", body))
            logs += page
            if len(page) < 200:
                return logs

    def events(self, flow_run_id: str) -> list[dict[str, Any]]:
        since = _an_hour_ago().isoformat()
        body = {
            "filter": {
                "occurred": {"since": since},
                # The run's own state events have it as their resource, Scenario's as a related one.
                "any_resource": {"id": [f"prefect.flow-run.{flow_run_id}"]},
            },
            "limit": 50,
        }
        return list(self.post("/events/filter", body)["events"])

    def wait_for_events(self, flow_run_id: str, names: set[str], timeout: float = 60) -> list[dict[str, Any]]:
        """The flow run's events once every name in ``names`` arrived (events are asynchronous)."""

        def arrived() -> list[dict[str, Any]] | None:
            found = self.events(flow_run_id)
            return found if names <= {event["event"] for event in found} else None

        try:
            return wait_for(f"events {sorted(names)} of flow run {flow_run_id}", arrived, timeout)
        except AssertionError as exc:
            seen = sorted({event["event"] for event in self.events(flow_run_id)})
            raise AssertionError(f"{exc}; seen: {seen}") from None

    def automations(self) -> list[dict[str, Any]]:
        return list(self.post("/automations/filter", {}))

    def global_concurrency_limit(self, name: str) -> dict[str, Any] | None:
        response = self.request("GET", f"/v2/concurrency_limits/{name}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return dict(response.json())
