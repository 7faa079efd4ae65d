"""Job lifecycle, outputs of the fake models, cancel, the concurrency ceiling and the stats counters."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from prefect_scenario import video
from prefect_scenario.emulator import EmulatorState
from prefect_scenario.emulator.service.clock import parse_iso
from prefect_scenario.emulator.service.records import AssetRecord
from prefect_scenario.models import ALEPH_MODEL_ID, VIDEO_LAYERS_MODEL_ID, JobEnvelope
from support.wire import control, stats, submit, upload_image, upload_video, wait_job


def layers_body(video_id: str, max_layers: int = 2) -> dict[str, object]:
    return {"video": video_id, "separationInstruction": "each moving shape apart", "maxLayers": max_layers}


async def test_a_job_moves_queued_then_in_progress_with_rising_progress_then_success(
    asgi_client: httpx.AsyncClient, emulator_state: EmulatorState, sample_clip: Path
) -> None:
    video_id = await upload_video(asgi_client, sample_clip)
    emulator_state.configure(job_seconds=1.2, queue_seconds=0.2)
    started = (await submit(asgi_client, VIDEO_LAYERS_MODEL_ID, layers_body(video_id, 1))).json()["job"]
    assert started["status"] == "queued"
    assert started["progress"] == 0
    assert [entry["status"] for entry in started["statusHistory"]] == ["pending", "queued"]
    seen: list[tuple[str, float]] = []
    while True:
        job = (await asgi_client.get(f"jobs/{started['jobId']}")).json()["job"]
        seen.append((job["status"], job["progress"]))
        if job["status"] == "success":
            break
        await asyncio.sleep(0.05)
    statuses = [status for status, _ in seen]
    assert statuses[0] in ("queued", "in-progress")
    assert "in-progress" in statuses
    running = [progress for status, progress in seen if status == "in-progress"]
    assert running == sorted(running)
    assert len(set(running)) > 3
    assert 0 < running[0] < running[-1] < 1
    assert seen[-1] == ("success", 1)
    history = job["statusHistory"]
    assert [entry["status"] for entry in history] == ["pending", "queued", "in-progress", "success"]
    dates = [parse_iso(entry["date"]) for entry in history]
    assert dates == sorted(dates)
    # Success no earlier than job_seconds after creation (dates carry milliseconds: 1 ms of slack).
    assert dates[-1] - dates[0] >= 1.2 - 0.001
    assert job["updatedAt"] == history[-1]["date"]
    assert job["createdAt"] == history[0]["date"]
    assert job["billing"] == {"cuCost": 12, "cuDiscount": 0}
    JobEnvelope.model_validate({"job": job})


async def test_advancing_the_clock_finishes_a_long_job_once_its_model_is_done(
    asgi_client: httpx.AsyncClient, emulator_state: EmulatorState, sample_clip: Path
) -> None:
    video_id = await upload_video(asgi_client, sample_clip)
    emulator_state.configure(job_seconds=3600)
    job_id = (await submit(asgi_client, VIDEO_LAYERS_MODEL_ID, layers_body(video_id, 1))).json()["job"][
        "jobId"
    ]
    await asyncio.sleep(0.5)
    assert (await asgi_client.get(f"jobs/{job_id}")).json()["job"]["status"] == "in-progress"
    await control(asgi_client, "clock", {"advance_seconds": 3600})
    job = await wait_job(asgi_client, job_id, timeout=20)
    assert job["status"] == "success"
    dates = [parse_iso(entry["date"]) for entry in job["statusHistory"]]
    assert dates[-1] - dates[0] >= 3600


async def test_layers_outputs_are_webm_in_output_order_within_max_layers(
    asgi_client: httpx.AsyncClient, emulator_state: EmulatorState, sample_clip: Path
) -> None:
    video_id = await upload_video(asgi_client, sample_clip)
    job = await wait_job(
        asgi_client,
        (await submit(asgi_client, VIDEO_LAYERS_MODEL_ID, layers_body(video_id, 2))).json()["job"]["jobId"],
    )
    assert job["status"] == "success"
    assets = [
        (await asgi_client.get(f"assets/{asset_id}")).json()["asset"]
        for asset_id in job["metadata"]["assetIds"]
    ]
    # Two moving objects and the background, capped at 2: the background counts toward maxLayers.
    assert len(assets) == 2
    assert [asset["outputIndex"] for asset in assets] == list(range(len(assets)))
    for asset in assets:
        assert asset["mimeType"] == "video/webm"
        assert asset["kind"] == "video"
        assert asset["metadata"]["parentJobId"] == job["jobId"]
        assert asset["metadata"]["modelId"] == VIDEO_LAYERS_MODEL_ID
        assert asset["metadata"]["outputIndex"] == asset["outputIndex"]
        assert asset["source"] == "video2video"
        assert asset["properties"]["codecName"] == "vp9"
        assert asset["properties"]["nbFrames"] == 96
        assert (asset["properties"]["width"], asset["properties"]["height"]) == (320, 240)
    # The object layer carries transparency (VP9 with an alpha plane).
    probe = await asyncio.to_thread(video.probe_video, emulator_state.assets[assets[1]["id"]].path)
    assert probe.has_alpha


async def test_aleph_output_is_one_mp4_of_the_clip(
    asgi_client: httpx.AsyncClient, emulator_state: EmulatorState, sample_clip: Path, sample_image: Path
) -> None:
    video_id = await upload_video(asgi_client, sample_clip)
    image_id = await upload_image(asgi_client, sample_image)
    body = {
        "prompt": "make it noir",
        "video": video_id,
        "promptImage": [{"uri": image_id, "positionType": "timestamp", "timestampSeconds": 2}],
    }
    job = await wait_job(
        asgi_client, (await submit(asgi_client, ALEPH_MODEL_ID, body)).json()["job"]["jobId"]
    )
    assert job["status"] == "success"
    assert job["metadata"]["input"] == {**body, "modelId": ALEPH_MODEL_ID}
    (asset_id,) = job["metadata"]["assetIds"]
    asset = (await asgi_client.get(f"assets/{asset_id}")).json()["asset"]
    assert (asset["mimeType"], asset["outputIndex"], asset["properties"]["codecName"]) == (
        "video/mp4",
        0,
        "h264",
    )
    assert asset["properties"]["duration"] == pytest.approx(4.0, abs=0.1)
    probe = await asyncio.to_thread(video.probe_video, emulator_state.assets[asset_id].path)
    assert probe.container == "mp4"
    assert probe.nb_frames == 96


async def test_a_model_that_raises_fails_the_job_with_error_and_hint(
    asgi_client: httpx.AsyncClient, emulator_state: EmulatorState, tmp_path: Path, sample_clip: Path
) -> None:
    # An asset whose file is not a video: the fake model itself fails on it.
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    emulator_state.add_asset(
        AssetRecord(
            id="asset_Br0kenBr0kenBr0kenBr0ken1",
            path=broken,
            mime_type="video/mp4",
            kind="video",
            source="uploaded-video",
            properties={"size": 11, "duration": 4.0},
            created_at=0,
        )
    )
    job = await wait_job(
        asgi_client,
        (
            await submit(asgi_client, VIDEO_LAYERS_MODEL_ID, layers_body("asset_Br0kenBr0kenBr0kenBr0ken1"))
        ).json()["job"]["jobId"],
    )
    assert job["status"] == "failure"
    assert job["metadata"]["error"].startswith("Generation failed")
    assert job["metadata"]["hint"]
    assert [entry["status"] for entry in job["statusHistory"]][-1] == "failure"


async def test_cancel_is_refused_for_custom_jobs_unless_allowed(
    asgi_client: httpx.AsyncClient, emulator_state: EmulatorState, sample_clip: Path
) -> None:
    video_id = await upload_video(asgi_client, sample_clip)
    emulator_state.configure(job_seconds=60, failure_rate=1.0)
    job_id = (await submit(asgi_client, VIDEO_LAYERS_MODEL_ID, layers_body(video_id))).json()["job"]["jobId"]
    refused = await asgi_client.post(f"jobs/{job_id}/action", json={"action": "cancel"})
    assert refused.status_code == 400
    assert refused.json()["reason"] == "Cannot cancel this type of job"
    await control(asgi_client, "config", {"allow_cancel": True})
    canceled = await asgi_client.post(f"jobs/{job_id}/action", json={"action": "cancel"})
    assert canceled.status_code == 200
    job = canceled.json()["job"]
    assert job["status"] == "canceled"
    assert job["statusHistory"][-1]["status"] == "canceled"
    again = await asgi_client.post(f"jobs/{job_id}/action", json={"action": "cancel"})
    assert again.status_code == 400
    assert "already canceled" in again.json()["reason"]
    assert (await asgi_client.post(f"jobs/{job_id}/action", json={"action": "pause"})).status_code == 400
    missing = await asgi_client.post("jobs/job_nope/action", json={"action": "cancel"})
    assert missing.status_code == 404
    assert missing.json()["reason"] == "Job job_nope not found"


async def test_the_concurrency_ceiling_answers_429_with_details(
    asgi_client: httpx.AsyncClient, emulator_state: EmulatorState, sample_clip: Path
) -> None:
    video_id = await upload_video(asgi_client, sample_clip)
    emulator_state.configure(job_seconds=0.6, failure_rate=1.0, concurrency_ceiling=2)
    first = [await submit(asgi_client, VIDEO_LAYERS_MODEL_ID, layers_body(video_id)) for _ in range(2)]
    assert [response.status_code for response in first] == [200, 200]
    refused = await submit(asgi_client, VIDEO_LAYERS_MODEL_ID, layers_body(video_id))
    assert refused.status_code == 429
    assert refused.json()["details"] == {"actionName": "parallel-custom-jobs", "actionLimit": 2}
    # A dry run is never throttled: it creates no job.
    assert (
        await submit(asgi_client, VIDEO_LAYERS_MODEL_ID, layers_body(video_id), dryRun="true")
    ).status_code == 269
    counters = await stats(asgi_client)
    assert (counters["jobs_created"], counters["jobs_in_flight"], counters["max_jobs_in_flight"]) == (2, 2, 2)
    for response in first:
        await wait_job(asgi_client, response.json()["job"]["jobId"])
    assert (await submit(asgi_client, VIDEO_LAYERS_MODEL_ID, layers_body(video_id))).status_code == 200
    counters = await stats(asgi_client)
    assert (counters["jobs_created"], counters["jobs_in_flight"], counters["max_jobs_in_flight"]) == (3, 1, 2)


async def test_stats_count_jobs_uploads_and_requests_by_route_template(
    asgi_client: httpx.AsyncClient, emulator_state: EmulatorState, sample_clip: Path
) -> None:
    video_id = await upload_video(asgi_client, sample_clip, parts=2)
    emulator_state.configure(failure_rate=1.0)
    job_id = (await submit(asgi_client, ALEPH_MODEL_ID, {"prompt": "x", "video": video_id})).json()["job"][
        "jobId"
    ]
    await submit(asgi_client, ALEPH_MODEL_ID, {"prompt": "x", "video": video_id}, dryRun="true")
    await wait_job(asgi_client, job_id)
    counters = await stats(asgi_client)
    assert counters["jobs_created"] == 1  # the upload's own job and the dry run do not count
    assert counters["uploads_created"] == 1
    assert counters["dry_runs"] == 1
    requests = counters["requests"]
    assert requests["POST /v1/uploads"] == 1
    assert requests["PUT /parts/{uploadId}/{partNumber}"] == 2
    assert requests["POST /v1/uploads/{uploadId}/action"] == 1
    assert requests["POST /v1/generate/custom/{modelId}"] == 2
    assert requests["GET /v1/jobs/{jobId}"] >= 1
    assert not any(key.startswith(("GET /_emulator", "POST /_emulator")) for key in requests)
    await control(asgi_client, "reset", {})
    after = await stats(asgi_client)
    assert (after["jobs_created"], after["uploads_created"], after["requests"], after["jobs"]) == (
        0,
        0,
        {},
        0,
    )
    assert emulator_state.config.failure_rate == 1.0  # settings survive a reset
