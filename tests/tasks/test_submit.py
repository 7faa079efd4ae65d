# ruff: noqa: ASYNC240
"""submit_job and estimate_job against the live emulator and a real Prefect server: money. A job is
paid for once, whatever retries, resets, twins or budgets come its way."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

from prefect_scenario.blocks import ScenarioCredentials
from prefect_scenario.errors import BudgetExceededError
from prefect_scenario.manifest import StoredOutput, SubmittedJob
from prefect_scenario.tasks import (
    JOB_ID_LABEL,
    JOB_IDS_LABEL,
    MODEL_ID_LABEL,
    download_outputs,
    estimate_job,
    submit_job,
    upload_video,
    wait_for_job,
)
from support.emulator import (
    ALEPH,
    FILES_ROUTE,
    GENERATE_ROUTE,
    LAYERS,
    aleph_body,
    faults,
    layers_body,
    stats,
)
from support.files import sha256_of
from support.prefect_api import flow_run, logs, task_runs

pytestmark = pytest.mark.usefixtures("prefect_harness")


async def test_flow_retry_reuses_the_paid_job(
    live_emulator: Any, credentials: ScenarioCredentials, sample_clip: Path, tmp_path: Path
) -> None:
    # Every download of the first attempt fails (503 from the file server, more times than the
    # client and the task retry); the flow's second attempt must reuse upload and job.
    faults(live_emulator, {"route": FILES_ROUTE, "kind": "status", "status": 503, "count": 4})

    @flow(retries=1, retry_delay_seconds=0)
    async def pipeline() -> list[StoredOutput]:
        asset = await upload_video(sample_clip, credentials=credentials)
        submitted = await submit_job(ALEPH, aleph_body(asset), credentials=credentials)
        job = await wait_for_job(submitted.job_id, credentials=credentials, timeout_seconds=120)
        return await download_outputs.with_options(retries=0)(
            job, credentials=credentials, destination=tmp_path / "out"
        )

    state = await pipeline(return_state=True)
    assert state.is_completed(), state
    outputs = await state.result()
    counters = stats(live_emulator)
    assert counters["faults_fired"].get("status") == 4
    assert counters["jobs_created"] == 1
    assert counters["uploads_created"] == 1
    run = await flow_run(state.state_details.flow_run_id)
    assert run.run_count == 2
    submits = sorted(
        (
            t
            for t in await task_runs(run.id)
            if t.task_key.startswith("submit_job") or t.name.startswith("submit-")
        ),
        key=lambda t: t.expected_start_time or t.created,
    )
    assert [t.state.name for t in submits if t.state] == ["Completed", "Cached"]
    assert len(outputs) == 1
    assert Path(outputs[0].location).is_file()
    assert sha256_of(Path(outputs[0].location)) == outputs[0].sha256


async def test_a_retry_that_lost_the_submit_result_finds_the_job_in_the_ledger(
    live_emulator: Any, credentials: ScenarioCredentials, sample_clip: Path
) -> None:
    """The window between "the API answered" and "the result was persisted": nothing cached, so the
    second attempt would pay again, but the job id is in the submission ledger and is adopted (and
    on the flow run's labels, for the cancel hook)."""
    from prefect.cache_policies import NO_CACHE
    from prefect.runtime import flow_run as current_run

    unpersisted = submit_job.with_options(cache_policy=NO_CACHE)

    @flow(retries=1, retry_delay_seconds=0)
    async def crashes_after_submit() -> SubmittedJob:
        asset = await upload_video(sample_clip, credentials=credentials)
        submitted = await unpersisted(ALEPH, aleph_body(asset), credentials=credentials)
        if current_run.run_count == 1:
            raise RuntimeError("the process died before the result was recorded")
        return submitted

    state = await crashes_after_submit(return_state=True)
    submitted = await state.result()
    assert submitted.reconciled is True
    assert stats(live_emulator)["jobs_created"] == 1
    run = await flow_run(state.state_details.flow_run_id)
    assert run.run_count == 2
    assert run.labels[JOB_IDS_LABEL] == submitted.job_id
    lines = [log.message for log in await logs(run.id)]
    assert any(
        f"{submitted.job_id} was bought for these inputs by flow run {run.id}" in line
        and "never delivered: adopting it, nothing new is submitted" in line
        for line in lines
    )


async def test_reset_after_accept_creates_exactly_one_job_and_labels_keep_every_id(
    live_emulator: Any, credentials: ScenarioCredentials, sample_clip: Path
) -> None:
    @flow
    async def two_jobs() -> tuple[SubmittedJob, SubmittedJob]:
        asset = await upload_video(sample_clip, credentials=credentials)
        estimate = await estimate_job(LAYERS, layers_body(asset), credentials=credentials)
        # The dry run shares the route: arm the fault only for the paid POST.
        faults(live_emulator, {"route": GENERATE_ROUTE, "kind": "reset_after_accept", "count": 1})
        first = await submit_job(LAYERS, layers_body(asset), credentials=credentials, estimate=estimate)
        second = await submit_job(ALEPH, aleph_body(asset), credentials=credentials)
        return first, second

    state = await two_jobs(return_state=True)
    first, second = await state.result()
    counters = stats(live_emulator)
    assert counters["faults_fired"]["reset_after_accept"] == 1
    assert counters["jobs_created"] == 2  # one per submit, the lost answer included
    assert first.reconciled is True
    assert second.reconciled is False
    assert first.estimated_creative_units is not None
    assert first.inputs == layers_body(first.inputs["video"])
    assert counters["dry_runs"] == 2  # the explicit estimate, then the second submit's own

    run = await flow_run(state.state_details.flow_run_id)
    assert run.labels[JOB_ID_LABEL] == second.job_id
    assert run.labels[JOB_IDS_LABEL] == f"{first.job_id},{second.job_id}"
    assert run.labels[MODEL_ID_LABEL] == ALEPH


async def test_identical_concurrent_submits_pay_once(
    live_emulator: Any, credentials: ScenarioCredentials, sample_clip: Path, tmp_path: Path
) -> None:
    """A batch holding the same clip twice (under two names): one upload, one job."""
    twin = tmp_path / "same-clip-other-name.mp4"
    shutil.copyfile(sample_clip, twin)

    @flow
    async def twins() -> list[SubmittedJob]:
        async def one(path: Path) -> SubmittedJob:
            asset = await upload_video(path, credentials=credentials)
            return await submit_job(ALEPH, aleph_body(asset), credentials=credentials)

        return list(await asyncio.gather(one(sample_clip), one(twin)))

    first, second = await twins()
    assert first.job_id == second.job_id
    counters = stats(live_emulator)
    assert counters["jobs_created"] == 1
    assert counters["uploads_created"] == 1


async def test_budget_refuses_before_spending(
    live_emulator: Any, credentials: ScenarioCredentials, sample_clip: Path
) -> None:
    @flow
    async def over_budget() -> SubmittedJob:
        asset = await upload_video(sample_clip, credentials=credentials)
        estimate = await estimate_job(LAYERS, layers_body(asset, 4), credentials=credentials)
        assert estimate.creative_units_cost > 1
        return await submit_job(LAYERS, layers_body(asset, 4), credentials=credentials, max_creative_units=1)

    state = await over_budget(return_state=True)
    assert state.is_failed()
    with pytest.raises(BudgetExceededError) as caught:
        await state.result()
    message = str(caught.value)
    assert "over the budget of 1" in message
    assert "maxLayers is 4" in message
    assert "nothing was submitted" in message
    assert caught.value.budget == 1
    assert caught.value.estimate > 1
    counters = stats(live_emulator)
    assert counters["jobs_created"] == 0
    assert counters["dry_runs"] == 2  # estimate_job, then submit_job's own


async def test_reuse_across_runs_and_refresh(
    live_emulator: Any, credentials: ScenarioCredentials, sample_clip: Path
) -> None:
    @flow
    async def submit(reuse: bool, refresh: bool = False) -> SubmittedJob:
        asset = await upload_video(sample_clip, credentials=credentials)
        task = submit_job.with_options(refresh_cache=True) if refresh else submit_job
        return await task(ALEPH, aleph_body(asset), credentials=credentials, reuse_across_runs=reuse)

    first = await submit(True)
    again = await submit(True)
    assert again.job_id == first.job_id
    assert stats(live_emulator)["jobs_created"] == 1
    refreshed = await submit(True, refresh=True)
    assert refreshed.job_id != first.job_id
    per_run = await submit(False)
    assert per_run.job_id not in (first.job_id, refreshed.job_id)
    assert stats(live_emulator)["jobs_created"] == 3
    # The refreshed job is the one reused from now on.
    assert (await submit(True)).job_id == refreshed.job_id
    assert stats(live_emulator)["jobs_created"] == 3
