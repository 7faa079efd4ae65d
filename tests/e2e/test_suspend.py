"""``wait="suspend"`` end to end: the run suspends after its paid submit, its process exits, and
``prefect-scenario watch`` resumes it on a worker when the job ends. Nothing is bought twice.

On the shared stack of ``conftest.py`` (a real server on PostgreSQL, the emulator, a process worker).
Each test proves one promise with the processes a user has, killed the way they die:

1. the suspended run holds no process; the watcher resumes it; one job, outputs stored, and the
   wake-up event names the run;
2. the result storage wiped while suspended (another machine's worker, a lost disk): the resumed
   run adopts its job from the journal on the flow run, still one job;
3. the watcher SIGKILLed mid-wait and the worker SIGKILLed while the run is suspended: a new
   watcher (cursor from its Variable) and a new worker finish the run, still one job; and a second
   run with the same inputs adopts the suspended run's job without marking it Crashed;
4. ``wait="suspend"`` outside a deployment is refused before anything is uploaded;
5. the opt-in automation (``automations/resume-on-scenario-job.yaml``) resumes a run from the
   wake-up event alone, with no watcher running;
6. a suspended run cancelled from the UI (Cancelled at once: no process, no hook) has its job
   cancelled by the watcher, once, with the outcome in the run's logs;
7. a batch suspends between waves within its ceiling, and survives a SIGKILL mid-wave;
9. a split Aleph edit suspends between its chunk waves, a failed chunk job bought again once, and
   a one-job edit whose job failed fails with the job's error and hint;
10. a finished suspended batch, retried, buys only its failed clip again;
11. an Aleph batch with a long clip: its chunks ride the batch's waves, stitched at the end.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from e2e.e2e_stack import (
    BIN,
    CREDENTIALS_BLOCK,
    JOB_SECONDS,
    POOL,
    REPO,
    Process,
    Stack,
    batch_table,
    processes_of_flow_run,
    read_result,
    start_layers_batch,
    start_watcher,
)
from prefect_scenario import video
from support.emulator import GENERATE_ROUTE
from support.prefect_api import wait_for

pytestmark = pytest.mark.slow

SUSPEND_JOB_SECONDS = 12.0
FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _report_figures() -> Iterator[None]:
    yield
    print("suspend figures:", FIGURES)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A clip per test: uploads and jobs are cached by content."""
    folder = tmp_path_factory.mktemp("suspend-media")
    made = {}
    names = ("resume", 41), ("wiped", 42), ("killed", 43), ("automation", 44), ("cancel", 45), ("aleph", 46)
    for name, seed in (*names, ("aleph-failing", 47)):
        made[name] = folder / f"{name}.mp4"
        video.make_sample_clip(
            made[name], seconds=1.0, width=160, height=120, fps=12, moving_objects=1, seed=seed
        )
    return made


@pytest.fixture
def slow_jobs(stack: Stack) -> Iterator[None]:
    """Jobs long enough to suspend on; the stack's own job time afterwards."""
    stack.emulator("POST", "config", {"job_seconds": SUSPEND_JOB_SECONDS})
    yield
    stack.emulator("POST", "config", {"job_seconds": JOB_SECONDS})


def _run_layers(stack: Stack, clip: Path, out: Path, **parameters: Any) -> dict[str, Any]:
    deployment = stack.api.deployment("video-to-layers", "on-demand")
    return stack.api.run_like_the_ui(
        deployment, video=str(clip), destination=str(out), max_layers=2, **parameters
    )


def _wait_suspended(stack: Stack, flow_run_id: str, timeout: float = 120) -> dict[str, Any]:
    def suspended() -> dict[str, Any] | None:
        run = stack.api.flow_run(flow_run_id)
        if run["state_type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            raise AssertionError(f"ended instead of suspending: {run['state']}\n{stack.logs()}")
        return run if run["state_type"] == "PAUSED" else None

    return wait_for(f"flow run {flow_run_id} to suspend", suspended, timeout)


def _logs_with_waves(stack: Stack, flow_run_id: str, waves: int) -> list[str]:
    """The run's log lines once ``waves`` "Wave" lines arrived (or after 30 s, for the asserts).

    A process ships its logs in the background: the last attempt's lines can reach the server
    after the run's final state did (seen on a fresh clone: 4 of 5 wave lines when it ended).
    """

    def arrived() -> list[str] | None:
        logs = [log["message"] for log in stack.api.logs_of(flow_run_id)]
        return logs if sum(line.startswith("Wave ") for line in logs) >= waves else None

    try:
        return wait_for("every wave's log line", arrived, 30)
    except AssertionError:
        return [log["message"] for log in stack.api.logs_of(flow_run_id)]


def _jobs_created(stack: Stack) -> int:
    return int(stack.emulator("GET", "stats")["jobs_created"])


def _outputs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and "-asset_" in p.name)


