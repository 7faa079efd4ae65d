"""The watcher's sweep on the live emulator and the session's Prefect server: its Scenario requests
per sweep, and the runs it still wakes without reading jobs one by one.

The waiting runs are made the way a ``wait="suspend"`` run makes itself: a flow run of a deployment
is started (Running, so Prefect gives it a ``start_time``), its job is submitted on the API, then
the run is labelled with :func:`prefect_scenario.waiting.waiting_labels`, tagged, and Suspended.
Jobs are planned failures of the emulator (``failure_rate=1``): no fake model works, and a failed
job wakes its run as a successful one does. Each test has a project id of its own, so its scope
and cursor Variable are its own and the runs of other tests are not its watcher's.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from bench.watcher import bounded_prefect_writes
from prefect_scenario import video
from prefect_scenario.blocks import ScenarioCredentials
from prefect_scenario.client.policies import parse_time
from prefect_scenario.waiting import WAITING_TAG, WakePolicy, waiting_labels
from prefect_scenario.watcher import SweepReport, Watcher, cursor_variable_name
from support.emulator import (
    EMULATOR_KEY,
    EMULATOR_SECRET,
    LAYERS,
    advance_clock,
    configure,
    layers_body,
    stats,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")

LIST_ROUTE = "GET /v1/jobs"
GET_ROUTE = "GET /v1/jobs/{jobId}"
IN_FLIGHT = 250
LONG_JOB_SECONDS = 3600.0


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("watcher-media") / "tiny.mp4"
    video.make_sample_clip(path, seconds=1.0, width=96, height=64, fps=8, moving_objects=1)
    return path


@pytest.fixture
def credentials(live_emulator: Any) -> ScenarioCredentials:
    return ScenarioCredentials(
        api_key=EMULATOR_KEY,
        api_secret=EMULATOR_SECRET,
        base_url=live_emulator.base_url,
        project_id=f"proj_watch{uuid.uuid4().hex[:12]}",
    )


@pytest.fixture
async def asset_id(live_emulator: Any, credentials: ScenarioCredentials, tiny_clip: Path) -> str:
    """A video to submit jobs on; every job of these tests is a planned failure (no model work)."""
    configure(live_emulator, failure_rate=1.0, job_seconds=LONG_JOB_SECONDS, short_pages=False)
    async with credentials.get_client() as client:
        return (await client.uploads.upload_file(tiny_clip)).id


class WaitingRuns:
    """Flow runs of a deployment of their own, started, then suspended on Scenario jobs."""

    def __init__(self, deployment_id: UUID, flow_id: UUID) -> None:
        self.deployment_id = deployment_id
        self.flow_id = flow_id
        self.ids: list[UUID] = []

    async def start(self, count: int = 1) -> list[UUID]:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import FlowRunCreate
        from prefect.states import Running, to_state_create

        async with get_client() as client:

            async def one(_: int) -> UUID:
                create = FlowRunCreate(
                    flow_id=self.flow_id, deployment_id=self.deployment_id, state=to_state_create(Running())
                )
                response = await client.request(
                    "POST", "/flow_runs/", json=create.model_dump(mode="json", exclude_unset=True)
                )
                return UUID(response.json()["id"])

            made = await bounded_prefect_writes(count, one)
        self.ids += made
        return made

    async def suspend(
        self,
        run_ids: list[UUID],
        job_ids: list[str] | list[list[str]],
        scope: str,
        wake_on: WakePolicy = "all",
    ) -> None:
        """Each run waits on the job(s) at its index, as ``suspend_on`` leaves it."""
        from prefect.client.orchestration import get_client
        from prefect.states import Suspended

        deadline = datetime.now(UTC) + timedelta(days=1)
        async with get_client() as client:

            async def one(index: int) -> None:
                run_id, jobs = run_ids[index], job_ids[index]
                waited = [jobs] if isinstance(jobs, str) else jobs
                labels = waiting_labels(waited, deadline, scope, {"job": waited[0]}, wake_on)
                await client.update_flow_run_labels(run_id, labels)
                await client.update_flow_run(run_id, tags=[WAITING_TAG])
                result = await client.set_flow_run_state(
                    run_id, Suspended(timeout_seconds=86400, pause_key="scenario-wait-1")
                )
                assert result.status.value == "ACCEPT", result.details

            await bounded_prefect_writes(len(run_ids), one)

    async def state_type(self, run_id: UUID) -> str:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            run = await client.read_flow_run(run_id)
        assert run.state is not None
        return str(run.state.type.value)


@pytest.fixture
async def runs() -> AsyncIterator[WaitingRuns]:
    """Where the test's flow runs come from; they are deleted afterwards (the server is shared)."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        flow_id = await client.create_flow_from_name("watcher-test-waiter")
        deployment_id = await client.create_deployment(flow_id, f"watcher-test-{uuid.uuid4().hex[:8]}")
    made = WaitingRuns(deployment_id, flow_id)
    yield made
    async with get_client() as client:
        await bounded_prefect_writes(len(made.ids), lambda index: client.delete_flow_run(made.ids[index]))
        await client.delete_deployment(deployment_id)


