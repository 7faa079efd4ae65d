"""Both flows end to end against the live emulator: outputs match the manifest, on disk and in S3."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest

from prefect_scenario.flows import ScenarioRunResult, aleph_edit, video_to_layers
from prefect_scenario.validation import KeyframeSpec
from support.emulator import ALEPH, LAYERS, stats
from support.files import check_local_outputs, check_manifest, size_of
from support.prefect_api import artifacts, events
from support.s3 import SECRET_KEY, s3_client

INSTRUCTION = "each moving object apart from the background"
JOB_EVENTS = {"scenario.job.submitted", "scenario.job.completed", "scenario.outputs.stored"}


def _embedded_jpeg(markdown: str) -> bytes:
    match = re.search(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert match, "no embedded preview"
    return base64.b64decode(match.group(1))


async def _check_ui_record(flow_run_id: Any, flow_slug: str, result: ScenarioRunResult) -> None:
    """Artifacts (summary with picture, outputs table, progress) and events of one run."""
    listed = await artifacts(flow_run_id)
    found = {artifact.key: artifact for artifact in listed if artifact.key}
    summary = found[f"{flow_slug}-summary"]
    assert result.job_id in summary.data
    assert "Estimated" in summary.data
    assert "Billed" in summary.data
    assert "| wait |" in summary.data
    jpeg = _embedded_jpeg(summary.data)
    assert jpeg.startswith(b"\xff\xd8")
    assert len(jpeg) < 60_000
    table = found[f"{flow_slug}-outputs"]
    assert table.type == "table"
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [row["stored_at"] for row in rows] == [output.location for output in result.outputs]
    for row, output in zip(rows, result.outputs, strict=True):
        assert row["sha256"] == f"{output.sha256[:12]}…"  # short here; whole in the result and manifest
    labels = [row["output"] for row in rows]
    if flow_slug == "video-to-layers":
        assert labels == ["background", *(f"layer {n}" for n in range(1, len(rows)))]
    else:
        assert labels == [f"output {n}" for n in range(len(rows))]
    # The documented key: scenario-job-<id>, the id's own "job_" not said twice.
    progress = found[f"scenario-job-{result.job_id.lower().removeprefix('job_')}"]
    assert progress.type == "progress"
    assert float(progress.data) == 100.0
    received = await events(flow_run_id, expect=JOB_EVENTS)
    names = {event.event for event in received}
    assert names >= JOB_EVENTS
    stored = next(event for event in received if event.event == "scenario.outputs.stored")
    assert [o["sha256"] for o in stored.payload["outputs"]] == [o.sha256 for o in result.outputs]


async def test_video_to_layers_stores_every_layer(
    live_emulator: Any, credentials: Any, sample_clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    state = await video_to_layers(
        str(sample_clip),
        INSTRUCTION,
        max_layers=3,
        destination=str(out),
        credentials=credentials,
        return_state=True,
    )
    result: ScenarioRunResult = await state.aresult()

    assert result.model_id == LAYERS
    assert result.status == "success"
    assert not result.reused
    assert result.inputs["maxLayers"] == 3
    assert result.inputs["video"].startswith("asset_")
    assert result.sources == {"video": str(sample_clip)}
    # Two moving objects and the background.
    assert [o.output_index for o in result.outputs] == [0, 1, 2]
    assert all(o.mime_type == "video/webm" for o in result.outputs)
    check_local_outputs(result, out)
    check_manifest(result.to_manifest(), result, out)
    assert result.creative_units_cost is not None
    assert result.creative_units_cost > 0
    assert result.estimated_creative_units == result.creative_units_cost
    timings = result.timings
    assert timings.wait_seconds > 0
    assert timings.download_seconds > 0
    assert timings.total_seconds >= timings.upload_seconds + timings.wait_seconds + timings.download_seconds
    assert result.preview is not None
    assert Path(result.preview).name == "contact-sheet.jpg"
    assert size_of(result.preview) < 60_000
    counters = stats(live_emulator)
    assert (counters["jobs_created"], counters["uploads_created"]) == (1, 1)
    await _check_ui_record(state.state_details.flow_run_id, "video-to-layers", result)


async def test_aleph_edit_with_a_keyframe(
    live_emulator: Any, credentials: Any, sample_clip: Path, sample_image: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    state = await aleph_edit(
        str(sample_clip),
        "turn it into a watercolour painting",
        keyframes=[KeyframeSpec(image=str(sample_image), seconds=1.5)],
        seed=7,
        destination=str(out),
        credentials=credentials,
        return_state=True,
    )
    result: ScenarioRunResult = await state.aresult()

    assert result.model_id == ALEPH
    assert result.status == "success"
    keyframe = result.inputs["keyframes"][0]
    assert keyframe["seconds"] == 1.5
    assert keyframe["uri"].startswith("asset_")
    assert result.inputs["seed"] == 7
    assert "promptImage" not in result.inputs
    assert result.sources["keyframes[0]"] == str(sample_image)
    assert len(result.outputs) == 1
    assert result.outputs[0].mime_type == "video/mp4"
    check_local_outputs(result, out)
    check_manifest(result.to_manifest(), result, out)
    assert result.preview is not None
    assert Path(result.preview).name == "first-frames.jpg"
    # The clip and the keyframe image.
    assert stats(live_emulator)["uploads_created"] == 2
    await _check_ui_record(state.state_details.flow_run_id, "aleph-edit", result)


def s3_put(endpoint: str, bucket: str, key: str, file: Path) -> None:
    s3_client(endpoint).put_object(Bucket=bucket, Key=key, Body=file.read_bytes())


@pytest.mark.parametrize("flow_name", ["video-to-layers", "aleph-edit"])
async def test_outputs_go_to_an_s3_bucket(
    flow_name: str,
    live_emulator: Any,
    credentials: Any,
    sample_clip: Path,
    s3_bucket: Any,
    moto_server: str,
) -> None:
    common: dict[str, Any] = {
        "destination": "runs",
        "destination_storage": s3_bucket,
        "credentials": credentials,
        "return_state": True,
    }
    if flow_name == "video-to-layers":
        # The clip comes from the bucket too.
        s3_put(moto_server, s3_bucket.bucket_name, "inputs/clip.mp4", sample_clip)
        state = await video_to_layers(
            "inputs/clip.mp4", INSTRUCTION, max_layers=2, video_storage=s3_bucket, **common
        )
    else:
        state = await aleph_edit(str(sample_clip), "make it look like a night scene", seed=1, **common)
    result: ScenarioRunResult = await state.aresult()

    assert result.storage == "s3-bucket"
    if flow_name == "video-to-layers":
        assert result.sources == {"video": "s3-bucket:inputs/clip.mp4"}
    assert result.outputs
    s3 = s3_client(moto_server)
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=s3_bucket.bucket_name)["Contents"]}
    for output in result.outputs:
        key = f"runs/{output.path}"
        assert output.location == f"s3://{s3_bucket.bucket_name}/{key}"
        body = s3.get_object(Bucket=s3_bucket.bucket_name, Key=key)["Body"].read()
        assert len(body) == output.size
        assert hashlib.sha256(body).hexdigest() == output.sha256
    manifest = result.to_manifest()
    assert [entry["path"] for entry in manifest["outputs"]] == [o.path for o in result.outputs]
    # The preview is stored beside the outputs, and shown from a presigned URL.
    assert result.preview is not None
    assert result.preview.startswith(f"s3://{s3_bucket.bucket_name}/runs/")
    assert result.preview.removeprefix(f"s3://{s3_bucket.bucket_name}/") in keys
    found = {a.key: a for a in await artifacts(state.state_details.flow_run_id) if a.key}
    image = found[f"{flow_name}-preview"]
    assert image.type == "image"
    async with httpx.AsyncClient(timeout=10) as client:
        picture = await client.get(image.data)
    assert picture.status_code == 200
    assert picture.content.startswith(b"\xff\xd8")
    # Every stored file is a link in the outputs table and the summary: a presigned GET that works.
    table = found[f"{flow_name}-outputs"]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    link = re.compile(r"^\[(?P<name>[^\]]+)\]\((?P<url>http[^)]+)\)$")
    linked = [link.match(row["stored_at"]) for row in rows]
    assert all(linked), [row["stored_at"] for row in rows]
    assert [m["name"] for m in linked if m] == [PurePosixPath(o.path).name for o in result.all_outputs]
    summary = found[f"{flow_name}-summary"].data
    preview_links = re.findall(r"\[([^\]]+)\]\((http[^)]+)\)", summary)
    assert [text for text, _ in preview_links] == [PurePosixPath(p.path).name for p in result.previews]
    async with httpx.AsyncClient(timeout=10) as client:
        for match, output in zip(linked, result.all_outputs, strict=True):
            assert match
            fetched = await client.get(match["url"])
            assert fetched.status_code == 200
            assert hashlib.sha256(fetched.content).hexdigest() == output.sha256
        for _, url in preview_links:
            assert (await client.get(url)).status_code == 200
    assert SECRET_KEY not in json.dumps(rows) + summary
