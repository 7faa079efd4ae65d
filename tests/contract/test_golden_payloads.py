"""Golden payloads (the examples of scenario-api.md) against our wire models, the SDK's, and the emulator.

Three promises, checked per payload kind:

1. the documented example parses with ``prefect_scenario.models`` (what our client reads);
2. where the example is complete, the SDK's own models accept it too (strict pydantic validation);
3. the emulator's answer parses with the same models, passes the SDK's, and carries at least every
   field of the example (recursively) — so the emulator never answers thinner than the API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ValidationError
from scenario_sdk.types.asset_retrieve_response import AssetRetrieveResponse
from scenario_sdk.types.generate_run_model_response import GenerateRunModelResponse
from scenario_sdk.types.job_list_response import JobListResponse
from scenario_sdk.types.job_retrieve_response import JobRetrieveResponse
from scenario_sdk.types.model_retrieve_response import ModelRetrieveResponse
from scenario_sdk.types.upload_retrieve_response import UploadRetrieveResponse

from prefect_scenario.emulator import EmulatorState, FaultRule
from prefect_scenario.models import (
    ALEPH_MODEL_ID,
    VIDEO_LAYERS_MODEL_ID,
    ApiErrorBody,
    AssetEnvelope,
    CostEstimate,
    GenerateResponse,
    JobEnvelope,
    JobPage,
    JobStatus,
    ModelEnvelope,
    UploadEnvelope,
    UploadStatus,
    WireModel,
)
from support.wire import submit, upload_file, upload_image, upload_video, wait_job

GOLDEN = Path(__file__).parent / "golden"

OURS: dict[str, type[WireModel]] = {
    "generate_response": GenerateResponse,
    "dry_run_269": CostEstimate,
    "job_success": JobEnvelope,
    "job_failure": JobEnvelope,
    "upload_pending": UploadEnvelope,
    "upload_imported": UploadEnvelope,
    "asset": AssetEnvelope,
    "model_aleph_capture": ModelEnvelope,
    "job_list_page": JobPage,
    "error_400": ApiErrorBody,
    "error_404": ApiErrorBody,
    "error_429": ApiErrorBody,
    "error_403_gateway": ApiErrorBody,
    "error_429_cooldown": ApiErrorBody,
}

SDK: dict[str, type[BaseModel]] = {
    "generate_response": GenerateRunModelResponse,
    "job_success": JobRetrieveResponse,
    "job_failure": JobRetrieveResponse,
    "upload_pending": UploadRetrieveResponse,
    "upload_imported": UploadRetrieveResponse,
    "asset": AssetRetrieveResponse,
}


def golden(name: str) -> dict[str, Any]:
    return dict(json.loads((GOLDEN / f"{name}.json").read_text()))


# Objects keyed by data rather than by schema: only their type is compared.
MAPS = {"costDetails", "input", "output"}


def assert_covers(example: Any, actual: Any, where: str = "$") -> None:
    """Every key of ``example`` exists in ``actual``, recursively (lists: item by item)."""
    if isinstance(example, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        if where.rsplit(".", 1)[-1] in MAPS:
            return
        for key, value in example.items():
            assert key in actual, f"{where}.{key} is missing from the emulator's answer"
            assert_covers(value, actual[key], f"{where}.{key}")
    elif isinstance(example, list) and example:
        assert isinstance(actual, list), f"{where}: expected a list"
        assert actual, f"{where}: expected a non-empty list"
        for index, (item, other) in enumerate(zip(example, actual, strict=False)):
            assert_covers(item, other, f"{where}[{index}]")


def test_every_golden_file_is_checked() -> None:
    assert {path.stem for path in GOLDEN.glob("*.json")} == set(OURS)


@pytest.mark.parametrize("name", sorted(OURS))
def test_golden_parses_with_our_models(name: str) -> None:
    parsed = OURS[name].model_validate(golden(name))
    if not name.startswith("error_"):  # error bodies are read-only: trace_id is read as traceId
        # Reading then writing keeps every documented field (the response models keep extras).
        assert_covers(golden(name), parsed.to_wire())


def test_golden_values_read_as_documented() -> None:
    job = JobEnvelope.model_validate(golden("job_failure")).job
    assert job.status is JobStatus.FAILURE
    assert job.status.is_terminal
    assert job.metadata.hint
    assert job.metadata.error
    assert job.model_id == ALEPH_MODEL_ID
    assert ApiErrorBody.model_validate(golden("error_400")).trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert (
        ApiErrorBody.model_validate(golden("error_403_gateway")).text
        == "API Keys cannot access protected resources"
    )
    assert ApiErrorBody.model_validate(golden("error_429")).details == {
        "actionName": "parallel-custom-jobs",
        "actionLimit": 3,
    }
    assert UploadEnvelope.model_validate(golden("upload_imported")).upload.status is UploadStatus.IMPORTED
    aleph = ModelEnvelope.model_validate(golden("model_aleph_capture")).model
    assert [item.name for item in aleph.inputs] == ["prompt", "video", "keyframes", "promptImage"]


@pytest.mark.parametrize("name", sorted(SDK))
def test_complete_goldens_pass_the_sdk_models(name: str) -> None:
    SDK[name].model_validate(golden(name))


def test_the_live_model_capture_lacks_sdk_required_fields() -> None:
    # scenario-api.md section 6: public models come back without createdAt, collectionIds, ...
    # Our ModelInfo accepts the capture; the SDK's strict Model type would not.
    with pytest.raises(ValidationError):
        ModelRetrieveResponse.model_validate(golden("model_aleph_capture"))


def check(name: str, payload: dict[str, Any], sdk_type: type[BaseModel] | None = None) -> None:
    """The emulator's ``payload`` against golden ``name``: our model, the SDK's, and coverage."""
    OURS[name].model_validate(payload)
    if sdk_type is not None:
        sdk_type.model_validate(payload)
    assert_covers(golden(name), payload)


async def test_emulator_answers_match_the_goldens(
    asgi_client: httpx.AsyncClient,
    emulator_state: EmulatorState,
    sample_clip: Path,
    sample_clip_bytes: bytes,
    sample_image: Path,
) -> None:
    data = sample_clip_bytes
    created = await asgi_client.post(
        "uploads",
        json={
            "fileName": "clip.mp4",
            "contentType": "video/mp4",
            "fileSize": len(data),
            "kind": "video",
            "parts": 2,
        },
    )
    check("upload_pending", created.json(), UploadRetrieveResponse)
    video_id = await upload_video(asgi_client, sample_clip)
    imported = (
        await asgi_client.get(f"uploads/{(await upload_file(asgi_client, sample_clip))['id']}")
    ).json()
    check("upload_imported", imported, UploadRetrieveResponse)
    image_id = await upload_image(asgi_client, sample_image)

    body = {"prompt": "noir", "video": video_id, "keyframes": [{"uri": image_id, "seconds": 1.0}]}
    estimate = await submit(asgi_client, ALEPH_MODEL_ID, body, dryRun="true")
    assert estimate.status_code == 269
    check("dry_run_269", estimate.json())
    assert "job" not in estimate.json()

    started = await submit(
        asgi_client,
        VIDEO_LAYERS_MODEL_ID,
        {"video": video_id, "separationInstruction": "apart", "maxLayers": 2},
    )
    check("generate_response", started.json(), GenerateRunModelResponse)
    job = await wait_job(asgi_client, started.json()["job"]["jobId"])
    check("job_success", {"job": job}, JobRetrieveResponse)

    output = (await asgi_client.get(f"assets/{job['metadata']['assetIds'][-1]}")).json()
    check("asset", output, AssetRetrieveResponse)

    emulator_state.add_faults([FaultRule(route="*", kind="fail_job")])
    failed = await wait_job(
        asgi_client, (await submit(asgi_client, ALEPH_MODEL_ID, body)).json()["job"]["jobId"]
    )
    check("job_failure", {"job": failed}, JobRetrieveResponse)

    model = (await asgi_client.get(f"models/{ALEPH_MODEL_ID}")).json()
    check("model_aleph_capture", model, ModelRetrieveResponse)

    page = (await asgi_client.get("jobs", params={"pageSize": 1})).json()
    check("job_list_page", page)
    for item in page["jobs"]:
        JobListResponse.model_validate(item)

    missing = (await asgi_client.get("jobs/job_KqW3aB5cD7eF9gH2jK4mN6pQ")).json()
    check("error_404", missing)
    refused = (await submit(asgi_client, ALEPH_MODEL_ID, {"video": video_id})).json()
    assert ApiErrorBody.model_validate(refused).text == 'Input "prompt" is required'
    assert set(refused) == {"reason", "traceId", "details"}
    # A planned failure runs no model: the job holds the one slot without loading a worker thread.
    emulator_state.configure(concurrency_ceiling=1, failure_rate=1.0, job_seconds=60)
    await submit(asgi_client, ALEPH_MODEL_ID, body)
    throttled = await submit(asgi_client, ALEPH_MODEL_ID, body)
    assert throttled.status_code == 429
    check("error_429", throttled.json())