async def _submit(credentials: ScenarioCredentials, asset_id: str, count: int = 1) -> list[str]:
    async with credentials.get_client() as client:

        async def one(_: int) -> str:
            return (await client.generate.run(LAYERS, layers_body(asset_id), reconcile=False)).job_id

        return await bounded_prefect_writes(count, one)


async def _measured(live_emulator: Any, watcher: Watcher) -> tuple[SweepReport, dict[str, int]]:
    """One sweep, and the Scenario API requests it made, by route (the emulator's counters)."""
    before = stats(live_emulator)["requests"]
    report = await watcher.sweep()
    after = stats(live_emulator)["requests"]
    return report, {
        route: after[route] - before.get(route, 0) for route in after if after[route] != before.get(route, 0)
    }


async def test_a_run_first_seen_after_its_job_ended_behind_the_cursor_is_woken_without_a_get(
    live_emulator: Any, credentials: ScenarioCredentials, asset_id: str, runs: WaitingRuns
) -> None:
    from prefect.variables import Variable

    late, other = await runs.start(2)
    [other_job] = await _submit(credentials, asset_id)
    await runs.suspend([other], [other_job], credentials.cache_scope())
    configure(live_emulator, job_seconds=0.3)
    [job_id] = await _submit(credentials, asset_id)
    await asyncio.sleep(0.6)
    async with credentials.get_client() as client:
        ended = await client.jobs.get(job_id)
    assert ended.status.is_terminal
    # Ten minutes on (Scenario's clock), a job that moves: the cursor goes well past the ended job.
    advance_clock(live_emulator, 600)
    configure(live_emulator, job_seconds=LONG_JOB_SECONDS)
    await _submit(credentials, asset_id)
    watcher = Watcher(credentials)
    first, _ = await _measured(live_emulator, watcher)
    assert first.waiting == 1
    assert first.woken == []
    saved: Any = await Variable.aget(cursor_variable_name(credentials.cache_scope()))
    cursor = parse_time(saved["updated_after"])
    ended_at = parse_time(ended.updated_at)
    assert cursor is not None
    assert ended_at is not None
    assert cursor - watcher.overlap > ended_at, "the ended job must lie behind the cursor's window"

    # Only now does the run that waits on it finish suspending.
    await runs.suspend([late], [job_id], credentials.cache_scope())
    report, requests = await _measured(live_emulator, watcher)

    assert report.woken == [str(late)]
    assert report.jobs_read == 0
    assert requests == {LIST_ROUTE: 1}
    assert await runs.state_type(late) != "PAUSED"
    assert await runs.state_type(other) == "PAUSED"


async def test_b_250_jobs_in_flight_cost_a_page_of_listing_per_100_jobs_per_sweep(
    live_emulator: Any, credentials: ScenarioCredentials, asset_id: str, runs: WaitingRuns
) -> None:
    started = time.monotonic()
    run_ids = await runs.start(IN_FLIGHT)
    job_ids = await _submit(credentials, asset_id, IN_FLIGHT)
    await runs.suspend(run_ids, job_ids, credentials.cache_scope())
    assert stats(live_emulator)["jobs_in_flight"] == IN_FLIGHT
    bound = math.ceil(IN_FLIGHT / 100) + 2
    steady_watcher = Watcher(credentials, reconcile_every=timedelta(hours=1))
    reconciling = Watcher(credentials, reconcile_every=timedelta(0))

    first, first_requests = await _measured(live_emulator, steady_watcher)
    steady, steady_requests = await _measured(live_emulator, steady_watcher)
    await reconciling.sweep()
    reconcile, reconcile_requests = await _measured(live_emulator, reconciling)

    figures = {"first": first_requests, "steady": steady_requests, "reconcile": reconcile_requests}
    print(
        f"Scenario requests per sweep, {IN_FLIGHT} in flight (set-up {time.monotonic() - started:.0f} s):",
        figures,
    )
    for name, report, requests in (
        ("first", first, first_requests),
        ("steady", steady, steady_requests),
        ("reconcile", reconcile, reconcile_requests),
    ):
        assert sum(requests.values()) <= bound, (name, requests)
        assert set(requests) <= {LIST_ROUTE}, (name, requests)
        assert report.jobs_read == 0, name
        assert report.waiting == IN_FLIGHT, name
        assert report.woken == [], name
    # The first sweep and the reconcile listed every job in flight: none was left to a GET.
    assert first.jobs_listed >= IN_FLIGHT
    assert reconcile.jobs_listed >= IN_FLIGHT


