"""cancel_remote_jobs: reads job ids from the flow run's labels, in a process that knows nothing else."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

from prefect_scenario.blocks import ScenarioCredentials, resolve_credentials
from prefect_scenario.errors import JobCanceledError
from prefect_scenario.hooks import cancel_remote_jobs
from prefect_scenario.manifest import SubmittedJob
from prefect_scenario.tasks import submit_job, upload_video, wait_for_job
from support.emulator import ALEPH, configure
from support.prefect_api import flow_run, logs

pytestmark = pytest.mark.usefixtures("prefect_harness")


@flow
async def start_job(credentials: str, clip: str) -> SubmittedJob:
    """Submit and leave: the flow run's labels are all a hook will have."""
    creds = await resolve_credentials(credentials)
    asset = await upload_video(Path(clip), credentials=creds)
    return await submit_job(ALEPH, {"video": asset, "prompt": "as a pencil sketch"}, credentials=creds)


@pytest.fixture
async def saved_credentials(live_emulator: Any) -> str:
    name = f"emulator-{uuid.uuid4().hex[:8]}"
    await ScenarioCredentials(
        api_key="test-key",
        api_secret="test-secret",
        base_url=live_emulator.base_url,
        project_id=f"proj_{uuid.uuid4().hex[:12]}",
    ).asave(name)
    return name


async def test_refused_cancel_says_the_job_goes_on_and_is_billed(
    live_emulator: Any, saved_credentials: str, sample_clip: Path
) -> None:
    configure(live_emulator, job_seconds=120)
    state = await start_job(saved_credentials, str(sample_clip), return_state=True)
    submitted = await state.result()
    run = await flow_run(state.state_details.flow_run_id)

    assert await cancel_remote_jobs(None, run, run.state) is None
    lines = [log.message for log in await logs(run.id)]
    refusal = [line for line in lines if f"refused to cancel job {submitted.job_id}" in line]
    assert refusal, lines
    assert "will still be billed" in refusal[0]
    assert "fetch them later by job id" in refusal[0]
    credentials = await resolve_credentials(saved_credentials)
    async with credentials.get_client() as client:
        assert (await client.jobs.get(submitted.job_id)).status.value != "canceled"


async def test_cancel_with_env_credentials_cancels_and_wait_reports_it(
    live_emulator: Any, saved_credentials: str, sample_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(live_emulator, job_seconds=120, allow_cancel=True)
    state = await start_job(saved_credentials, str(sample_clip), return_state=True)
    submitted = await state.result()
    run = await flow_run(state.state_details.flow_run_id)

    # The hook's process has no block name to go by: environment variables it is.
    run = run.model_copy(update={"parameters": {}})
    monkeypatch.setenv("SCENARIO_SDK_API_KEY", "env-key")
    monkeypatch.setenv("SCENARIO_SDK_API_SECRET", "env-secret")
    monkeypatch.setenv("SCENARIO_BASE_URL", live_emulator.base_url)
    await cancel_remote_jobs(None, run, run.state)
    assert any(f"Canceled Scenario job {submitted.job_id}" in log.message for log in await logs(run.id))

    credentials = await resolve_credentials(saved_credentials)

    @flow
    async def wait() -> Any:
        return await wait_for_job(submitted.job_id, credentials=credentials, timeout_seconds=30)

    with pytest.raises(JobCanceledError, match="was canceled"):
        await wait()


async def test_hook_never_raises(live_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    @flow
    async def nothing_submitted() -> None:
        return None

    state = await nothing_submitted(return_state=True)
    run = await flow_run(state.state_details.flow_run_id)
    await cancel_remote_jobs(None, run, run.state)
    assert any("nothing to cancel" in log.message for log in await logs(run.id))

    # Job ids but no credentials at all: an error line, no exception.
    for name in ("SCENARIO_SDK_API_KEY", "SCENARIO_SDK_API_SECRET", "SCENARIO_SDK_JWT"):
        monkeypatch.delenv(name, raising=False)
    labelled = run.model_copy(update={"labels": {"scenario.job_ids": "job_Unknown1"}, "parameters": {}})
    await cancel_remote_jobs(None, labelled, run.state)
    assert any("no credentials" in log.message for log in await logs(run.id))
