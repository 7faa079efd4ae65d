# ruff: noqa: ASYNC240
"""The tasks against the live emulator and a real Prefect server: money, retries, caches, storage.

Every test gets a fresh emulator (``live_emulator`` resets it) and its own Scenario project id, so
the session-wide result store never hands one test's cached upload or job to another.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from prefect import flow
from prefect.client.schemas.objects import StateType
from prefect_test_helpers import (
    ALEPH,
    FILES_ROUTE,
    GENERATE_ROUTE,
    LAYERS,
    advance_clock,
    configure,
    faults,
    flow_run,
    logs,
    stats,
    task_runs,
)

from prefect_scenario import video
from prefect_scenario.blocks import ScenarioCredentials
from prefect_scenario.caching import DIGESTS
from prefect_scenario.errors import BudgetExceededError, JobFailedError
from prefect_scenario.manifest import StoredOutput, SubmittedJob
from prefect_scenario.models import Job
from prefect_scenario.storage import discard
from prefect_scenario.tasks import (
    JOB_ID_LABEL,
    JOB_IDS_LABEL,
    MODEL_ID_LABEL,
    download_outputs,
    estimate_job,
    submit_job,
    upload_image,
    upload_video,
    wait_for_job,
)

CANARY_SECRET = "canary-SECRET-7f3a"


@pytest.fixture
def credentials(live_emulator: Any) -> ScenarioCredentials:
    return ScenarioCredentials(
        api_key="test-key",
        api_secret=CANARY_SECRET,
        base_url=live_emulator.base_url,
        project_id=f"proj_{uuid.uuid4().hex[:12]}",
    )


def layers_body(asset_id: str, max_layers: int = 1) -> dict[str, Any]:
    return {"video": asset_id, "separationInstruction": "each moving object apart", "maxLayers": max_layers}


def aleph_body(asset_id: str, prompt: str = "turn it into a watercolor", seed: int = 7) -> dict[str, Any]:
    return {"video": asset_id, "prompt": prompt, "seed": seed}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def finished_job(credentials: ScenarioCredentials, clip: Path, model: str = ALEPH) -> Job:
    """A successful job made by the tasks themselves (upload, submit, wait) in one flow run."""

    @flow
    async def make_job() -> Job:
        asset = await upload_video(clip, credentials=credentials)
        body = aleph_body(asset) if model == ALEPH else layers_body(asset, 2)
        submitted = await submit_job(model, body, credentials=credentials)
        return await wait_for_job(submitted.job_id, credentials=credentials, timeout_seconds=120)

    return await make_job()


# ---------------------------------------------------------------------------------------------
# upload
# ---------------------------------------------------------------------------------------------


async def test_upload_is_cached_by_content_not_name(
    live_emulator: Any,
    credentials: ScenarioCredentials,
    sample_clip: Path,
    sample_image: Path,
    tmp_path: Path,
    s3_bucket: Any,
    moto_server: str,
) -> None:
    @flow
    async def upload(path: Any, storage: Any = None) -> Any:
        return await upload_video(path, credentials=credentials, storage=storage, return_state=True)

    first = await upload(sample_clip)
    asset_id = await first.result()
    assert first.type is StateType.COMPLETED
    assert first.name == "Completed"
    assert asset_id.startswith("asset_")
    assert (await stats(live_emulator))["uploads_created"] == 1

    renamed = tmp_path / "a-completely-different-name.mp4"
    shutil.copyfile(sample_clip, renamed)
    second = await upload(renamed)
    assert second.name == "Cached"
    assert await second.result() == asset_id
    assert (await stats(live_emulator))["uploads_created"] == 1

    # The same bytes inside an S3 bucket: fetched to hash them, then recognised, not uploaded.
    boto3.client(
        "s3",
        endpoint_url=moto_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).upload_file(str(sample_clip), s3_bucket.bucket_name, "incoming/clip-from-s3.mp4")
    from_s3 = await upload("incoming/clip-from-s3.mp4", s3_bucket)
    assert from_s3.name == "Cached"
    assert await from_s3.result() == asset_id
    assert (await stats(live_emulator))["uploads_created"] == 1
    # The cache key needed the content: the fetched copy waits for a task body that never came
    # (a cache hit), and is removed when claimed, expired, or at exit.
    held = DIGESTS.take("incoming/clip-from-s3.mp4", s3_bucket)
    assert held is not None
    assert held[0].is_file()
    assert held[1].size == sample_clip.stat().st_size
    discard(held[0])
    assert not held[0].exists()

    # An asset id is used as is.
    passthrough = await upload(asset_id)
    assert await passthrough.result() == asset_id
    assert (await stats(live_emulator))["uploads_created"] == 1

    changed = tmp_path / "clip.mp4"  # the old name, new bytes
    video.make_sample_clip(changed, seconds=2.0, width=160, height=120, fps=12, moving_objects=1)
    third = await upload(changed)
    assert third.name == "Completed"
    assert await third.result() != asset_id
    assert (await stats(live_emulator))["uploads_created"] == 2

    @flow
    async def upload_picture() -> str:
        return await upload_image(sample_image, credentials=credentials)

    image_asset = await upload_picture()
    assert image_asset.startswith("asset_")
    assert image_asset != asset_id
    assert (await upload_picture()) == image_asset
    assert (await stats(live_emulator))["uploads_created"] == 3


async def test_new_bytes_in_s3_mean_a_new_upload(
    live_emulator: Any,
    credentials: ScenarioCredentials,
    sample_clip: Path,
    s3_bucket: Any,
    moto_server: str,
    tmp_path: Path,
) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    s3.upload_file(str(sample_clip), s3_bucket.bucket_name, "clip.mp4")

    @flow
    async def upload() -> str:
        return await upload_video("clip.mp4", credentials=credentials, storage=s3_bucket)

    first = await upload()
    other = tmp_path / "other.mp4"
    video.make_sample_clip(other, seconds=2.0, width=160, height=120, fps=12, moving_objects=1)
    s3.upload_file(str(other), s3_bucket.bucket_name, "clip.mp4")  # same key, new content
    second = await upload()
    assert first != second
    assert (await stats(live_emulator))["uploads_created"] == 2


# ---------------------------------------------------------------------------------------------
# submit: money
# ---------------------------------------------------------------------------------------------


async def test_flow_retry_reuses_the_paid_job(
    live_emulator: Any, credentials: ScenarioCredentials, sample_clip: Path, tmp_path: Path
) -> None:
    # Every download of the first attempt fails (503 from the file server, more times than the
    # client and the task retry); the flow's second attempt must reuse upload and job.
    await faults(live_emulator, {"route": FILES_ROUTE, "kind": "status", "status": 503, "count": 4})

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
    counters = await stats(live_emulator)
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
    assert sha256(Path(outputs[0].location)) == outputs[0].sha256


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
    assert (await stats(live_emulator))["jobs_created"] == 1
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
        await faults(live_emulator, {"route": GENERATE_ROUTE, "kind": "reset_after_accept", "count": 1})
        first = await submit_job(LAYERS, layers_body(asset), credentials=credentials, estimate=estimate)
        second = await submit_job(ALEPH, aleph_body(asset), credentials=credentials)
        return first, second

    state = await two_jobs(return_state=True)
    first, second = await state.result()
    counters = await stats(live_emulator)
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
    counters = await stats(live_emulator)
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
    counters = await stats(live_emulator)
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
    assert (await stats(live_emulator))["jobs_created"] == 1
    refreshed = await submit(True, refresh=True)
    assert refreshed.job_id != first.job_id
    per_run = await submit(False)
    assert per_run.job_id not in (first.job_id, refreshed.job_id)
    assert (await stats(live_emulator))["jobs_created"] == 3
    # The refreshed job is the one reused from now on.
    assert (await submit(True)).job_id == refreshed.job_id
    assert (await stats(live_emulator))["jobs_created"] == 3


# ---------------------------------------------------------------------------------------------
# wait
# ---------------------------------------------------------------------------------------------


async def test_failed_job_raises_with_error_and_hint_and_is_not_reused(
    live_emulator: Any, credentials: ScenarioCredentials, sample_clip: Path
) -> None:
    await faults(
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
    assert (await stats(live_emulator))["jobs_created"] == 2


async def test_wait_deadline_says_the_job_goes_on(
    live_emulator: Any, credentials: ScenarioCredentials, sample_clip: Path
) -> None:
    from prefect_scenario.errors import JobWaitTimeoutError

    await configure(live_emulator, job_seconds=120)

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


# ---------------------------------------------------------------------------------------------
# download
# ---------------------------------------------------------------------------------------------


async def test_download_survives_truncation_and_an_expired_url(
    live_emulator: Any, credentials: ScenarioCredentials, sample_clip: Path, tmp_path: Path
) -> None:
    job = await finished_job(credentials, sample_clip)
    # First file request: cut in half. Second: held 2 s, while the clock jumps an hour, so its
    # signed URL has expired when the file server looks at it.
    await faults(
        live_emulator,
        {"route": FILES_ROUTE, "kind": "truncate", "count": 1, "keep_fraction": 0.5},
        {"route": FILES_ROUTE, "kind": "delay", "count": 1, "seconds": 2.0},
    )

    @flow
    async def fetch() -> list[StoredOutput]:
        return await download_outputs(job, credentials=credentials, destination=tmp_path / "out")

    running = asyncio.create_task(fetch())
    for _ in range(200):
        if (await stats(live_emulator))["faults_fired"].get("delay"):
            break
        await asyncio.sleep(0.05)
    await advance_clock(live_emulator, 3600)
    outputs = await running

    counters = await stats(live_emulator)
    assert counters["faults_fired"] == {"truncate": 1, "delay": 1}
    assert counters["jobs_created"] == 1
    assert counters["requests"][FILES_ROUTE] >= 3
    assert len(outputs) == len(job.metadata.asset_ids) == 1
    stored = outputs[0]
    original = live_emulator.state.assets[stored.asset_id].path
    assert stored.sha256 == sha256(original) == sha256(Path(stored.location))
    assert stored.size == original.stat().st_size
    assert stored.path == f"{job.job_id}/00-{stored.asset_id}.mp4"
    assert stored.mime_type == "video/mp4"
    assert stored.kind == "video"


async def test_download_cache_follows_the_files(
    live_emulator: Any, credentials: ScenarioCredentials, sample_clip: Path, tmp_path: Path
) -> None:
    job = await finished_job(credentials, sample_clip, model=LAYERS)
    destination = tmp_path / "layers"

    @flow
    async def fetch() -> Any:
        return await download_outputs(
            job, credentials=credentials, destination=destination, return_state=True
        )

    first = await fetch()
    outputs = await first.result()
    assert [o.output_index for o in outputs] == list(range(len(outputs)))
    assert len(outputs) >= 2
    files_after_first = (await stats(live_emulator))["requests"][FILES_ROUTE]
    assert files_after_first == len(outputs)

    # Files present: kept (hashed, not fetched), then recorded; the next run is a cache hit.
    second = await fetch()
    assert second.name == "Completed"
    assert await second.result() == outputs
    third = await fetch()
    assert third.name == "Cached"
    assert await third.result() == outputs
    assert (await stats(live_emulator))["requests"][FILES_ROUTE] == files_after_first

    # A file gone: the cache entry is not used, the missing output alone is fetched again.
    Path(outputs[-1].location).unlink()
    fourth = await fetch()
    assert fourth.name == "Completed"
    assert await fourth.result() == outputs
    assert Path(outputs[-1].location).is_file()
    assert (await stats(live_emulator))["requests"][FILES_ROUTE] == files_after_first + 1
    assert (await stats(live_emulator))["jobs_created"] == 1


async def test_download_to_s3_bucket(
    live_emulator: Any, credentials: ScenarioCredentials, sample_clip: Path, s3_bucket: Any, moto_server: str
) -> None:
    job = await finished_job(credentials, sample_clip, model=LAYERS)

    @flow
    async def to_s3() -> Any:
        return await download_outputs(
            job, credentials=credentials, destination="renders", storage=s3_bucket, return_state=True
        )

    state = await to_s3()
    outputs = await state.result()
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    listed = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=s3_bucket.bucket_name)["Contents"]}
    assert len(listed) == len(outputs) == len(job.metadata.asset_ids)
    for output in outputs:
        key = f"renders/{output.path}"
        assert output.location == f"s3://{s3_bucket.bucket_name}/{key}"
        assert listed[key] == output.size
        body = s3.get_object(Bucket=s3_bucket.bucket_name, Key=key)
        data = body["Body"].read()
        assert hashlib.sha256(data).hexdigest() == output.sha256
        assert output.sha256 == sha256(live_emulator.state.assets[output.asset_id].path)
        assert body["Metadata"]["sha256"] == output.sha256
        assert body["ContentType"] == output.mime_type

    # Same job, same bucket and folder: a cache hit, no new file request.
    files = (await stats(live_emulator))["requests"][FILES_ROUTE]
    again = await to_s3()
    assert again.name == "Cached"
    assert await again.result() == outputs
    assert (await stats(live_emulator))["requests"][FILES_ROUTE] == files


async def test_download_retries_transient_failures_never_permanent_ones(
    live_emulator: Any, credentials: ScenarioCredentials, sample_clip: Path, tmp_path: Path
) -> None:
    job = await finished_job(credentials, sample_clip)
    # More 503s than the client's own attempts: the first task attempt fails, the retry succeeds.
    await faults(live_emulator, {"route": FILES_ROUTE, "kind": "status", "status": 503, "count": 4})
    quick = download_outputs.with_options(retry_delay_seconds=0, retry_jitter_factor=None)

    @flow
    async def fetch(target: Job) -> Any:
        return await quick(target, credentials=credentials, destination=tmp_path / "out", return_state=True)

    state = await fetch(job)
    assert state.is_completed()
    outputs = await state.result()
    assert outputs[0].sha256 == sha256(live_emulator.state.assets[outputs[0].asset_id].path)
    runs = [t for t in await task_runs(state.state_details.flow_run_id) if t.name.startswith("download")]
    assert [t.run_count for t in runs] == [2]
    assert (await stats(live_emulator))["jobs_created"] == 1

    # An output that does not exist: one attempt, no retry, no regeneration.
    ghost = job.model_copy(
        update={"metadata": job.metadata.model_copy(update={"asset_ids": ["asset_NoSuchOne"]})}
    )
    failed = await fetch(ghost, return_state=True)
    assert failed.is_failed()
    runs = [t for t in await task_runs(failed.state_details.flow_run_id) if t.name.startswith("download")]
    assert [t.run_count for t in runs] == [1]
    assert (await stats(live_emulator))["jobs_created"] == 1
