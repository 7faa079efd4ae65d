"""A run killed at the worst moment, then the same command again: the job is bought once.

Each command is a process of its own, killed with SIGKILL (its whole process group, as a crashed
machine or an OOM kill would), then run again exactly as the user typed it. The emulator counts the
jobs; the outputs are checked against the manifest. ``python -m bench crash`` runs the same trials
many times over (20 kills over both models); these are the bounded form that runs in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from flows.test_flow_cli import REPO, _check_manifest_dir, only_error_line, run_cli
from support.emulator import GENERATE_ROUTE, control, faults, stats
from support.prefect_api import flow_run

pytestmark = pytest.mark.slow

JOBS_ROUTE = "GET /v1/jobs"


@pytest.fixture
def cli_env(scenario_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The CLI's environment: the emulator, the session's Prefect server, a result store of its own."""
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    assert api_url, "the Prefect test harness is not running"
    return {
        **os.environ,
        **scenario_env,
        "PREFECT_API_URL": api_url,
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
        "PYTHONPATH": str(REPO),
    }


def _layers(clip: Path, out: Path) -> list[str]:
    return [
        "layers",
        str(clip),
        "--instruction",
        "each moving object apart",
        "--max-layers",
        "2",
        "--out",
        str(out),
    ]


def _edit(clip: Path, out: Path) -> list[str]:
    # No seed: an Aleph edit without one is never reused across runs, by design. A crashed run's
    # job must still be adopted by the rerun.
    return ["edit", str(clip), "--prompt", "a watercolor painting", "--out", str(out)]


