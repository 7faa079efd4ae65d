"""A canary API secret never reaches anything Prefect records about a flow run.

Three ways in, each a separate flow run: a saved block passed by name, a block instance passed as a
parameter, and the SDK's environment variables (the CLI's way) on a run whose job fails (errors and
failure logs are where secrets usually leak). Everything is read back from the Prefect API and from
the result storage on disk, not from memory.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

from prefect_scenario.blocks import ScenarioCredentials
from prefect_scenario.flows import aleph_edit, video_to_layers
from prefect_scenario.validation import KeyframeSpec
from support.emulator import CANARY_SECRET, GENERATE_ROUTE, faults
from support.prefect_api import artifacts, events, flow_run, logs, task_runs

CANARY_KEY = "canary-key-" + uuid.uuid4().hex


def _result_files_text(results_dir: Path) -> str:
    """Every persisted result, with each record's base64 payload decoded (a pickle holds text)."""
    parts: list[str] = []
    for file in results_dir.rglob("*"):
        if not file.is_file():
            continue
        raw = file.read_bytes()
        parts.append(raw.decode("latin-1"))
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        payload = record.get("result") if isinstance(record, dict) else None
        if isinstance(payload, str):
            with contextlib.suppress(binascii.Error, ValueError):
                parts.append(base64.b64decode(payload).decode("latin-1"))
    return "\n".join(parts)


async def _run_record(flow_run_id: Any, expect_events: set[str]) -> str:
    """Everything the Prefect API keeps about a flow run, as one string."""
    run = await flow_run(flow_run_id)
    parts = [run.model_dump_json()]
    parts += [task_run.model_dump_json() for task_run in await task_runs(flow_run_id)]
    parts += [log.model_dump_json() for log in await logs(flow_run_id)]
    parts += [artifact.model_dump_json() for artifact in await artifacts(flow_run_id)]
    parts += [event.model_dump_json() for event in await events(flow_run_id, expect=expect_events)]
    return "\n".join(parts)


async def test_canary_secret_never_recorded(
    live_emulator: Any,
    project_id: str,
    sample_clip: Path,
    sample_image: Path,
    tmp_path: Path,
    results_dir: Path,
    monkeypatch: Any,
) -> None:
    credentials = ScenarioCredentials(
        api_key=CANARY_KEY, api_secret=CANARY_SECRET, base_url=live_emulator.base_url, project_id=project_id
    )
    block_name = f"flows-canary-{uuid.uuid4().hex[:8]}"
    await credentials.asave(block_name, overwrite=True)
    out = str(tmp_path / "out")

    by_name = await video_to_layers(
        str(sample_clip), "each moving shape apart", max_layers=2, destination=out,
        credentials=block_name, return_state=True,
    )  # fmt: skip
    by_instance = await aleph_edit(
        str(sample_clip), "make it snow", keyframes=[KeyframeSpec(image=str(sample_image), at=0.5)],
        seed=3, destination=out, credentials=credentials, return_state=True,
    )  # fmt: skip
    monkeypatch.setenv("SCENARIO_SDK_API_KEY", CANARY_KEY)
    monkeypatch.setenv("SCENARIO_SDK_API_SECRET", CANARY_SECRET)
    monkeypatch.setenv("SCENARIO_BASE_URL", live_emulator.base_url)
    monkeypatch.setenv("SCENARIO_PROJECT_ID", project_id)
    faults(
        live_emulator,
        {"route": GENERATE_ROUTE, "kind": "fail_job", "error": "model crashed", "hint": "retry"},
    )
    from_env = await aleph_edit(str(sample_clip), "make it rain", seed=4, destination=out, return_state=True)

    assert by_name.is_completed()
    assert by_instance.is_completed()
    assert from_env.is_failed()
    succeeded = {"scenario.job.submitted", "scenario.job.completed", "scenario.outputs.stored"}
    records = [
        await _run_record(by_name.state_details.flow_run_id, succeeded),
        await _run_record(by_instance.state_details.flow_run_id, succeeded),
        await _run_record(from_env.state_details.flow_run_id, {"scenario.job.failed"}),
    ]
    results = [
        repr(await by_name.aresult()),
        repr(await by_instance.aresult()),
        repr(from_env.data),
        str(from_env.message),
    ]
    stored = _result_files_text(results_dir)
    haystack = "\n".join([*records, *results, stored])

    # The haystack is real: it holds the runs' jobs, their failure, their events and artifacts.
    assert (await by_name.aresult()).job_id in records[0]
    assert "model crashed" in records[2]
    assert "scenario.job.failed" in records[2]
    assert "video-to-layers-summary" in records[0]
    assert "data:image/jpeg;base64," in records[0]
    assert "ScenarioRunResult" in stored or "SubmittedJob" in stored
    # ... and holds neither the secret nor the key.
    # Where a leak would be first: the block passed as a parameter is recorded, masked.
    recorded = (await flow_run(by_instance.state_details.flow_run_id)).parameters["credentials"]
    assert recorded["api_secret"] == "**********"
    assert CANARY_SECRET not in haystack
    assert CANARY_KEY not in haystack
