"""Our client against the emulator: the full round trip for both models, then every fault kind.

The round trip runs over ``httpx.ASGITransport`` (in-process) and over the live loopback server;
the fault tests need real sockets (resets, timeouts), so they run against the live server only.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from prefect_scenario import video
from prefect_scenario.client import PollPolicy, RetryPolicy, ScenarioClient
from prefect_scenario.emulator import EmulatorState, RunningEmulator
from prefect_scenario.errors import BadRequestError, RateLimitError
from prefect_scenario.models import (
    ALEPH_MODEL_ID,
    VIDEO_LAYERS_MODEL_ID,
    AlephInput,
    JobStatus,
    Keyframe,
    RequestModel,
    VideoLayersInput,
)
from prefect_scenario.video import probe_video
from support.emulator import ASGI_BASE_URL, EMULATOR_KEY, EMULATOR_SECRET

pytestmark = pytest.mark.slow

GENERATE = "POST /v1/generate/custom/{modelId}"
GET_JOB = "GET /v1/jobs/{jobId}"
GET_FILE = "GET /files/{assetId}"

# The emulator's jobs last 0.3 s: poll and retry on that scale so the suite stays quick.
FAST_RETRY = RetryPolicy(base_delay=0.05, max_delay=0.5, max_total_seconds=20)
FAST_POLLING = PollPolicy(min_interval=0.05, max_interval=0.5)


def make_client(
    base_url: str, *, transport: httpx.AsyncBaseTransport | None = None, **options: Any
) -> ScenarioClient:
    client = ScenarioClient(
        base_url=base_url,
        api_key=EMULATOR_KEY,
        api_secret=EMULATOR_SECRET,
        transport=transport,
        retry=options.pop("retry", FAST_RETRY),
        polling=FAST_POLLING,
        **options,
    )
    client.generate.reconcile_settle_seconds = 0.2
    return client


class Control:
    """The emulator's control plane over HTTP."""

    def __init__(self, emulator: RunningEmulator) -> None:
        self.http = httpx.AsyncClient(base_url=emulator.control_url)

    async def faults(self, *rules: dict[str, Any]) -> None:
        (await self.http.post("/faults", json=list(rules))).raise_for_status()

    async def configure(self, **settings: Any) -> None:
        (await self.http.post("/config", json=settings)).raise_for_status()

    async def advance(self, seconds: float) -> None:
        (await self.http.post("/clock", json={"advance_seconds": seconds})).raise_for_status()

    async def stats(self) -> dict[str, Any]:
        response = await self.http.get("/stats")
        response.raise_for_status()
        return dict(response.json())


@pytest.fixture
async def control(live_emulator: RunningEmulator) -> AsyncIterator[Control]:
    plane = Control(live_emulator)
    yield plane
    await plane.http.aclose()


@pytest.fixture
async def live_client(live_emulator: RunningEmulator) -> AsyncIterator[ScenarioClient]:
    async with make_client(live_emulator.base_url, timeout=5.0) as client:
        yield client


# ---------------------------------------------------------------------------------------------
# The round trip
# ---------------------------------------------------------------------------------------------


def _body(model_id: str, video: str, image: str) -> RequestModel:
    if model_id == VIDEO_LAYERS_MODEL_ID:
        return VideoLayersInput(video=video, separation_instruction="each moving object apart", max_layers=3)
    return AlephInput(
        prompt="turn it into a noir film", video=video, keyframes=[Keyframe(uri=image, seconds=1.0)], seed=7
    )


async def round_trip(
    client: ScenarioClient, model_id: str, sample_clip: Path, sample_image: Path, out: Path
) -> dict[str, Any]:
    clip = await client.uploads.upload_file(sample_clip)
    assert clip.kind == "video"
    assert clip.properties.size == await asyncio.to_thread(os.path.getsize, sample_clip)
    image = await client.assets.create_image(sample_image)
    assert image.kind == "image"
    body = _body(model_id, clip.id, image.id)

    estimate = await client.generate.estimate(model_id, body)
    assert estimate.creative_units_cost > 0

    submission = await client.generate.run(model_id, body)
    assert submission.reconciled is False
    assert submission.job.metadata.input == {**body.to_body(), "modelId": model_id}

    updates: list[JobStatus] = []
    job = await client.jobs.wait(
        submission.job_id, timeout_seconds=60, on_update=lambda j: updates.append(j.status)
    )
    assert job.status is JobStatus.SUCCESS, job.metadata.error
    assert updates[-1] is JobStatus.SUCCESS
    assert job.metadata.asset_ids

    downloads = [
        await client.assets.download(asset_id, out / model_id / f"output-{n}")
        for n, asset_id in enumerate(job.metadata.asset_ids)
    ]
    probes = []
    for downloaded in downloads:
        assert downloaded.sha256 == hashlib.sha256(downloaded.path.read_bytes()).hexdigest()
        probe = await asyncio.to_thread(probe_video, downloaded.path)
        assert probe.nb_frames > 0
        assert probe.mime_type == downloaded.mime_type
        probes.append(probe)
    if model_id == VIDEO_LAYERS_MODEL_ID:
        assert 1 <= len(probes) <= 3
        assert all(probe.has_alpha for probe in probes), "layers carry transparency"
        assert sorted(d.output_index for d in downloads) == list(range(len(downloads)))  # type: ignore[type-var]
    else:
        assert len(probes) == 1
    return {"job": job, "downloads": downloads}


