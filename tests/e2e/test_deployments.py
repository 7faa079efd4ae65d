"""prefect.yaml end to end: deployed with ``prefect deploy``, run by a process worker, read back from the API.

The stack (``conftest.py``) is a real ``prefect server start`` on PostgreSQL, the Scenario emulator, the
``scenario-process`` work pool, every deployment of the repository's ``prefect.yaml`` and a worker.
The tests then do what a user does:

1. press Run in the UI (the same POST the UI sends) and read back the run, its task runs, its
   artifacts and its events;
2. emit ``scenario.video.arrived`` and see the triggered run take its parameters from the payload;
3. run an Aleph edit and see the chained automation split the edited clip into layers;
4. run a batch over six clips with a global concurrency limit of 2 (never more than 2 jobs in
   flight at the emulator), then again with a budget below the total;
5. read PostgreSQL directly: it holds the deployments and runs the API reported.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from e2e.e2e_stack import JOB_SECONDS, Stack
from prefect_scenario import video
from support.prefect_api import wait_for

pytestmark = pytest.mark.slow

LAYERS_MODEL = "model_scenario-video-layers-extractor"
ALEPH_MODEL = "model_runway-aleph-2"
JOB_EVENTS = {"scenario.job.submitted", "scenario.job.completed", "scenario.outputs.stored"}
FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Distinct clips (uploads and jobs are cached by content, so every step gets its own)."""
    folder = tmp_path_factory.mktemp("e2e-media")
    clips: dict[str, Path] = {}
    for name, seed in (("layers", 11), ("arrived", 12), ("aleph", 13)):
        clips[name] = folder / f"{name}.mp4"
        video.make_sample_clip(
            clips[name], seconds=2.0, width=320, height=240, fps=12, moving_objects=2, seed=seed
        )
    batch = folder / "batch"
    batch.mkdir()
    for index in range(6):
        video.make_sample_clip(
            batch / f"take-{index}.mp4",
            seconds=1.0,
            width=160,
            height=120,
            fps=12,
            moving_objects=1,
            seed=21 + index,
        )
    clips["batch"] = batch
    return clips


def _why(stack: Stack, run: dict[str, Any]) -> str:
    return f"{run['state_type']}: {run['state']['message']}\n{stack.logs()}"


def _check_files(folder: Path, expected: int | None = None) -> list[Path]:
    """The outputs stored in a job's folder (``NN-asset_....ext``; previews and the like aside)."""
    files = sorted(p for p in folder.glob("*") if p.is_file() and re.match(r"\d\d-asset_", p.name))
    assert files, f"no outputs under {folder}"
    if expected is not None:
        assert len(files) == expected, files
    for file in files:
        assert file.stat().st_size > 0
    return files


def _table(artifact: dict[str, Any]) -> list[dict[str, Any]]:
    data = artifact["data"]
    return list(json.loads(data) if isinstance(data, str) else data)


def test_1_run_button_runs_a_deployment_and_leaves_a_record(stack: Stack, media: dict[str, Path]) -> None:
    api = stack.api
    deployment = api.deployment("video-to-layers", "on-demand")
    # What the Run form shows: required fields, and a description for every parameter.
    schema = deployment["parameter_openapi_schema"]
    assert "video" in schema["required"]
    assert all(prop.get("description") for prop in schema["properties"].values())
    assert deployment["parameters"]["credentials"] == "scenario"
    assert "secret" not in json.dumps(deployment["parameters"]).lower()
    out = stack.root / "ui-run"
    started = time.monotonic()

    created = api.run_like_the_ui(deployment, video=str(media["layers"]), destination=str(out), max_layers=3)
    final = api.wait_until_final(created["id"])

    FIGURES["ui_run_seconds"] = round(time.monotonic() - started, 1)
    assert final["state_type"] == "COMPLETED", _why(stack, final)
    assert final["state"]["message"] != "Run from the Prefect UI"
    assert final["parameters"]["max_layers"] == 3
    job_id = final["labels"]["scenario.job_id"]
    tasks = api.task_runs(created["id"])
    names = {run["task_key"].rsplit("-", 1)[0] for run in tasks}
    assert {"upload_video", "estimate_job", "submit_job", "wait_for_job", "download_outputs"} <= names
    assert all(run["state_type"] == "COMPLETED" for run in tasks), [
        (r["name"], r["state_type"]) for r in tasks
    ]
    artifacts = {a["key"]: a for a in api.artifacts(created["id"]) if a["key"]}
    assert artifacts["video-to-layers-summary"]["type"] == "markdown"
    assert job_id in artifacts["video-to-layers-summary"]["data"]
    outputs_table = _table(artifacts["video-to-layers-outputs"])
    progress = artifacts[f"scenario-job-{job_id.lower().removeprefix('job_')}"]
    assert progress["type"] == "progress"
    assert float(progress["data"]) == 100.0
    events = api.wait_for_events(created["id"], JOB_EVENTS | {"prefect.flow-run.Completed"})
    stored = next(e for e in events if e["event"] == "scenario.outputs.stored")
    assert stored["resource"]["prefect.resource.id"] == f"scenario.job.{job_id}"
    files = _check_files(out / job_id, expected=len(outputs_table))
    for row in outputs_table:
        file = Path(row["stored_at"])
        assert file in files
        # The table shows the sha256's first 12 digits (the result and the manifest keep it whole).
        assert row["sha256"] == f"{hashlib.sha256(file.read_bytes()).hexdigest()[:12]}…"
    FIGURES["ui_run"] = {"task_runs": len(tasks), "events": len(events), "outputs": len(files)}