def test_1_a_suspended_run_holds_no_process_and_the_watcher_resumes_it(
    stack: Stack, clips: dict[str, Path], slow_jobs: None
) -> None:
    before = _jobs_created(stack)
    out = stack.root / "suspend-resume"
    created = _run_layers(stack, clips["resume"], out, wait="suspend")
    suspended = _wait_suspended(stack, created["id"])
    suspended_at = time.monotonic()

    assert suspended["state"]["name"] == "Suspended"
    job_id = suspended["labels"]["scenario.awaiting"]
    assert suspended["labels"]["scenario.paid.job"] == job_id
    assert "scenario-waiting" in suspended["tags"]
    # The worker's flow-run process exited: waiting costs no process.
    wait_for("the flow-run process to exit", lambda: not processes_of_flow_run(created["id"]) or None, 30)
    time.sleep(2)
    assert processes_of_flow_run(created["id"]) == []
    assert stack.api.flow_run(created["id"])["state_type"] == "PAUSED"

    watcher = start_watcher(stack)
    try:
        final = stack.api.wait_until_final(created["id"], timeout=180)
    finally:
        watcher.stop()
    FIGURES["suspended_seconds"] = round(time.monotonic() - suspended_at, 1)
    assert final["state_type"] == "COMPLETED", f"{final['state']}\n{stack.logs()}"
    assert _jobs_created(stack) - before == 1
    assert final["labels"]["scenario.job_id"] == job_id
    assert len(_outputs(out)) >= 2
    # The resumed attempt got the submit back from its persisted result: never a second POST.
    submits = [run for run in stack.api.task_runs(created["id"]) if run["task_key"].startswith("submit_job")]
    assert submits
    assert {run["state"]["name"] for run in submits} <= {"Completed", "Cached"}
    events = stack.api.wait_for_events(created["id"], {"scenario.job.completed"})
    wake = [
        event
        for event in events
        if event["event"] == "scenario.job.completed"
        and any(related.get("prefect.resource.role") == "waiter" for related in event["related"])
    ]
    assert wake, "the watcher's wake-up event is missing"
    assert wake[0]["resource"]["prefect.resource.id"] == f"scenario.job.{job_id}"
    assert "Resumed flow run" in watcher.log.read_text()


def test_2_results_wiped_while_suspended_the_journal_still_finds_the_job(
    stack: Stack, clips: dict[str, Path], slow_jobs: None
) -> None:
    before = _jobs_created(stack)
    out = stack.root / "suspend-wiped"
    created = _run_layers(stack, clips["wiped"], out, wait="suspend", refresh=True)
    suspended = _wait_suspended(stack, created["id"])
    job_id = suspended["labels"]["scenario.paid.job"]
    # Every persisted result and the submission ledger beside them: what a worker on another
    # machine, without shared result storage, would not see.
    storage = Path(stack.env["PREFECT_HOME"]) / "storage"
    assert storage.is_dir()
    shutil.rmtree(storage)

    watcher = start_watcher(stack)
    try:
        final = stack.api.wait_until_final(created["id"], timeout=180)
    finally:
        watcher.stop()
    assert final["state_type"] == "COMPLETED", f"{final['state']}\n{stack.logs()}"
    assert _jobs_created(stack) - before == 1
    assert final["labels"]["scenario.job_id"] == job_id
    assert _outputs(out)


