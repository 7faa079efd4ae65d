# ruff: noqa: ASYNC240
"""What a run leaves behind: events, a progress artifact, logs, results; and never a secret in them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.events import emit_event

from prefect_scenario.blocks import ScenarioCredentials
from prefect_scenario.manifest import StoredOutput
from prefect_scenario.tasks import (
    download_outputs,
    progress_artifact_key,
    submit_job,
    upload_video,
    wait_for_job,
)
from support.emulator import LAYERS
from support.prefect_api import artifacts, events, flow_run, logs

pytestmark = pytest.mark.usefixtures("prefect_harness")

CANARY_KEY = "canary-KEY-19c2"
CANARY_SECRET = "canary-SECRET-7f3a"


async def test_a_run_leaves_events_artifacts_and_no_secret(
    live_emulator: Any, sample_clip: Path, tmp_path: Path, results_dir: Path
) -> None:
    marker = f"visible-marker-{uuid.uuid4().hex[:8]}"
    credentials = ScenarioCredentials(
        api_key=CANARY_KEY,
        api_secret=CANARY_SECRET,
        base_url=live_emulator.base_url,
        project_id=f"proj_{uuid.uuid4().hex[:12]}",
    )

    @flow
    async def layers(credentials: ScenarioCredentials, destination: str) -> list[StoredOutput]:
        # Positive controls: the readers below must see these, or not seeing the canary proves nothing.
        get_run_logger().info("control %s", marker)
        await acreate_markdown_artifact(f"control {marker}", key=f"control-{marker}")
        emit_event("scenario.control", resource={"prefect.resource.id": f"scenario.control.{marker}"})

        asset = await upload_video(sample_clip, credentials=credentials)
        body = {"video": asset, "separationInstruction": "each moving object apart", "maxLayers": 2}
        submitted = await submit_job(LAYERS, body, credentials=credentials)
        job = await wait_for_job(submitted.job_id, credentials=credentials, timeout_seconds=120)
        return await download_outputs(job, credentials=credentials, destination=destination)

    state = await layers(credentials, str(tmp_path / "out"), return_state=True)
    outputs: list[StoredOutput] = await state.result()
    flow_run_id = state.state_details.flow_run_id
    job_id = outputs[0].path.split("/")[0]

    # -- events ----------------------------------------------------------------------------
    expected = {
        "scenario.job.submitted",
        "scenario.job.completed",
        "scenario.outputs.stored",
        "scenario.control",
    }
    found = await events(flow_run_id, expect=expected, prefix="scenario.")
    by_name = {event.event: event for event in found}
    assert expected <= set(by_name)
    for name in ("scenario.job.submitted", "scenario.job.completed", "scenario.outputs.stored"):
        event = by_name[name]
        assert event.resource.id == f"scenario.job.{job_id}"
        assert event.resource.get("prefect.resource.name") == job_id
        assert event.resource.get("scenario.model_id") == LAYERS
        roles = {(r.id, r.role) for r in event.related}
        assert (f"scenario.model.{LAYERS}", "model") in roles
        assert (f"prefect.flow-run.{flow_run_id}", "flow-run") in roles
        assert event.payload["job_id"] == job_id
        assert event.payload["model_id"] == LAYERS
    submitted_payload = by_name["scenario.job.submitted"].payload
    assert submitted_payload["creative_units"] > 0
    assert submitted_payload["estimated_creative_units"] > 0
    completed = by_name["scenario.job.completed"]
    assert completed.payload["status"] == "success"
    assert {(r.id, r.role) for r in completed.related} >= {
        (f"scenario.asset.{o.asset_id}", "output") for o in outputs
    }
    stored = by_name["scenario.outputs.stored"].payload
    assert stored["video"] == outputs[0].location  # the first video by output index
    assert [o["asset_id"] for o in stored["outputs"]] == [o.asset_id for o in outputs]
    assert [o["sha256"] for o in stored["outputs"]] == [o.sha256 for o in outputs]
    assert all(o["location"] and o["size"] > 0 and o["mime_type"] for o in stored["outputs"])

    # -- the progress artifact -------------------------------------------------------------
    run_artifacts = await artifacts(flow_run_id)
    progress = [a for a in run_artifacts if a.key == progress_artifact_key(job_id)]
    assert len(progress) == 1
    assert progress[0].type == "progress"
    assert float(progress[0].data) == 100.0

    # -- logs: one line per status change, the estimate -------------------------------------
    lines = [log.message for log in await logs(flow_run_id)]
    assert any(f"Scenario job estimate for {LAYERS}:" in line for line in lines)
    assert any(line.startswith(f"Scenario job {job_id} succeeded with 2 output(s)") for line in lines)
    status_lines = [line for line in lines if line.startswith(f"Scenario job {job_id} is ")]
    assert len(status_lines) == len(set(line.split(" (")[0] for line in status_lines))

    # -- no secret anywhere ----------------------------------------------------------------
    run = await flow_run(flow_run_id)
    surfaces = {
        "logs": "\n".join(lines),
        "artifacts": json.dumps([a.model_dump(mode="json") for a in run_artifacts]),
        "events": json.dumps([e.model_dump(mode="json") for e in found]),
        "flow run": run.model_dump_json(),
        "result": json.dumps([o.model_dump(mode="json") for o in outputs]),
    }
    for surface in ("logs", "artifacts", "events"):
        assert marker in surfaces[surface], (
            f"the {surface} reader sees nothing: the check below would prove nothing"
        )
    for surface, text in surfaces.items():
        assert CANARY_SECRET not in text, f"the API secret leaked into {surface}"
        assert CANARY_KEY not in text, f"the API key leaked into {surface}"
    persisted = [p for p in results_dir.rglob("*") if p.is_file()]
    assert persisted, "no persisted result to check"
    for path in persisted:
        data = path.read_bytes()
        assert CANARY_SECRET.encode() not in data, f"the API secret leaked into the result file {path.name}"
        assert CANARY_KEY.encode() not in data, f"the API key leaked into the result file {path.name}"