def test_2_external_event_runs_the_triggered_deployment(stack: Stack, media: dict[str, Path]) -> None:
    api = stack.api
    deployment = api.deployment("video-to-layers", "on-video-arrived")
    names = {a["name"] for a in api.automations()}
    assert "video-to-layers when a video arrives" in names
    payload = {"video": str(media["arrived"]), "max_layers": 3}
    started = time.monotonic()

    stack.prefect(
        "event",
        "emit",
        "scenario.video.arrived",
        "--resource-id",
        "scenario.video.e2e-take-42",
        "--payload",
        json.dumps(payload),
    )
    run = wait_for("the triggered flow run", lambda: api.flow_runs_of(deployment["id"]), timeout=60)[0]
    final = api.wait_until_final(run["id"])

    FIGURES["event_to_completed_seconds"] = round(time.monotonic() - started, 1)
    assert final["state_type"] == "COMPLETED", _why(stack, final)
    assert final["created_by"]["type"] == "AUTOMATION"
    parameters = final["parameters"]
    assert parameters["video"] == str(media["arrived"])
    # Native types: the payload's number arrives as an int; absent keys take the template defaults.
    assert parameters["max_layers"] == 3
    assert isinstance(parameters["max_layers"], int)
    assert parameters["separation_instruction"] == "each moving object apart from the background"
    assert parameters["destination"] == "scenario-outputs/arrived"
    assert parameters["credentials"] == "scenario"
    # The relative destination resolved in the directory `prefect deploy` ran from (the pull step).
    _check_files(stack.workdir / "scenario-outputs" / "arrived" / final["labels"]["scenario.job_id"])


def test_3_stored_aleph_edit_chains_into_video_to_layers(stack: Stack, media: dict[str, Path]) -> None:
    api = stack.api
    aleph = api.deployment("aleph-edit", "on-demand")
    chained = api.deployment("video-to-layers", "layers-of-aleph-edits")
    before = {run["id"] for run in api.flow_runs_of(chained["id"])}
    out = stack.root / "aleph-run"
    started = time.monotonic()

    edit = api.run_like_the_ui(
        aleph, video=str(media["aleph"]), prompt="turn it into a watercolour painting", destination=str(out)
    )
    edited = api.wait_until_final(edit["id"])
    assert edited["state_type"] == "COMPLETED", _why(stack, edited)
    stored = next(
        e for e in api.wait_for_events(edit["id"], JOB_EVENTS) if e["event"] == "scenario.outputs.stored"
    )
    assert stored["resource"]["scenario.model_id"] == ALEPH_MODEL
    edited_clip = stored["payload"]["video"]
    assert Path(edited_clip).is_file()
    assert Path(edited_clip).is_relative_to(out)

    def new_run() -> dict[str, Any] | None:
        fresh = [run for run in api.flow_runs_of(chained["id"]) if run["id"] not in before]
        return fresh[0] if fresh else None

    layers = api.wait_until_final(wait_for("the chained Video to Layers run", new_run, timeout=60)["id"])

    FIGURES["aleph_then_layers_seconds"] = round(time.monotonic() - started, 1)
    assert layers["state_type"] == "COMPLETED", _why(stack, layers)
    assert layers["created_by"]["type"] == "AUTOMATION"
    assert layers["parameters"]["video"] == edited_clip
    assert layers["labels"]["scenario.model_id"] == LAYERS_MODEL
    _check_files(stack.workdir / "scenario-outputs" / "layers-of-edits" / layers["labels"]["scenario.job_id"])
    # The layers run stored outputs too, but of another model: nothing chains on it.
    time.sleep(3)
    assert len([run for run in api.flow_runs_of(chained["id"]) if run["id"] not in before]) == 1


