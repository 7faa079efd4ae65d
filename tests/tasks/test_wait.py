"""wait_for_job against the live emulator and a real Prefect server: a failed job says why and is not
reused, a wait that runs out says the job goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prefect import flow

from prefect_scenario.blocks import ScenarioCredentials
from prefect_scenario.errors import JobFailedError
from prefect_scenario.models import Job
from prefect_scenario.tasks import submit_job, upload_video, wait_for_job
from support.emulator import ALEPH, GENERATE_ROUTE, aleph_body, configure, faults, stats
from support.prefect_api import logs

pytestmark = pytest.mark.usefixtures("prefect_harness")


async def test_failed_job_raises_with_error_and_hint_and_is_not_reused(
    live_emulator: Any, credentials: ScenarioCredentials, sample_clip: Path
) -> None:
    faults(
        live_emulator,
        {
            "route": GENERATE_ROUTE,
            "kind": "fail_job",
            "count": 1,
            "error": "The model ran out of memory",
            "hint": "Use a shorter or smaller clip",
        },
    )

    @flow
    async def run_once() -> Job:
        asset = await upload_video(sample_clip, credentials=credentials)
        submitted = await submit_job(
            ALEPH, aleph_body(asset), credentials=credentials, reuse_across_runs=True
        )
        return await wait_for_job(submitted.job_id, credentials=credentials, timeout_seconds=60)

    state = await run_once(return_state=True)
    assert state.is_failed()
    with pytest.raises(JobFailedError) as caught:
        await state.result()
    assert caught.value.error == "The model ran out of memory"
    assert caught.value.hint == "Use a shorter or smaller clip"
    assert "out of memory" in str(caught.value)
    assert "shorter or smaller" in str(caught.value)
    lines = [log.message for log in await logs(state.state_details.flow_run_id)]
    assert any("failed: The model ran out of memory" in line for line in lines)

    # The failed job is dropped from the reuse cache: the next run pays for a new one, which works.
    job = await run_once()
    assert job.job_id != caught.value.job_id
    assert job.status.value == "success"
    assert stats(live_emulator)["jobs_created"] == 2


async def test_wait_deadline_says_the_job_goes_on(
    live_emulator: Any, credentials: ScenarioCredentials, sample_clip: Path
) -> None:
    from prefect_scenario.errors import JobWaitTimeoutError

    configure(live_emulator, job_seconds=120)

    @flow
    async def impatient() -> Job:
        asset = await upload_video(sample_clip, credentials=credentials)
        submitted = await submit_job(ALEPH, aleph_body(asset), credentials=credentials)
        return await wait_for_job(submitted.job_id, credentials=credentials, timeout_seconds=1.5)

    state = await impatient(return_state=True)
    with pytest.raises(JobWaitTimeoutError) as caught:
        await state.result()
    assert caught.value.job_id.startswith("job_")
    lines = [log.message for log in await logs(state.state_details.flow_run_id)]
    assert any("goes on and will still be billed" in line for line in lines)