def test_3_watcher_and_worker_killed_while_suspended_nothing_is_bought_twice(
    stack: Stack, clips: dict[str, Path], slow_jobs: None
) -> None:
    before = _jobs_created(stack)
    out = stack.root / "suspend-killed"
    created = _run_layers(stack, clips["killed"], out, wait="suspend")
    suspended = _wait_suspended(stack, created["id"])
    job_id = suspended["labels"]["scenario.paid.job"]

    # A second run with the same inputs while the first is suspended: layers reuse across runs,
    # so it adopts the job (nothing bought) and must not mark the suspended run Crashed.
    twin = _run_layers(stack, clips["killed"], stack.root / "suspend-twin")
    twin_final = stack.api.wait_until_final(twin["id"], timeout=180)
    assert twin_final["state_type"] == "COMPLETED", f"{twin_final['state']}\n{stack.logs()}"
    assert twin_final["labels"]["scenario.job_id"] == job_id
    assert stack.api.flow_run(created["id"])["state_type"] == "PAUSED"

    first_watcher = start_watcher(stack, "watcher-killed")
    worker = next(p for p in stack.processes if p.name.split(":")[0] == "worker" and p.popen.poll() is None)
    os.killpg(worker.popen.pid, signal.SIGKILL)
    worker.popen.wait(10)
    time.sleep(1.5)
    os.killpg(first_watcher.popen.pid, signal.SIGKILL)
    first_watcher.popen.wait(10)
    killed_at = time.monotonic()

    new_worker = stack.start(
        "worker:e2e-worker-2",
        [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name", "e2e-worker-2"],
    )
    watcher = start_watcher(stack, "watcher-2")
    try:
        final = stack.api.wait_until_final(created["id"], timeout=240)
    finally:
        watcher.stop()
    FIGURES["resumed_after_kills_seconds"] = round(time.monotonic() - killed_at, 1)
    assert new_worker.popen.poll() is None
    assert final["state_type"] == "COMPLETED", f"{final['state']}\n{stack.logs()}"
    assert _jobs_created(stack) - before == 1
    assert final["labels"]["scenario.job_id"] == job_id
    assert _outputs(out)
    cursor = stack.api.post("/variables/filter", {"variables": {"name": {"like_": "scenario_watch_"}}})
    assert cursor
    assert cursor[0]["value"]["updated_after"]


def test_4_suspend_outside_a_deployment_is_refused_before_any_upload(
    stack: Stack, clips: dict[str, Path]
) -> None:
    uploads = stack.emulator("GET", "stats")["uploads_created"]
    script = (
        "import asyncio, sys\n"
        "from prefect_scenario.flows import video_to_layers\n"
        "try:\n"
        "    asyncio.run(video_to_layers(sys.argv[1], 'each object apart', credentials=sys.argv[2],\n"
        "                                wait='suspend'))\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "    sys.exit(3)\n"
    )
    done = _run_script(stack, script, str(clips["resume"]), CREDENTIALS_BLOCK)
    assert done[0] == 3, done[1]
    assert "InputValidationError" in done[1]
    assert "no deployment" in done[1]
    assert "wait='inline'" in done[1]
    assert stack.emulator("GET", "stats")["uploads_created"] == uploads


def _run_script(stack: Stack, script: str, *args: str) -> tuple[int, str]:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=stack.workdir,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return done.returncode, done.stdout + done.stderr


def test_5_the_opt_in_automation_resumes_a_run_from_the_wake_up_event(
    stack: Stack, clips: dict[str, Path], slow_jobs: None
) -> None:
    stack.prefect(
        "automation", "create", "--from-file", str(REPO / "automations" / "resume-on-scenario-job.yaml")
    )
    try:
        before = _jobs_created(stack)
        created = _run_layers(stack, clips["automation"], stack.root / "suspend-automation", wait="suspend")
        suspended = _wait_suspended(stack, created["id"])
        job_id = suspended["labels"]["scenario.paid.job"]
        wait_for(
            "the job to end",
            lambda: _job_status(stack, job_id) == "success" or None,
            60,
        )
        # What a process that may emit events but not resume runs sends: the same event as the watcher.
        script = (
            "import sys\n"
            "from prefect.events import emit_event\n"
            "from prefect_scenario.waiting import wake_event_id\n"
            "job, run = sys.argv[1], sys.argv[2]\n"
            "waiter = {'prefect.resource.id': f'prefect.flow-run.{run}', 'prefect.resource.role': 'waiter'}\n"
            "emit_event('scenario.job.completed', resource={'prefect.resource.id': f'scenario.job.{job}'},\n"
            "           related=[waiter], id=wake_event_id(job, 'success', run))\n"
        )
        code, output = _run_script(stack, script, job_id, created["id"])
        assert code == 0, output
        final = stack.api.wait_until_final(created["id"], timeout=180)
        assert final["state_type"] == "COMPLETED", f"{final['state']}\n{stack.logs()}"
        assert _jobs_created(stack) - before == 1
    finally:
        stack.prefect("automation", "delete", "resume flow runs waiting on a Scenario job")


def _job_status(stack: Stack, job_id: str) -> str:
    import httpx

    response = httpx.get(f"{stack.emulator_base_url}/jobs/{job_id}", auth=("e2e-key", "x"), timeout=10)
    return str(response.json().get("job", {}).get("status"))


def test_6_a_suspended_run_cancelled_in_the_ui_has_its_job_cancelled_by_the_watcher(
    stack: Stack, clips: dict[str, Path], slow_jobs: None
) -> None:
    # Scenario refuses to cancel custom jobs; the emulator may allow it, to show the cancel is asked.
    stack.emulator("POST", "config", {"allow_cancel": True, "job_seconds": 120})
    try:
        before = _jobs_created(stack)
        created = _run_layers(stack, clips["cancel"], stack.root / "suspend-cancel", wait="suspend")
        suspended = _wait_suspended(stack, created["id"])
        job_id = suspended["labels"]["scenario.paid.job"]
        # What the UI's Cancel button sends. The server has no process to stop: Cancelled at once,
        # and no hook of the flow runs anywhere.
        answer = stack.api.post(
            f"/flow_runs/{created['id']}/set_state", {"state": {"type": "CANCELLING", "name": "Cancelling"}}
        )
        assert answer["state"]["type"] == "CANCELLED", answer
        assert _job_status(stack, job_id) not in {"canceled", "success", "failure"}

        watcher = start_watcher(stack, "watcher-cancel")
        try:
            wait_for(
                "the watcher to cancel the job", lambda: _job_status(stack, job_id) == "canceled" or None, 60
            )
            cleared = wait_for(
                "the run to leave the waiting list",
                lambda: (
                    (run := stack.api.flow_run(created["id"]))["tags"].count("scenario-waiting") == 0 and run
                ),
                30,
            )
        finally:
            watcher.stop()
        assert cleared["state_type"] == "CANCELLED"
        assert _jobs_created(stack) - before == 1
        logs = stack.api.logs_of(created["id"])
        assert any(job_id in log["message"] and "cancel" in log["message"].lower() for log in logs), [
            log["message"] for log in logs
        ]
        # Handled once: a second watcher finds nothing more to do for it.
        again = _run_script(
            stack,
            "import subprocess, sys\n"
            "sys.exit(subprocess.call([sys.executable, '-m', 'prefect_scenario.cli', 'watch', '--once',"
            " '--credentials', sys.argv[1]]))\n",
            CREDENTIALS_BLOCK,
        )
        assert again[0] == 0, again[1]
        assert "jobs of 0 cancelled run(s) cancelled" in again[1], again[1]
    finally:
        stack.emulator("POST", "config", {"allow_cancel": False, "job_seconds": SUSPEND_JOB_SECONDS})


BATCH_CLIPS = 6
BATCH_CEILING = 2
BATCH_JOB_SECONDS = 6.0
BATCH_LIMIT = "e2e-suspend-batch"


def _batch_clips(folder: Path, count: int, seed: int) -> Path:
    folder.mkdir()
    for index in range(count):
        video.make_sample_clip(
            folder / f"wave-{index}.mp4", seconds=1.0, width=160, height=120, fps=12, seed=seed + index
        )
    return folder


@pytest.fixture
def batch_jobs(stack: Stack) -> Iterator[Process]:
    """Short jobs, the emulator's ceiling at the batch's, and a watcher; all as before afterwards."""
    stack.emulator("POST", "config", {"job_seconds": BATCH_JOB_SECONDS, "concurrency_ceiling": BATCH_CEILING})
    watcher = start_watcher(stack, "watcher-batch")
    yield watcher
    watcher.stop()
    stack.emulator("POST", "config", {"job_seconds": SUSPEND_JOB_SECONDS, "concurrency_ceiling": None})


def _run_batch(stack: Stack, folder: Path, out: Path, **parameters: Any) -> dict[str, Any]:
    limit = {"concurrency_limit_name": BATCH_LIMIT, "concurrency_limit": BATCH_CEILING}
    return start_layers_batch(stack, folder, out, budget_creative_units=None, **limit, **parameters)


@dataclass
class _Watched:
    """A batch run sampled until it ended: its final state, and what was seen meanwhile."""

    final: dict[str, Any]
    seconds: float
    processes_while_paused: list[int] = field(default_factory=list)
    in_flight: list[int] = field(default_factory=list)


def _watch_batch(
    stack: Stack, flow_run_id: str, timeout: float = 300, until_paused: bool = False
) -> _Watched:
    """Sample the run's state, its processes and the emulator's jobs in flight every 0.3 s, until
    it ended (or, ``until_paused``, until it has been seen suspended without its process)."""
    started = time.monotonic()
    watched = _Watched(final={}, seconds=0.0)
    paused_since: float | None = None
    while True:
        run = stack.api.flow_run(flow_run_id)
        if run["state_type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            break
        assert time.monotonic() - started < timeout, f"batch still {run['state']}\n{stack.logs()}"
        watched.in_flight.append(int(stack.emulator("GET", "stats")["jobs_in_flight"]))
        if run["state_type"] == "PAUSED":
            paused_since = paused_since or time.monotonic()
            # The process needs a moment to exit after the pause is set.
            if time.monotonic() - paused_since > 3.0:
                watched.processes_while_paused.append(len(processes_of_flow_run(flow_run_id)))
                if until_paused:
                    break
        else:
            paused_since = None
        time.sleep(0.3)
    watched.final = run
    watched.seconds = round(time.monotonic() - started, 1)
    return watched


def _active_slots(stack: Stack, name: str) -> int:
    return int(stack.api.get(f"/v2/concurrency_limits/{name}")["active_slots"])


def _batch_outputs(out: Path) -> set[Path]:
    """The folders holding a clip's layers: one per clip."""
    return {p.parent for p in out.rglob("*") if p.is_file() and "-asset_" in p.name}


def test_7_a_batch_suspends_between_waves_survives_a_kill_mid_wave_and_holds_no_process_meanwhile(
    stack: Stack, tmp_path: Path, batch_jobs: Process
) -> None:
    """6 clips, a ceiling of 2 at the emulator and in the limit: 3 waves, each a resume. The second
    wave's flow-run process is SIGKILLed while the emulator holds its first POST /generate (one
    clip's free estimate, in practice) and the other clip's submit goes through: a job of the wave
    exists, its record does not. The same flow run is scheduled again, as a retry would."""
    folder = _batch_clips(tmp_path / "batch-clips", BATCH_CLIPS, seed=70)
    out = stack.root / "suspend-batch"
    before = _jobs_created(stack)
    created = _run_batch(stack, folder, out, wait="suspend")
    first_wave = _watch_batch(stack, created["id"], until_paused=True)
    assert _jobs_created(stack) - before == BATCH_CEILING

    # The next wave's first POST /generate (an estimate or a submit): the emulator holds it 6 s.
    fired = dict(stack.emulator("GET", "stats").get("faults_fired") or {}).get("delay", 0)
    stack.emulator("POST", "faults", {"route": GENERATE_ROUTE, "kind": "delay", "seconds": 6, "count": 1})
    wait_for(
        "the resumed wave's submit to be held",
        lambda: (stack.emulator("GET", "stats").get("faults_fired") or {}).get("delay", 0) > fired or None,
        120,
    )
    time.sleep(1.0)
    # The crash is reported twice: by the flow-run executor at once, then by the worker once its
    # on_crashed hooks ran. A retry scheduled before the worker's report would be marked Crashed.
    worker = next(p for p in stack.processes if p.name.split(":")[0] == "worker" and p.popen.poll() is None)
    reaped = "prefect.flow_runs.worker - Check whether the flow run exceeded"
    seen = worker.log.read_text().count(reaped)
    victims = processes_of_flow_run(created["id"])
    assert victims, "no flow-run process during the wave"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for("the worker to reap the run", lambda: worker.log.read_text().count(reaped) > seen or None, 60)
    crashed = stack.api.flow_run(created["id"])
    assert crashed["state_type"] == "CRASHED", crashed["state"]
    retry = {"state": {"type": "SCHEDULED", "name": "Retrying"}, "force": True}
    stack.api.post(f"/flow_runs/{created['id']}/set_state", retry)

    rest = _watch_batch(stack, created["id"])
    final = rest.final
    assert final["state_type"] == "COMPLETED", f"{final['state']}\n{stack.logs()}"
    # One job per clip: the killed submit's job was adopted, never bought again.
    assert _jobs_created(stack) - before == BATCH_CLIPS
    pauses = [key for key in final["empirical_policy"]["pause_keys"] if key.startswith("scenario-wait-")]
    paused = first_wave.processes_while_paused + rest.processes_while_paused
    in_flight = first_wave.in_flight + rest.in_flight
    FIGURES["batch_waves"] = {
        "suspends": len(pauses),
        "seconds": first_wave.seconds + rest.seconds,
        "kill_to_end_seconds": round(time.monotonic() - killed_at, 1),
        "paused_samples": len(paused),
        "max_in_flight_sampled": max(in_flight),
    }
    # At most 2 jobs at once: three waves, each a suspend; no process while suspended.
    assert len(pauses) >= BATCH_CLIPS // BATCH_CEILING - 1, pauses
    assert paused, "the batch was never seen suspended"
    assert set(paused) == {0}, paused
    assert max(in_flight) <= BATCH_CEILING
    # Every slot back to the limit, the killed wave's too (they were in the record).
    assert _active_slots(stack, BATCH_LIMIT) == 0
    rows = batch_table(stack, created["id"])
    assert len(rows) == BATCH_CLIPS
    assert {row["status"] for row in rows} == {"succeeded"}, rows
    assert len(_batch_outputs(out)) == BATCH_CLIPS
    # Each wave went on from the record: the folder was listed and the clips prepared once.
    logs = _logs_with_waves(stack, created["id"], len(pauses) + 1)
    assert sum("batch: 6 clip(s)" in line for line in logs) == 1, logs
    waves = [line for line in logs if line.startswith("Wave ")]
    assert len(waves) >= len(pauses) + 1, (len(logs), waves, pauses)

    # A re-run with the same inputs (inline this time) reuses every job: none is bought.
    again = _run_batch(stack, folder, out)
    rerun = stack.api.wait_until_final(again["id"], timeout=180)
    assert rerun["state_type"] == "COMPLETED", f"{rerun['state']}\n{stack.logs()}"
    assert _jobs_created(stack) - before == BATCH_CLIPS


def test_9_a_split_aleph_edit_suspends_between_chunk_waves_and_a_failed_job_fails_a_run_with_its_hint(
    stack: Stack, clips: dict[str, Path], tmp_path: Path, slow_jobs: None
) -> None:
    """Three Aleph runs in suspend mode side by side. A one-job edit: its process gone while its
    job runs, resumed, its outputs the manifest's, one job. A 75 s clip with audio, split in 3
    chunks at most 2 at a time, its first chunk job failing on the server: it suspends between
    waves, the failed chunk is bought again once, and the stitched edit (with the audio, within a
    frame of the source) is stored. And a one-job edit whose job fails: woken, it fails with the
    job's error, the hint in its logs."""
    error = "The edit could not keep the subject consistent"
    hint = "Use a shorter clip or a simpler prompt"
    chain = "video-to-layers after an aleph edit"
    long_clip = tmp_path / "long-75s.mp4"
    video.make_sample_clip(long_clip, seconds=75.0, width=160, height=120, fps=12, with_audio=True, seed=48)
    # A stored edit starts Video to Layers on it (prefect.yaml's trigger): not this test's jobs.
    stack.prefect("automation", "pause", chain)
    watcher = start_watcher(stack, "watcher-aleph")
    try:
        before = _jobs_created(stack)
        deployment = stack.api.deployment("aleph-edit", "on-demand")
        prompt = "turn it into a snowy night"
        fail = {"route": GENERATE_ROUTE, "kind": "fail_job", "error": error, "hint": hint}
        stack.emulator("POST", "faults", fail)
        failing = stack.api.run_like_the_ui(
            deployment,
            video=str(clips["aleph-failing"]),
            prompt=prompt,
            destination=str(stack.root / "aleph-f"),
            wait="suspend",
        )
        _wait_suspended(stack, failing["id"])
        # The next job created is the split edit's first chunk: it fails, and is bought again.
        stack.emulator("POST", "faults", {**fail, "error": "chunk failed", "hint": "try again"})
        out = stack.root / "aleph-split-suspend"
        split = {"allow_split": True, "seed": 11, "max_parallel_chunks": 2, "prompt": prompt}
        edit = stack.api.run_like_the_ui(
            deployment, video=str(long_clip), destination=str(out), wait="suspend", **split
        )
        _wait_suspended(stack, edit["id"], timeout=180)
        wait_for("the flow-run process to exit", lambda: not processes_of_flow_run(edit["id"]) or None, 30)
        # Both faults were taken: the one-job edit's job is its own.
        one_out = stack.root / "aleph-suspend"
        one = stack.api.run_like_the_ui(
            deployment, video=str(clips["aleph"]), prompt=prompt, destination=str(one_out), wait="suspend"
        )
        suspended = _wait_suspended(stack, one["id"])
        wait_for("the flow-run process to exit", lambda: not processes_of_flow_run(one["id"]) or None, 30)
        final = stack.api.wait_until_final(edit["id"], timeout=400)
        one_final = stack.api.wait_until_final(one["id"], timeout=180)
        failed = stack.api.wait_until_final(failing["id"], timeout=180)
    finally:
        watcher.stop()
        stack.prefect("automation", "resume", chain)
    assert final["state_type"] == "COMPLETED", f"{final['state']}\n{stack.logs()}"
    assert one_final["state_type"] == "COMPLETED", f"{one_final['state']}\n{stack.logs()}"
    # The failing run's job, 3 chunk jobs and the failed chunk's second job, the one-job edit's.
    assert _jobs_created(stack) - before == 6

    # The one-job edit resumed with the job its first attempt bought; its outputs are the manifest's.
    assert one_final["labels"]["scenario.job_id"] == suspended["labels"]["scenario.paid.job"]
    manifest = read_result(stack, one["id"])["manifest"]
    assert manifest["job_id"] == one_final["labels"]["scenario.job_id"]
    assert manifest["status"] == "success"
    assert manifest["outputs"]
    for entry in manifest["outputs"]:
        file = one_out / entry["path"]
        assert file.stat().st_size == entry["size"]
        assert hashlib.sha256(file.read_bytes()).hexdigest() == entry["sha256"]

    # The split edit.
    pauses = [key for key in final["empirical_policy"]["pause_keys"] if key.startswith("scenario-wait-")]
    assert len(pauses) >= 2, pauses  # 3 chunks, 2 at a time: at least two waves suspended
    result = read_result(stack, edit["id"])["result"]
    chunks = result["chunks"]
    assert [chunk["status"] for chunk in chunks] == ["success"] * 3, chunks
    assert sorted(len(chunk["failed_job_ids"]) for chunk in chunks) == [0, 0, 1], chunks
    assert len({chunk["job_id"] for chunk in chunks}) == 3
    (stitched,) = result["outputs"]
    file = out / stitched["path"]
    assert hashlib.sha256(file.read_bytes()).hexdigest() == stitched["sha256"]
    source, edited = video.probe_video(long_clip), video.probe_video(file)
    assert abs(edited.duration_seconds - source.duration_seconds) <= 1 / 12 + 1e-3
    assert edited.has_audio
    # Each wave went on from the record: the clip was split and uploaded once.
    logs = _logs_with_waves(stack, edit["id"], len(pauses) + 1)
    assert sum("is over Runway Aleph 2's limits" in line for line in logs) == 1, logs
    assert sum(line.startswith("Wave ") for line in logs) >= len(pauses) + 1, logs

    # The failed job: the run was suspended, woken, and failed with the job's own error and hint.
    assert failed["state_type"] == "FAILED", failed["state"]
    assert any(key.startswith("scenario-wait-") for key in failed["empirical_policy"]["pause_keys"])
    assert error in failed["state"]["message"], failed["state"]
    assert hint in " ".join(log["message"] for log in stack.api.logs_of(failing["id"]))


def test_10_a_finished_suspended_batch_retried_buys_only_its_failed_clip_again(
    stack: Stack, tmp_path: Path, batch_jobs: Process
) -> None:
    """As an inline batch's retry: the stored clip comes back from its submit, the failed one is
    paid for anew (the record of a finished batch does not freeze its failures)."""
    folder = _batch_clips(tmp_path / "batch-retried", 2, seed=90)
    out = stack.root / "suspend-batch-retried"
    before = _jobs_created(stack)
    stack.emulator(
        "POST", "faults", {"route": GENERATE_ROUTE, "kind": "fail_job", "error": "no motion found"}
    )
    created = _run_batch(stack, folder, out, wait="suspend")
    first = stack.api.wait_until_final(created["id"], timeout=180)
    assert first["state_type"] == "FAILED", first["state"]
    assert sorted(row["status"] for row in batch_table(stack, created["id"])) == ["failed", "succeeded"]
    assert _jobs_created(stack) - before == 2

    retry = {"state": {"type": "SCHEDULED", "name": "AwaitingRetry"}, "force": True}
    stack.api.post(f"/flow_runs/{created['id']}/set_state", retry)
    final = stack.api.wait_until_final(created["id"], timeout=180)
    assert final["state_type"] == "COMPLETED", f"{final['state']}\n{stack.logs()}"
    assert _jobs_created(stack) - before == 3
    assert len(_batch_outputs(out)) == 2


def test_11_an_aleph_batch_suspends_with_a_long_clip_whose_chunks_ride_the_same_waves(
    stack: Stack, tmp_path: Path, batch_jobs: Process
) -> None:
    """A 31 s clip with audio (2 chunks) and a short clip, a ceiling of 2: the chunks and the clip
    share the waves and the limit; the long clip is stitched once its chunks ended; a rerun buys
    nothing."""
    chain = "video-to-layers after an aleph edit"
    folder = tmp_path / "aleph-batch"
    folder.mkdir()
    long_clip = folder / "long-31s.mp4"
    video.make_sample_clip(long_clip, seconds=31.0, width=160, height=120, fps=12, with_audio=True, seed=93)
    video.make_sample_clip(folder / "short.mp4", seconds=1.0, width=160, height=120, fps=12, seed=94)
    out = stack.root / "suspend-aleph-batch"
    deployment = stack.api.deployment("aleph-edit-batch", "on-demand")
    parameters = {
        "folder": str(folder),
        "destination": str(out),
        "prompt": "turn it into a foggy morning",
        "seed": 5,
        "budget_creative_units": None,
        "concurrency_limit_name": BATCH_LIMIT,
        "concurrency_limit": BATCH_CEILING,
    }
    stack.prefect("automation", "pause", chain)
    try:
        before = _jobs_created(stack)
        created = stack.api.run_like_the_ui(deployment, wait="suspend", **parameters)
        final = stack.api.wait_until_final(created["id"], timeout=300)
        assert final["state_type"] == "COMPLETED", f"{final['state']}\n{stack.logs()}"
        bought = _jobs_created(stack) - before
        again = stack.api.run_like_the_ui(deployment, **parameters)
        rerun = stack.api.wait_until_final(again["id"], timeout=180)
    finally:
        stack.prefect("automation", "resume", chain)
    assert bought == 3  # two chunks and the short clip
    pauses = [key for key in final["empirical_policy"]["pause_keys"] if key.startswith("scenario-wait-")]
    assert pauses, "the batch never suspended"
    result = read_result(stack, created["id"])["result"]
    by_clip = {Path(clip["video"]).name: clip for clip in result["clips"]}
    assert {name: clip["status"] for name, clip in by_clip.items()} == {
        "long-31s.mp4": "succeeded",
        "short.mp4": "succeeded",
    }
    long_result = by_clip["long-31s.mp4"]
    assert len(long_result["chunk_job_ids"]) == 2
    assert any("split into 2 chunks" in note for note in long_result["notes"]), long_result["notes"]
    (stitched,) = long_result["outputs"]
    edited = video.probe_video(out / stitched["path"])
    assert abs(edited.duration_seconds - video.probe_video(long_clip).duration_seconds) <= 1 / 12 + 1e-3
    assert edited.has_audio
    logs = [log["message"] for log in stack.api.logs_of(created["id"])]
    assert sum("is over Runway Aleph 2's limits" in line for line in logs) == 1, logs
    assert _active_slots(stack, BATCH_LIMIT) == 0
    assert rerun["state_type"] == "COMPLETED", f"{rerun['state']}\n{stack.logs()}"
    assert _jobs_created(stack) - before == 3