def test_4_batch_keeps_within_the_limit_and_the_budget(stack: Stack, media: dict[str, Path]) -> None:
    api = stack.api
    deployment = api.deployment("video-to-layers-batch", "on-demand")
    # The nightly batch is deployed with its schedule off: it would spend every night unasked.
    nightly = api.deployment("video-to-layers-batch", "nightly")
    assert [(s["schedule"]["cron"], s["active"]) for s in nightly["schedules"]] == [("0 2 * * *", False)]
    # Counters from zero for this step (its clips are new: no cached asset refers to the old state).
    stack.emulator("POST", "reset")
    assert api.global_concurrency_limit("scenario-custom-jobs") is None
    out = stack.root / "batch-out"
    started = time.monotonic()

    created = api.run_like_the_ui(
        deployment,
        folder=str(media["batch"]),
        destination=str(out),
        max_layers=2,
        concurrency_limit=2,
        budget_creative_units=None,
    )
    final = api.wait_until_final(created["id"], timeout=240)

    FIGURES["batch_seconds"] = round(time.monotonic() - started, 1)
    assert final["state_type"] == "COMPLETED", _why(stack, final)
    assert final["state"]["message"] == "6 of 6 clip(s) succeeded, 24 CU spent"
    counters = stack.emulator("GET", "stats")
    FIGURES["batch_max_jobs_in_flight"] = counters["max_jobs_in_flight"]
    FIGURES["batch_jobs_created"] = counters["jobs_created"]
    assert counters["jobs_created"] == 6
    # Never more than the limit. (That two do run at once is asserted by tests/flows/test_batch.py
    # with longer jobs: here a slot hand-off of the loaded server can outlast a 2 s job.)
    assert 1 <= counters["max_jobs_in_flight"] <= 2
    # The flow created the missing limit, sized from its parameter.
    limit = api.global_concurrency_limit("scenario-custom-jobs")
    assert limit is not None
    assert limit["limit"] == 2
    assert limit["active_slots"] == 0
    rows = _table(next(a for a in api.artifacts(created["id"]) if a["key"] == "video-to-layers-batch-clips"))
    assert [Path(row["clip"]).name for row in rows] == [f"take-{i}.mp4" for i in range(6)]
    assert {row["status"] for row in rows} == {"succeeded"}
    for row in rows:
        assert row["outputs"] == 2
        assert row["cost_cu"] == 4
        _check_files(Path(row["stored_in"]), expected=2)

    # Again with a budget below the total: new inputs (3 layers, 5 CU a clip), room for three.
    budget = 16
    again = api.run_like_the_ui(
        deployment,
        folder=str(media["batch"]),
        destination=str(out),
        max_layers=3,
        budget_creative_units=budget,
    )
    capped = api.wait_until_final(again["id"], timeout=240)

    assert capped["state_type"] == "COMPLETED", _why(stack, capped)
    assert "3 of 6 clip(s) succeeded" in capped["state"]["message"]
    assert "3 skipped: budget" in capped["state"]["message"]
    after = stack.emulator("GET", "stats")
    assert after["jobs_created"] - counters["jobs_created"] == 3
    assert after["max_jobs_in_flight"] <= 2
    rows = _table(next(a for a in api.artifacts(again["id"]) if a["key"] == "video-to-layers-batch-clips"))
    assert [row["status"] for row in rows] == ["succeeded"] * 3 + ["skipped: budget"] * 3
    assert sum(row["cost_cu"] or 0 for row in rows) == 15 <= budget
    FIGURES["budget_run"] = {"budget": budget, "spent": 15, "skipped": 3}
    FIGURES["job_seconds"] = JOB_SECONDS
    print("E2E FIGURES", json.dumps(FIGURES, indent=2))


def test_5_the_server_keeps_its_runs_in_postgresql(stack: Stack, database_url: str) -> None:
    """What the API reports is what PostgreSQL holds: the stack's server is not on SQLite."""
    socket_dir = database_url.rpartition("host=")[2]

    async def count() -> tuple[int, int, str]:
        connection = await asyncpg.connect(host=socket_dir, user="postgres", database="prefect")
        try:
            deployments = await connection.fetchval("SELECT count(*) FROM deployment")
            runs = await connection.fetchval("SELECT count(*) FROM flow_run")
            version = await connection.fetchval("SHOW server_version")
        finally:
            await connection.close()
        return int(deployments), int(runs), str(version)

    deployments, runs, version = asyncio.run(count())
    listed = stack.api.post("/deployments/filter", {})
    assert deployments == len(listed) > 0
    assert runs > 0
    print(f"e2e stack on PostgreSQL {version}: {deployments} deployments, {runs} flow runs")
