"""The vendor's own SDK (scenario-sdk 2.4.0, strict response validation) against the live emulator.

If the SDK's typed models accept every answer over real loopback HTTP, the emulator speaks the
API's wire format: every field the SDK requires is there, every enum value is one it knows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from scenario_sdk import Scenario
from scenario_sdk.types.job_retrieve_response import Job as SdkJob

from prefect_scenario.emulator import RunningEmulator
from prefect_scenario.models import ALEPH_MODEL_ID, VIDEO_LAYERS_MODEL_ID
from support.wire import data_url, split

KEY, SECRET = "sdk-key", "sdk-secret"
TERMINAL = {"success", "failure", "canceled"}


@pytest.fixture
def sdk(live_emulator: RunningEmulator) -> Iterator[Scenario]:
    """A strictly validating SDK client on the live emulator (no SDK retries: failures show)."""
    live_emulator.state.configure(job_seconds=0.2)
    client = Scenario(
        api_key=KEY,
        api_secret=SECRET,
        base_url=live_emulator.base_url,
        _strict_response_validation=True,
        max_retries=0,
    )
    with client:
        yield client


def wait_for(sdk: Scenario, job_id: str, timeout: float = 30.0) -> SdkJob:
    deadline = time.monotonic() + timeout
    while True:
        job = sdk.jobs.retrieve(job_id).job
        if job.status in TERMINAL:
            return job
        assert time.monotonic() < deadline, f"{job_id} still {job.status}"
        time.sleep(0.05)


def upload_with_sdk(sdk: Scenario, path: Path, parts: int) -> str:
    data = path.read_bytes()
    upload = sdk.uploads.create(
        file_name=path.name, content_type="video/mp4", file_size=len(data), kind="video", parts=parts
    ).upload
    assert upload.status == "pending"
    assert upload.parts is not None
    assert [part.number for part in upload.parts] == list(range(1, parts + 1))
    for part, chunk in zip(upload.parts, split(data, parts), strict=True):
        # Presigned: no auth header, any content type.
        httpx.put(part.url, content=chunk, headers={"Content-Type": "video/mp4"}).raise_for_status()
    assert sdk.uploads.trigger_action(upload.id, action="complete").upload.status == "validating"
    deadline = time.monotonic() + 20
    while True:
        current = sdk.uploads.retrieve(upload.id).upload
        if current.status in ("imported", "failed"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert current.status == "imported", current.error_message
    assert current.entity_id is not None
    assert current.entity_id.startswith("asset_")
    assert current.job_id is not None
    upload_job = sdk.jobs.retrieve(current.job_id).job
    assert upload_job.job_type == "upload"
    assert upload_job.status == "success"
    assert upload_job.metadata.output == {"entityId": current.entity_id}
    return current.entity_id


def test_the_sdk_runs_both_models_end_to_end(
    sdk: Scenario, live_emulator: RunningEmulator, sample_clip: Path, sample_image: Path
) -> None:
    video_id = upload_with_sdk(sdk, sample_clip, parts=3)
    video = sdk.assets.retrieve(video_id).asset
    assert (video.kind, video.mime_type, video.status, video.source) == (
        "video",
        "video/mp4",
        "success",
        "uploaded-video",
    )
    assert video.properties.size == sample_clip.stat().st_size
    assert video.properties.width == 320
    assert video.properties.height == 240
    assert video.properties.duration == pytest.approx(4.0, abs=0.1)

    image = sdk.assets.upload(name="reference.png", image=data_url(sample_image)).asset
    assert (image.kind, image.mime_type, image.source, image.metadata.type) == (
        "image",
        "image/png",
        "uploaded",
        "uploaded",
    )

    for model_id in (ALEPH_MODEL_ID, VIDEO_LAYERS_MODEL_ID):
        model = sdk.models.retrieve(model_id).model
        assert model.id == model_id
        assert model.inputs
    aleph_inputs = {item.name: item for item in sdk.models.retrieve(ALEPH_MODEL_ID).model.inputs or []}
    assert aleph_inputs["video"].max_size == 16_777_216
    assert aleph_inputs["video"].max_duration == 30

    runs = {
        ALEPH_MODEL_ID: {
            "prompt": "make it noir",
            "video": video_id,
            "keyframes": [{"uri": image.id, "at": 0.5}],
        },
        VIDEO_LAYERS_MODEL_ID: {
            "video": video_id,
            "separationInstruction": "each moving shape apart",
            "maxLayers": 2,
        },
    }
    # Both submitted before waiting: the two fake models run side by side.
    started_jobs = {model_id: sdk.generate.run_model(model_id, body=body) for model_id, body in runs.items()}
    for model_id, body in runs.items():
        started = started_jobs[model_id]
        assert started.job.status == "queued"
        assert started.job.job_type == "custom"
        assert started.cost_details is not None
        assert started.cost_details.custom_generation == started.creative_units_cost
        job = wait_for(sdk, started.job.job_id)
        assert job.status == "success", job.metadata
        assert job.metadata.input == {**body, "modelId": model_id}
        assert [entry.status for entry in job.status_history] == [
            "pending",
            "queued",
            "in-progress",
            "success",
        ]
        outputs = [sdk.assets.retrieve(asset_id).asset for asset_id in job.metadata.asset_ids or []]
        assert outputs
        for output in outputs:
            assert output.metadata.parent_job_id == job.job_id
            assert output.source == "video2video"
            fetched = httpx.get(output.url)
            assert fetched.status_code == 200
            assert len(fetched.content) == output.properties.size
            assert fetched.headers["content-type"] == output.mime_type
        link = sdk.assets.download.request(outputs[0].id)
        assert httpx.get(link.url).status_code == 200


def test_a_dry_run_answers_269_and_creates_no_job(
    live_emulator: RunningEmulator, sample_clip: Path, sdk: Scenario
) -> None:
    video_id = upload_with_sdk(sdk, sample_clip, parts=1)
    # The 269 body has no job: only the default (non-strict) client parses it.
    lax = Scenario(api_key=KEY, api_secret=SECRET, base_url=live_emulator.base_url, max_retries=0)
    with lax:
        raw = lax.generate.with_raw_response.run_model(
            ALEPH_MODEL_ID, body={"prompt": "noir", "video": video_id}, dry_run="true"
        )
        assert raw.status_code == 269
        estimate = raw.parse()
    assert estimate.job is None
    assert estimate.creative_units_cost == 40
    assert estimate.creative_units_discount == 0
    assert estimate.cost_details is not None
    assert estimate.cost_details.custom_generation == 40
    assert live_emulator.state.stats()["jobs_created"] == 0


def test_jobs_list_pages_through_short_and_empty_pages(
    live_emulator: RunningEmulator, sample_clip: Path, sdk: Scenario
) -> None:
    # Planned failures run no model: many jobs, quickly, without loading the worker threads.
    live_emulator.state.configure(failure_rate=1.0, job_seconds=0.0)
    video_id = upload_with_sdk(sdk, sample_clip, parts=1)
    created = {
        sdk.generate.run_model(
            VIDEO_LAYERS_MODEL_ID, body={"video": video_id, "separationInstruction": f"split {i}"}
        ).job.job_id
        for i in range(7)
    }
    seen: list[str] = []
    page_sizes: list[int] = []
    token: str | None = None
    while True:
        page = sdk.jobs.list(page_size=4, type="custom", **({"pagination_token": token} if token else {}))
        page_sizes.append(len(page.jobs))
        seen += [job.job_id for job in page.jobs]
        token = page.next_pagination_token
        if not token:
            break
    assert sorted(seen) == sorted(created)  # every job once
    assert 0 in page_sizes
    assert max(page_sizes) < 4

    # The SDK's own auto-pager stops at the first empty page (has_next_page checks for items):
    # clients must follow nextPaginationToken themselves.
    auto = [job.job_id for job in sdk.jobs.list(page_size=4, type="custom")]
    assert len(auto) < len(created)