@pytest.mark.parametrize("model_id", [VIDEO_LAYERS_MODEL_ID, ALEPH_MODEL_ID])
async def test_round_trip_over_asgi(
    emulator_app: FastAPI,
    emulator_state: EmulatorState,
    model_id: str,
    sample_clip: Path,
    sample_image: Path,
    tmp_path: Path,
) -> None:
    async with make_client(ASGI_BASE_URL, transport=httpx.ASGITransport(app=emulator_app)) as client:
        await round_trip(client, model_id, sample_clip, sample_image, tmp_path)
    stats = emulator_state.stats()
    assert stats["jobs_created"] == 1
    assert stats["dry_runs"] == 1


@pytest.mark.parametrize("model_id", [VIDEO_LAYERS_MODEL_ID, ALEPH_MODEL_ID])
async def test_round_trip_over_loopback(
    live_client: ScenarioClient,
    control: Control,
    model_id: str,
    sample_clip: Path,
    sample_image: Path,
    tmp_path: Path,
) -> None:
    await round_trip(live_client, model_id, sample_clip, sample_image, tmp_path)
    stats = await control.stats()
    assert stats["jobs_created"] == 1
    assert stats["uploads_created"] == 1


# ---------------------------------------------------------------------------------------------
# Faults, on the live server
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 s, 160x120 clip: the fault tests care about the wire, not the pixels; keep jobs quick."""
    path = tmp_path_factory.mktemp("short-clip") / "short.mp4"
    video.make_sample_clip(path, seconds=1.0, width=160, height=120, fps=12, moving_objects=1)
    return path


async def prepare(client: ScenarioClient, clip_path: Path) -> tuple[str, AlephInput]:
    """Uploads the clip; returns its asset id and an Aleph body using it."""
    clip = await client.uploads.upload_file(clip_path)
    return clip.id, AlephInput(prompt="make it look like a watercolour", video=clip.id, seed=1)


async def test_status_503_with_retry_after_on_job_polls_is_retried(
    live_client: ScenarioClient, control: Control, short_clip: Path
) -> None:
    _, body = await prepare(live_client, short_clip)
    submission = await live_client.generate.run(ALEPH_MODEL_ID, body)
    await control.faults({"route": GET_JOB, "kind": "status", "status": 503, "retry_after": 1, "count": 2})
    started = asyncio.get_running_loop().time()
    job = await live_client.jobs.wait(submission.job_id, timeout_seconds=60)
    assert job.status is JobStatus.SUCCESS
    assert asyncio.get_running_loop().time() - started >= 2.0  # Retry-After honoured, twice
    stats = await control.stats()
    assert stats["faults_fired"]
    assert stats["requests"][GET_JOB] >= 3


async def test_reset_on_a_get_is_retried(
    live_client: ScenarioClient, control: Control, short_clip: Path
) -> None:
    _, body = await prepare(live_client, short_clip)
    submission = await live_client.generate.run(ALEPH_MODEL_ID, body)
    await control.faults({"route": GET_JOB, "kind": "reset", "count": 2})
    job = await live_client.jobs.wait(submission.job_id, timeout_seconds=60)
    assert job.status is JobStatus.SUCCESS
    assert (await control.stats())["requests"][GET_JOB] >= 3


async def test_503_on_submit_creates_exactly_one_job(
    live_client: ScenarioClient, control: Control, short_clip: Path
) -> None:
    _, body = await prepare(live_client, short_clip)
    await control.faults({"route": GENERATE, "kind": "status", "status": 503})
    submission = await live_client.generate.run(ALEPH_MODEL_ID, body)
    stats = await control.stats()
    assert stats["jobs_created"] == 1
    assert stats["requests"][GENERATE] == 2  # the 503 came before any job: listing proved it, sent once more
    job = await live_client.jobs.get(submission.job_id)
    assert job.metadata.input == {**body.to_body(), "modelId": ALEPH_MODEL_ID}


async def test_reset_after_accept_on_submit_is_reconciled_to_the_one_job(
    live_client: ScenarioClient, control: Control, short_clip: Path
) -> None:
    _, body = await prepare(live_client, short_clip)
    await control.faults({"route": GENERATE, "kind": "reset_after_accept"})
    submission = await live_client.generate.run(ALEPH_MODEL_ID, body)
    stats = await control.stats()
    assert stats["jobs_created"] == 1
    assert stats["requests"][GENERATE] == 1  # never sent again
    assert submission.reconciled is True
    listed = [job.job_id async for job in live_client.jobs.list(type="custom")]
    assert listed == [submission.job_id]
    job = await live_client.jobs.wait(submission.job_id, timeout_seconds=60)
    assert job.status is JobStatus.SUCCESS


async def test_a_delay_longer_than_the_timeout_is_retried(
    live_emulator: RunningEmulator, control: Control, short_clip: Path
) -> None:
    async with make_client(live_emulator.base_url, timeout=1.0) as client:
        _, body = await prepare(client, short_clip)
        submission = await client.generate.run(ALEPH_MODEL_ID, body)
        await control.faults({"route": GET_JOB, "kind": "delay", "seconds": 2.5})
        job = await client.jobs.get(submission.job_id)
    assert job.job_id == submission.job_id
    assert (await control.stats())["requests"][GET_JOB] == 2


async def test_truncated_download_recovers_intact(
    live_client: ScenarioClient,
    live_emulator: RunningEmulator,
    control: Control,
    short_clip: Path,
    tmp_path: Path,
) -> None:
    _, body = await prepare(live_client, short_clip)
    submission = await live_client.generate.run(ALEPH_MODEL_ID, body)
    job = await live_client.jobs.wait(submission.job_id, timeout_seconds=60)
    asset_id = job.metadata.asset_ids[0]
    stored = live_emulator.state.assets[asset_id].path
    expected = hashlib.sha256(await asyncio.to_thread(stored.read_bytes)).hexdigest()
    await control.faults({"route": GET_FILE, "kind": "truncate", "keep_fraction": 0.4, "count": 2})
    downloaded = await live_client.assets.download(asset_id, tmp_path / "output.mp4", chunk_size=4096)
    assert downloaded.sha256 == expected
    stats = await control.stats()
    assert stats["requests"][GET_FILE] == 3


async def test_an_expired_url_is_renewed(
    live_client: ScenarioClient, live_emulator: RunningEmulator, control: Control, short_clip: Path
) -> None:
    clip = await live_client.uploads.upload_file(short_clip)
    asset = await live_client.assets.get(clip.id)
    await control.advance(live_emulator.state.config.asset_url_ttl_seconds + 5)
    content = b"".join([chunk async for chunk in live_client.assets.stream(asset)])
    assert content == await asyncio.to_thread(short_clip.read_bytes)
    stats = await control.stats()
    assert stats["requests"][GET_FILE] == 2  # the expired URL, then the fresh one
    assert stats["requests"]["GET /v1/assets/{assetId}"] >= 2


async def test_a_failed_job_is_returned_with_error_and_hint(
    live_client: ScenarioClient, control: Control, short_clip: Path
) -> None:
    _, body = await prepare(live_client, short_clip)
    await control.faults(
        {"route": GENERATE, "kind": "fail_job", "error": "GPU lost", "hint": "submit it again"}
    )
    submission = await live_client.generate.run(ALEPH_MODEL_ID, body)
    job = await live_client.jobs.wait(submission.job_id, timeout_seconds=60)
    assert job.status is JobStatus.FAILURE
    assert job.metadata.error == "GPU lost"
    assert job.metadata.hint == "submit it again"


async def test_the_concurrency_ceiling_is_a_rate_limit_and_creates_nothing(
    live_client: ScenarioClient, control: Control, short_clip: Path
) -> None:
    _, body = await prepare(live_client, short_clip)
    await control.configure(concurrency_ceiling=1, job_seconds=30)
    first = await live_client.generate.run(ALEPH_MODEL_ID, body)
    with pytest.raises(RateLimitError) as caught:
        await live_client.generate.run(ALEPH_MODEL_ID, body)
    assert caught.value.action_name == "parallel-custom-jobs"
    assert caught.value.action_limit == 1
    stats = await control.stats()
    assert stats["jobs_created"] == 1
    assert stats["requests"][GENERATE] == 2  # refused once, not retried, not reconciled
    assert first.job.status is not JobStatus.FAILURE


async def test_a_bad_request_carries_the_reason(
    live_client: ScenarioClient, control: Control, short_clip: Path
) -> None:
    clip_id, _ = await prepare(live_client, short_clip)
    with pytest.raises(BadRequestError) as caught:
        await live_client.generate.run(VIDEO_LAYERS_MODEL_ID, {"video": clip_id, "maxLayers": 3})
    assert caught.value.status_code == 400
    assert caught.value.reason
    assert "separationInstruction" in caught.value.reason
    assert str(caught.value).startswith(f"POST /v1/generate/custom/{VIDEO_LAYERS_MODEL_ID} answered 400: ")
    assert (await control.stats())["jobs_created"] == 0
