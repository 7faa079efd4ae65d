# ruff: noqa: ASYNC240
"""download_outputs against the live emulator and a real Prefect server: truncated and expired
downloads, a cache that follows the files, S3 buckets, retries of what may pass only."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

from prefect_scenario.blocks import ScenarioCredentials
from prefect_scenario.manifest import StoredOutput
from prefect_scenario.models import Job
from prefect_scenario.tasks import download_outputs, submit_job, upload_video, wait_for_job
from support.emulator import ALEPH, FILES_ROUTE, LAYERS, advance_clock, aleph_body, faults, layers_body, stats
from support.files import sha256_of
from support.prefect_api import task_runs
from support.s3 import s3_client

pytestmark = pytest.mark.usefixtures("prefect_harness")


async def finished_job(credentials: ScenarioCredentials, clip: Path, model: str = ALEPH) -> Job:
    """A successful job made by the tasks themselves (upload, submit, wait) in one flow run."""

    @flow
    async def make_job() -> Job:
        asset = await upload_video(clip, credentials=credentials)
        body = aleph_body(asset) if model == ALEPH else layers_body(asset, 2)
        submitted = await submit_job(model, body, credentials=credentials)
        return await wait_for_job(submitted.job_id, credentials=credentials, timeout_seconds=120)

    return await make_job()


async def test_download_survives_truncation_and_an_expired_url(
    live_emulator: Any, credentials: ScenarioCredentials, sample_clip: Path, tmp_path: Path
) -> None:
    job = await finished_job(credentials, sample_clip)
    # First file request: cut in half. Second: held 2 s, while the clock jumps an hour, so its
    # signed URL has expired when the file server looks at it.
    faults(
        live_emulator,
        {"route": FILES_ROUTE, "kind": "truncate", "count": 1, "keep_fraction": 0.5},
        {"route": FILES_ROUTE, "kind": "delay", "count": 1, "seconds": 2.0},
    )

    @flow
    async def fetch() -> list[StoredOutput]:
        return await download_outputs(job, credentials=credentials, destination=tmp_path / "out")

    running = asyncio.create_task(fetch())
    for _ in range(200):
        if stats(live_emulator)["faults_fired"].get("delay"):
            break
        await asyncio.sleep(0.05)
    advance_clock(live_emulator, 3600)
    outputs = await running

    counters = stats(live_emulator)
    assert counters["faults_fired"] == {"truncate": 1, "delay": 1}
    assert counters["jobs_created"] == 1
    assert counters["requests"][FILES_ROUTE] >= 3
    assert len(outputs) == len(job.metadata.asset_ids) == 1
    stored = outputs[0]
    original = live_emulator.state.assets[stored.asset_id].path
    assert stored.sha256 == sha256_of(original) == sha256_of(Path(stored.location))
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
    files_after_first = stats(live_emulator)["requests"][FILES_ROUTE]
    assert files_after_first == len(outputs)

    # Files present: kept (hashed, not fetched), then recorded; the next run is a cache hit.
    second = await fetch()
    assert second.name == "Completed"
    assert await second.result() == outputs
    third = await fetch()
    assert third.name == "Cached"
    assert await third.result() == outputs
    assert stats(live_emulator)["requests"][FILES_ROUTE] == files_after_first

    # A file gone: the cache entry is not used, the missing output alone is fetched again.
    Path(outputs[-1].location).unlink()
    fourth = await fetch()
    assert fourth.name == "Completed"
    assert await fourth.result() == outputs
    assert Path(outputs[-1].location).is_file()
    assert stats(live_emulator)["requests"][FILES_ROUTE] == files_after_first + 1
    assert stats(live_emulator)["jobs_created"] == 1


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
    s3 = s3_client(moto_server)
    listed = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=s3_bucket.bucket_name)["Contents"]}
    assert len(listed) == len(outputs) == len(job.metadata.asset_ids)
    for output in outputs:
        key = f"renders/{output.path}"
        assert output.location == f"s3://{s3_bucket.bucket_name}/{key}"
        assert listed[key] == output.size
        body = s3.get_object(Bucket=s3_bucket.bucket_name, Key=key)
        data = body["Body"].read()
        assert hashlib.sha256(data).hexdigest() == output.sha256
        assert output.sha256 == sha256_of(live_emulator.state.assets[output.asset_id].path)
        assert body["Metadata"]["sha256"] == output.sha256
        assert body["ContentType"] == output.mime_type

    # Same job, same bucket and folder: a cache hit, no new file request.
    files = stats(live_emulator)["requests"][FILES_ROUTE]
    again = await to_s3()
    assert again.name == "Cached"
    assert await again.result() == outputs
    assert stats(live_emulator)["requests"][FILES_ROUTE] == files


async def test_download_retries_transient_failures_never_permanent_ones(
    live_emulator: Any, credentials: ScenarioCredentials, sample_clip: Path, tmp_path: Path
) -> None:
    job = await finished_job(credentials, sample_clip)
    # More 503s than the client's own attempts: the first task attempt fails, the retry succeeds.
    faults(live_emulator, {"route": FILES_ROUTE, "kind": "status", "status": 503, "count": 4})
    quick = download_outputs.with_options(retry_delay_seconds=0, retry_jitter_factor=None)

    @flow
    async def fetch(target: Job) -> Any:
        return await quick(target, credentials=credentials, destination=tmp_path / "out", return_state=True)

    state = await fetch(job)
    assert state.is_completed()
    outputs = await state.result()
    assert outputs[0].sha256 == sha256_of(live_emulator.state.assets[outputs[0].asset_id].path)
    runs = [t for t in await task_runs(state.state_details.flow_run_id) if t.name.startswith("download")]
    assert [t.run_count for t in runs] == [2]
    assert stats(live_emulator)["jobs_created"] == 1

    # An output that does not exist: one attempt, no retry, no regeneration.
    ghost = job.model_copy(
        update={"metadata": job.metadata.model_copy(update={"asset_ids": ["asset_NoSuchOne"]})}
    )
    failed = await fetch(ghost, return_state=True)
    assert failed.is_failed()
    runs = [t for t in await task_runs(failed.state_details.flow_run_id) if t.name.startswith("download")]
    assert [t.run_count for t in runs] == [1]
    assert stats(live_emulator)["jobs_created"] == 1