def kill_once_the_job_exists(
    args: list[str], env: dict[str, str], emulator: Any, log: Path, jobs: int = 1
) -> None:
    """Start the CLI and SIGKILL its process group the moment the emulator has created ``jobs`` jobs."""
    target = int(stats(emulator)["jobs_created"]) + jobs
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect_scenario.cli", *args],
            cwd=REPO,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 240
        while int(stats(emulator)["jobs_created"]) < target:
            assert process.poll() is None, f"the run ended before its job existed:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no job was created in 240 s"
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def ledger_entries(env: dict[str, str]) -> list[dict[str, Any]]:
    folder = Path(env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"]) / "prefect-scenario-ledger"
    return [json.loads(path.read_text()) for path in folder.glob("*.json")]


@pytest.mark.parametrize("command", [_layers, _edit], ids=["layers", "edit-without-seed"])
def test_kill_right_after_the_job_is_created_then_rerun_buys_nothing(
    live_emulator: Any, cli_env: dict[str, str], sample_clip: Path, tmp_path: Path, command: Any
) -> None:
    out = tmp_path / "out"
    kill_once_the_job_exists(command(sample_clip, out), cli_env, live_emulator, tmp_path / "killed.log")
    assert stats(live_emulator)["jobs_created"] == 1

    done = run_cli(command(sample_clip, out), cli_env)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = _check_manifest_dir(out)
    assert stats(live_emulator)["jobs_created"] == 1
    # The rerun says it spent nothing: the job was the killed run's.
    assert "reused from an earlier run, nothing spent" in done.stdout
    [entry] = ledger_entries(cli_env)
    assert entry["job_id"] == manifest["job_id"]
    assert entry["state"] == "delivered"
    # The killed run does not stay "Running" forever: the rerun that adopted its job marked it. (Its
    # id is the entry's first owner: the rerun took the job over, unless the killed run's persisted
    # result handed the job to the rerun through Prefect's cache.)
    buyer = (entry["earlier_owners"] or [entry["owner"]])[0]
    killed = asyncio.run(flow_run(UUID(buyer["flow_run_id"])))
    assert killed.state.name == "Crashed", killed.state
    assert manifest["job_id"] in (killed.state.message or "")


def test_kill_right_after_a_failed_chunk_is_bought_again_then_rerun_buys_nothing(
    live_emulator: Any, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A split edit's chunk job fails on the server and is bought again as a new job; the process
    is killed the moment that job exists. The rerun (same command, same seed) adopts it: 3 jobs."""
    from prefect_scenario import video

    clip = tmp_path / "long-31s.mp4"
    video.make_sample_clip(clip, seconds=31.0, width=160, height=120, fps=12, with_audio=True, seed=31)
    out = tmp_path / "out"
    command = ["edit", str(clip), "--prompt", "a watercolor painting", "--seed", "11", "--out", str(out)]
    faults(live_emulator, {"route": GENERATE_ROUTE, "kind": "fail_job", "count": 1})
    # Two chunk jobs, one failing at once; the third job is its chunk's new one.
    kill_once_the_job_exists(command, cli_env, live_emulator, tmp_path / "killed.log", jobs=3)
    assert stats(live_emulator)["jobs_created"] == 3

    done = run_cli(command, cli_env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert stats(live_emulator)["jobs_created"] == 3
    assert list(out.rglob("aleph-stitched-*/*.mp4")), done.stdout[-3000:]


def test_lost_answer_with_the_listing_down_refuses_to_pay_then_adopts(
    live_emulator: Any, cli_env: dict[str, str], sample_clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = _edit(sample_clip, out)
    # The paid POST creates its job but its answer is lost, and the job listing fails on every try.
    # (The dry run shares the route and comes first: a harmless 0 s delay is its fault.)
    faults(
        live_emulator,
        {"route": GENERATE_ROUTE, "kind": "delay", "seconds": 0, "count": 1},
        {"route": GENERATE_ROUTE, "kind": "reset_after_accept", "count": 1},
        {"route": JOBS_ROUTE, "kind": "status", "status": 503, "count": 1000},
    )
    first = run_cli(args, cli_env)
    assert first.returncode == 1
    assert "prefect-scenario jobs" in only_error_line(first.stderr)
    assert stats(live_emulator)["jobs_created"] == 1

    # The same command while the listing still fails: nothing proves there is no job, so no pay.
    again = run_cli(args, cli_env)
    assert again.returncode == 1
    line = only_error_line(again.stderr)
    assert "Nothing new was submitted" in line
    assert "prefect-scenario jobs" in line
    assert stats(live_emulator)["jobs_created"] == 1
    [entry] = ledger_entries(cli_env)
    assert entry["state"] == "submitting"

    # The listing works again. A person looks first: the job that command would have made is there,
    # and the ledger says a submit of it was never answered.
    control(live_emulator, "DELETE", "faults")
    command_line = f"edit {sample_clip} --prompt 'a watercolor painting'"
    looked = run_cli(["jobs", "--input-of", command_line, "--json"], cli_env)
    assert looked.returncode == 0, looked.stderr[-3000:]
    listing = json.loads(looked.stdout)
    [job] = listing["jobs"]
    assert job["inputs"]["prompt"] == "a watercolor painting"
    assert any(note.startswith("unanswered submit:") for note in listing["notes"]), listing["notes"]
    assert any("was uploaded as asset_" in note for note in listing["notes"]), listing["notes"]
    table = run_cli(["jobs", "--since", "1h"], cli_env)
    assert table.returncode == 0, table.stderr[-3000:]
    assert job["job_id"] in table.stdout

    # The rerun finds the job the lost answer created, and pays nothing.
    done = run_cli(args, cli_env)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = _check_manifest_dir(out)
    assert stats(live_emulator)["jobs_created"] == 1
    assert manifest["job_id"] == job["job_id"]
    [entry] = ledger_entries(cli_env)
    assert entry["job_id"] == manifest["job_id"]
    assert entry["state"] == "delivered"


def test_a_completed_seedless_edit_is_not_adopted_by_the_next_run(
    live_emulator: Any, cli_env: dict[str, str], sample_clip: Path, tmp_path: Path
) -> None:
    """The ledger binds only undelivered jobs: a second deliberate edit without a seed pays anew."""
    first = run_cli(_edit(sample_clip, tmp_path / "one"), cli_env)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_cli(_edit(sample_clip, tmp_path / "two"), cli_env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert stats(live_emulator)["jobs_created"] == 2
    one = json.loads((tmp_path / "one" / "manifest.json").read_text())["job_id"]
    two = json.loads((tmp_path / "two" / "manifest.json").read_text())["job_id"]
    assert one != two
