"""A batch spread over three process workers (``clips_per_flow_run``), on the PostgreSQL server.

On the shared stack of ``conftest.py``: 60 clips, 10 s jobs, a global concurrency limit of 6 and
the emulator refusing a seventh job in flight, 3 workers of 2 flow runs each. Then:

1. every worker ran some of the clips, the emulator never saw more than 6 jobs in flight, every
   output is stored (sha256 checked), ``jobs_created == 60``; a re-run of the batch creates none;
2. 60 other clips with one worker SIGKILLed (with its flow-run processes, as a machine dies) while
   its clips' jobs run: the zombie automation marks its runs Crashed, the batch starts their
   groups again on the other workers and completes; ``jobs_created == 60`` and no output is lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.e2e_stack import (
    BIN,
    JOB_SECONDS,
    POOL,
    REPO,
    Process,
    Stack,
    batch_table,
    processes_of_flow_run,
    read_result,
    start_layers_batch,
)
from prefect_scenario import video
from support.prefect_api import wait_for

pytestmark = pytest.mark.slow

CLIPS = 60
FAN_OUT_JOB_SECONDS = 10.0
CEILING = 6
PER_CHILD = 10
LIMIT_NAME = "fan-out-jobs"
FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _report_figures() -> Iterator[None]:
    yield
    print("fan-out figures:", json.dumps(FIGURES, indent=2))


@pytest.fixture(scope="module")
def workers(stack: Stack) -> Iterator[list[Process]]:
    """Three workers of at most 2 flow runs each, in place of the stack's one; the 10 s jobs and the
    ceiling of 6 at the emulator; the zombie automation with a shorter window than the shipped 90 s."""
    for process in stack.processes:
        if process.name.split(":")[0] == "worker":
            process.stop()
    started = [
        stack.start(
            f"worker:fan-out-{n}",
            [
                str(BIN / "prefect"),
                "worker",
                "start",
                "--pool",
                POOL,
                "--name",
                f"fan-out-{n}",
                "--limit",
                "2",
            ],
        )
        for n in (1, 2, 3)
    ]
    stack.emulator("POST", "reset")
    stack.emulator("POST", "config", {"job_seconds": FAN_OUT_JOB_SECONDS, "concurrency_ceiling": CEILING})
    automation = yaml.safe_load((REPO / "automations" / "crash-zombie-flow-runs.yaml").read_text())
    # Two heartbeats' time (30 s each): under load a late heartbeat must not crash a live run.
    automation["trigger"]["within"] = 60
    stack.prefect("automation", "create", "--from-json", json.dumps(automation))
    yield started
    stack.prefect("automation", "delete", automation["name"])
    stack.emulator("POST", "config", {"job_seconds": JOB_SECONDS, "concurrency_ceiling": None})


def _clips(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(CLIPS):
        video.make_sample_clip(
            folder / f"take-{index:02d}.mp4",
            seconds=0.5,
            width=96,
            height=72,
            fps=8,
            moving_objects=1,
            seed=seed + index,
        )
    return folder


def _start_batch(stack: Stack, folder: Path, out: Path, **parameters: Any) -> dict[str, Any]:
    spread = {
        "clips_per_flow_run": PER_CHILD,
        "concurrency_limit_name": LIMIT_NAME,
        "concurrency_limit": CEILING,
    }
    return start_layers_batch(stack, folder, out, **parameters, **spread, review=False)


def _children(stack: Stack, parent_id: str) -> list[dict[str, Any]]:
    body = {"flow_runs": {"tags": {"all_": [f"scenario-batch-{parent_id[:8]}"]}}}
    return list(stack.api.post("/flow_runs/filter", body))


def _runs_by_worker(workers: list[Process]) -> dict[str, set[str]]:
    """Which flow runs each worker ran, from its log (``Worker 'X' submitting flow run 'id'``)."""
    found: dict[str, set[str]] = {}
    for worker in workers:
        text = worker.log.read_text(errors="replace")
        # Workers race for a scheduled run; the loser logs the abort of its submission.
        aborted = set(re.findall(r"Aborted submission of flow run '([0-9a-f-]+)'", text))
        for name, run_id in re.findall(r"Worker '([^']+)' submitting flow run '([0-9a-f-]+)'", text):
            if run_id not in aborted:
                found.setdefault(name, set()).add(run_id)
    return found


def _check_outputs(stack: Stack, flow_run_id: str) -> int:
    """Every output of the batch's persisted result is stored with its sha256; returns their count."""
    clips = read_result(stack, flow_run_id)["result"]["clips"]
    assert len(clips) == CLIPS
    stored = 0
    for clip in clips:
        assert clip["status"] == "succeeded", clip
        assert clip["outputs"], clip
        for output in clip["outputs"]:
            data = Path(output["location"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == output["sha256"], output["location"]
            stored += 1
    return stored


def _jobs(stack: Stack) -> dict[str, Any]:
    return dict(stack.emulator("GET", "stats"))


def test_1_sixty_clips_over_three_workers_then_a_rerun_buys_nothing(
    stack: Stack, workers: list[Process], tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = _clips(tmp_path_factory.mktemp("fan-out") / "clips", seed=500)
    out = stack.root / "fan-out-1"
    started = time.monotonic()
    # The Run form's budget field emptied: the deployment's default (500 in prefect.yaml) must not
    # come back in the children either.
    parent = _start_batch(stack, folder, out, budget_creative_units=None)
    final = stack.api.wait_until_final(parent["id"], timeout=900)
    FIGURES["batch_seconds"] = round(time.monotonic() - started, 1)
    assert final["state_type"] == "COMPLETED", f"{final['state']}\n{stack.logs()}"
    stats = _jobs(stack)
    assert stats["jobs_created"] == CLIPS
    assert stats["max_jobs_in_flight"] <= CEILING
    FIGURES["max_jobs_in_flight"] = stats["max_jobs_in_flight"]
    rows = batch_table(stack, parent["id"])
    assert len(rows) == CLIPS
    assert {row["status"] for row in rows} == {"succeeded"}, rows
    FIGURES["outputs_checked"] = _check_outputs(stack, parent["id"])
    assert FIGURES["outputs_checked"] >= CLIPS

    children = _children(stack, parent["id"])
    assert len(children) == CLIPS // PER_CHILD
    assert all(child["state_type"] == "COMPLETED" for child in children)
    # The parent had no budget: neither have its children; and they hold the parent's limit.
    assert {child["parameters"].get("budget_creative_units", "left out") for child in children} == {None}
    assert {child["parameters"]["concurrency_limit_name"] for child in children} == {LIMIT_NAME}
    by_worker = _runs_by_worker(workers)
    child_ids = {child["id"] for child in children}
    clips_per_worker = {name: PER_CHILD * len(runs & child_ids) for name, runs in by_worker.items()}
    FIGURES["clips_per_worker"] = clips_per_worker
    assert set(clips_per_worker) == {"fan-out-1", "fan-out-2", "fan-out-3"}
    assert all(count > 0 for count in clips_per_worker.values()), clips_per_worker
    assert sum(clips_per_worker.values()) == CLIPS

    rerun = _start_batch(stack, folder, stack.root / "fan-out-1-rerun")
    again = stack.api.wait_until_final(rerun["id"], timeout=600)
    assert again["state_type"] == "COMPLETED", f"{again['state']}\n{stack.logs()}"
    assert _jobs(stack)["jobs_created"] == CLIPS
    assert {row["status"] for row in batch_table(stack, rerun["id"])} == {"succeeded"}


def test_2_a_worker_killed_mid_batch_the_others_finish_it_and_nothing_is_bought_twice(
    stack: Stack, workers: list[Process], tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = _clips(tmp_path_factory.mktemp("fan-out-kill") / "clips", seed=700)
    out = stack.root / "fan-out-2"
    before = _jobs(stack)["jobs_created"]
    parent = _start_batch(stack, folder, out)

    def running_child_on_a_worker() -> tuple[Process, list[str]] | None:
        running = {c["id"] for c in _children(stack, parent["id"]) if c["state_type"] == "RUNNING"}
        if _jobs(stack)["jobs_created"] - before < 8:
            return None
        for worker in workers:
            mine = _runs_by_worker([worker])
            ids = [run for runs in mine.values() for run in runs if run in running]
            # Not the parent's worker: the batch itself must live on.
            if ids and parent["id"] not in {run for runs in mine.values() for run in runs}:
                return worker, ids
        return None

    victim, victim_runs = wait_for("a child with jobs in flight on a worker", running_child_on_a_worker, 300)
    pids = [pid for run in victim_runs for pid in processes_of_flow_run(run)]
    os.killpg(victim.popen.pid, signal.SIGKILL)
    for pid in pids:  # flow-run processes outside the worker's group die with the machine too
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    victim.popen.wait(10)

    def crashed() -> list[dict[str, Any]] | None:
        runs = [c for c in _children(stack, parent["id"]) if c["id"] in victim_runs]
        return runs if runs and all(c["state_type"] == "CRASHED" for c in runs) else None

    wait_for("the killed worker's runs to be marked Crashed", crashed, 240)
    FIGURES["kill_to_crashed_seconds"] = round(time.monotonic() - killed_at, 1)

    def restarted() -> bool | None:
        retries = [
            c for c in _children(stack, parent["id"]) if not c["idempotency_key"].endswith(":attempt-1")
        ]
        return True if retries and any(c["state_type"] in {"RUNNING", "COMPLETED"} for c in retries) else None

    try:
        wait_for("a crashed group to run again", restarted, 240)
    except AssertionError:
        states = [(c["name"], c["state_type"], c["state"]["message"]) for c in _children(stack, parent["id"])]
        raise AssertionError(
            f"children: {states}\nparent: {stack.api.flow_run(parent['id'])['state']}"
        ) from None
    FIGURES["kill_to_restarted_seconds"] = round(time.monotonic() - killed_at, 1)

    final = stack.api.wait_until_final(parent["id"], timeout=900)
    assert final["state_type"] == "COMPLETED", f"{final['state']}\n{stack.logs()}"
    assert _jobs(stack)["jobs_created"] - before == CLIPS
    rows = batch_table(stack, parent["id"])
    assert len(rows) == CLIPS
    assert {row["status"] for row in rows} == {"succeeded"}, rows
    assert _check_outputs(stack, parent["id"]) >= CLIPS
    FIGURES["killed_worker"] = victim.log.name