async def test_c_a_job_missing_from_the_listing_is_read_once_on_a_reconcile(
    live_emulator: Any, credentials: ScenarioCredentials, asset_id: str, runs: WaitingRuns
) -> None:
    overlap = timedelta(seconds=1)
    reconcile_every = timedelta(seconds=5)
    # A job in flight before the run started (a job it adopted): its last update, the move to
    # in-progress, comes before the run's start, so no listing from the run's start shows it.
    [job_id] = await _submit(credentials, asset_id)
    await asyncio.sleep(2 * overlap.total_seconds())
    [run_id] = await runs.start()
    await _submit(credentials, asset_id)  # a job that moves after the run's start: the cursor
    await runs.suspend([run_id], [job_id], credentials.cache_scope())
    watcher = Watcher(credentials, overlap=overlap, reconcile_every=reconcile_every)

    first, first_requests = await _measured(live_emulator, watcher)
    assert first.jobs_read == 1
    assert first_requests == {LIST_ROUTE: 1, GET_ROUTE: 1}
    assert first.woken == []
    reconciled_at = time.monotonic()

    # The job ends, dated before the run started: what the API shows when Scenario's clock runs
    # further behind Prefect's than the overlap. No listing of the watcher will return it.
    state = live_emulator.state
    with state.lock:
        record = state.jobs[job_id]
        record.history.append(("failure", record.created_at))

    steady, steady_requests = await _measured(live_emulator, watcher)
    assert time.monotonic() - reconciled_at < reconcile_every.total_seconds(), (
        "the second sweep came too late"
    )
    assert steady.woken == []
    assert steady.jobs_read == 0
    assert steady_requests == {LIST_ROUTE: 1}

    await asyncio.sleep(max(0.0, reconcile_every.total_seconds() - (time.monotonic() - reconciled_at)) + 0.2)
    reconcile, reconcile_requests = await _measured(live_emulator, watcher)
    assert reconcile.jobs_read == 1
    assert reconcile_requests == {LIST_ROUTE: 1, GET_ROUTE: 1}
    assert reconcile.woken == [str(run_id)]


@pytest.mark.parametrize("bounded", [True, False], ids=["lookback-1s", "no-lookback-bound"])
async def test_d_a_run_older_than_the_lookback_has_its_job_read_not_every_job_since_it_started(
    live_emulator: Any, credentials: ScenarioCredentials, asset_id: str, runs: WaitingRuns, bounded: bool
) -> None:
    """A run that waits longer than ``max_lookback`` (days, scaled down to 1 s here): the listing
    does not reach back to its start, and its ended job, updated before the window, is read once.
    Without the bound, the same sweep lists every job of the project since the run started."""
    [run_id] = await runs.start()
    configure(live_emulator, job_seconds=0.3)
    await _submit(credentials, asset_id, 3)  # other jobs of the project since the run's start
    [job_id] = await _submit(credentials, asset_id)
    await asyncio.sleep(2.5)
    configure(live_emulator, job_seconds=LONG_JOB_SECONDS)
    await runs.suspend([run_id], [job_id], credentials.cache_scope())
    lookback = timedelta(seconds=1) if bounded else timedelta(days=1)
    watcher = Watcher(credentials, overlap=timedelta(seconds=0.2), max_lookback=lookback)

    report, requests = await _measured(live_emulator, watcher)

    assert report.woken == [str(run_id)]
    if bounded:
        assert report.jobs_listed == 0, "the listing reached back past max_lookback"
        assert report.jobs_read == 1
        assert requests == {LIST_ROUTE: 1, GET_ROUTE: 1}
    else:
        assert report.jobs_listed == 4
        assert report.jobs_read == 0
        assert requests == {LIST_ROUTE: 1}


@pytest.mark.parametrize("wake_on", ["any", "all"])
async def test_e_a_batch_waiting_on_any_job_is_woken_by_the_first_that_ends(
    live_emulator: Any,
    credentials: ScenarioCredentials,
    asset_id: str,
    runs: WaitingRuns,
    wake_on: WakePolicy,
) -> None:
    """A suspended batch waits on all its jobs in flight and wakes when one ended ("any"); a run
    that needs every job ("all", a single flow's) sleeps on until the last one did."""
    [run_id] = await runs.start(1)
    long_jobs = await _submit(credentials, asset_id, 2)
    configure(live_emulator, job_seconds=0.3)
    [short_job] = await _submit(credentials, asset_id)
    configure(live_emulator, job_seconds=LONG_JOB_SECONDS)
    await runs.suspend([run_id], [[*long_jobs, short_job]], credentials.cache_scope(), wake_on)
    await asyncio.sleep(0.6)
    report, requests = await _measured(live_emulator, Watcher(credentials))
    assert report.waiting == 1
    assert requests == {LIST_ROUTE: 1}
    if wake_on == "any":
        assert report.woken == [str(run_id)]
        assert await runs.state_type(run_id) != "PAUSED"
    else:
        assert report.woken == []
        assert await runs.state_type(run_id) == "PAUSED"
