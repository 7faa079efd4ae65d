"""Crash safety of the paid path, measured from outside, as a user's machine would see it.

Everything runs the real product in processes of its own (the ``prefect-scenario`` CLI, or a batch
flow in a ``python -c`` process) against the emulator and a Prefect server (SQLite), each in a
process of its own, and kills with SIGKILL (the whole process group: nothing runs a ``finally``):

* ``window``: the submit window, from the moment the emulator created the job (the paid POST was
  answered) to the moment a durable record holding the job id existed on disk (a persisted task
  result or a submission-ledger entry). A crash inside it is what used to buy a second job.
* ``kills``: for both models, the CLI killed at each phase (upload started, job just created, job
  running, download under way, report), then the identical command run again; plus many kills
  right after the job was created. Each trial: jobs per distinct input, outputs checked against
  the manifest (size, sha256), and what was left behind (partial files, temporary folders,
  undelivered ledger entries, flow runs still "Running").
* ``batch``: a batch of clips killed mid-submit, then run again: jobs per input, outputs.
* ``soak``: a batch under faults on every route (probability per request), server-side job
  failures and short signed-URL lifetimes, then a rerun: 0 duplicates, 0 lost outputs, and the
  rerun buys exactly the clips that failed.

``python -m bench crash`` (``make soak``) runs all of it; ``--quick`` runs a bounded form.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench._common import REPO, child_env
from bench._services import EMULATOR_KEY, EMULATOR_SECRET, Emulator, Service

CLI = [sys.executable, "-m", "prefect_scenario.cli"]
INSTRUCTION = "each moving object apart from the background"


# -- helpers ---------------------------------------------------------------------------------------


def _env(emulator: Emulator, prefect: Service, work: Path) -> dict[str, str]:
    return child_env(
        {
            **prefect.extra["env"],
            "SCENARIO_SDK_API_KEY": EMULATOR_KEY,
            "SCENARIO_SDK_API_SECRET": EMULATOR_SECRET,
            "SCENARIO_BASE_URL": emulator.base_url,
            # Temporary folders of the runs go here, so the litter they leave can be counted.
            "TMPDIR": str(work / "tmp"),
            # An unanswered submit is looked for again this long after it was sent.
            "PREFECT_SCENARIO_SUBMIT_SETTLE_SECONDS": "8",
        }
    )


def layers_command(clip: Path, instruction: str, out: Path) -> list[str]:
    """The CLI command of one Video to Layers run."""
    return [*CLI, "layers", str(clip), "--instruction", instruction, "--max-layers", "3", "--out", str(out)]


def edit_command(clip: Path, prompt: str, out: Path) -> list[str]:
    """The CLI command of one seedless Aleph edit (never reused across runs, by design)."""
    return [*CLI, "edit", str(clip), "--prompt", prompt, "--out", str(out)]


def _api(emulator: Emulator, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(
        f"{emulator.base_url}{path}", params=params, auth=(EMULATOR_KEY, EMULATOR_SECRET), timeout=30
    )
    response.raise_for_status()
    return dict(response.json())


def all_jobs(emulator: Emulator) -> list[dict[str, Any]]:
    """Every custom job on the emulator, across pages."""
    jobs: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        params: dict[str, Any] = {"type": "custom", "pageSize": 100, "updatedAfter": "2000-01-01T00:00:00Z"}
        if token:
            params["paginationToken"] = token
        page = _api(emulator, "/jobs", **params)
        jobs += page.get("jobs", [])
        token = page.get("nextPaginationToken")
        if not token:
            return jobs


def jobs_per_input(emulator: Emulator) -> Counter[str]:
    """How many jobs were bought for each distinct input (model + body)."""
    return Counter(
        json.dumps(job.get("metadata", {}).get("input"), sort_keys=True) for job in all_jobs(emulator)
    )


def _parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _durable_records(root: Path, job_id: str) -> list[float]:
    """When each file under ``root`` that holds ``job_id`` first held it.

    A persisted result is written once: its mtime. A ledger entry is rewritten (delivered, later):
    the time it recorded the job id, ``answered_at``, written with it.
    """
    needle = job_id.encode()
    found: list[float] = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        hit = needle in data
        if hit and path.parent.name == "prefect-scenario-ledger":
            with contextlib.suppress(ValueError, TypeError, KeyError):
                entry = json.loads(data)
                if entry.get("job_id") == job_id and entry.get("answered_at"):
                    found.append(_parse_time(entry["answered_at"]))
                    continue
        if not hit:
            with contextlib.suppress(ValueError, TypeError):
                record = json.loads(data)
                result = record.get("result") if isinstance(record, dict) else None
                hit = isinstance(result, str) and needle in base64.b64decode(result)
        if hit:
            found.append(path.stat().st_mtime)
    return found


def verify_manifest(out: Path) -> tuple[str, int]:
    """The job id of ``out/manifest.json`` and how many outputs match it (size and sha256)."""
    manifest = json.loads((out / "manifest.json").read_text())
    good = 0
    for entry in manifest["outputs"]:
        file = out / entry["path"]
        if file.is_file() and file.stat().st_size == entry["size"]:
            good += hashlib.sha256(file.read_bytes()).hexdigest() == entry["sha256"]
    if good != len(manifest["outputs"]):
        raise RuntimeError(f"{out}: {good} of {len(manifest['outputs'])} outputs match the manifest")
    return str(manifest["job_id"]), good


def litter(work: Path, out: Path, results: Path) -> dict[str, int]:
    """What killed runs left that nothing will remove."""
    ledger = results / "prefect-scenario-ledger"
    undelivered = 0
    for path in ledger.glob("*.json") if ledger.is_dir() else ():
        undelivered += json.loads(path.read_text()).get("state") in ("submitting", "submitted")
    tmp = work / "tmp"
    return {
        "part_files": sum(1 for _ in out.rglob("*.part")) if out.exists() else 0,
        "temp_folders": sum(1 for p in tmp.glob("prefect-scenario-*")) if tmp.exists() else 0,
        "undelivered_ledger_entries": undelivered,
    }


@contextlib.contextmanager
def _spawn(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def kill_when(
    command: list[str], env: dict[str, str], log: Path, ready: Callable[[], bool], *, deadline: float = 300
) -> float | None:
    """Run ``command``; SIGKILL its process group the moment ``ready()`` is true.

    Returns:
        Seconds from start to the kill; None when the run ended first.
    """
    started = time.monotonic()
    with _spawn(command, env, log) as process:
        while time.monotonic() - started < deadline:
            if ready():
                os.killpg(process.pid, signal.SIGKILL)
                return round(time.monotonic() - started, 2)
            if process.poll() is not None:
                return None
            time.sleep(0.01)
    raise RuntimeError(f"the kill point was not reached within {deadline} s: see {log}")


def run_to_end(
    command: list[str], env: dict[str, str], *, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` until it ends; its output is captured."""
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


# -- the window --------------------------------------------------------------------------------------


def measure_window(
    emulator: Emulator, prefect: Service, clip: Path, *, runs: int, work: Path
) -> dict[str, Any]:
    """Seconds from "the job exists on the server" to "a durable record of it exists", per run."""
    env = _env(emulator, prefect, work)
    results_root = Path(env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"])
    windows: list[float] = []
    for run in range(runs):
        out = work / f"window-{run}"
        done = run_to_end(layers_command(clip, f"window run {run}: each shape apart", out), env)
        if done.returncode != 0:
            raise RuntimeError(f"window run {run} failed: {done.stderr[-2000:]}")
        job_id, _ = verify_manifest(out)
        created = _parse_time(_api(emulator, f"/jobs/{job_id}")["job"]["createdAt"])
        records = _durable_records(results_root, job_id)
        if not records:
            raise RuntimeError(f"no durable record of {job_id} under {results_root}")
        windows.append(round(min(records) - created, 3))
        print(f"   window run {run}: {job_id} durable {windows[-1]:.3f} s after it was created", flush=True)
    return {
        "runs": runs,
        "window_seconds": windows,
        "median_seconds": round(statistics.median(windows), 3),
        "max_seconds": max(windows),
    }


# -- kills at each phase -----------------------------------------------------------------------------


def _requests(emulator: Emulator, route: str) -> int:
    return int(emulator.stats()["requests"].get(route, 0))


PHASES = ("upload_started", "job_created", "job_running", "downloading", "reporting")


def _phase_trigger(phase: str, emulator: Emulator, out: Path) -> Callable[[], bool]:
    base = emulator.stats()
    jobs0 = int(base["jobs_created"])
    uploads0 = _requests(emulator, "POST /v1/uploads")
    files0 = _requests(emulator, "GET /files/{assetId}")
    seen: dict[str, float] = {}

    def job_created() -> bool:
        return int(emulator.stats()["jobs_created"]) > jobs0

    def ready() -> bool:
        if phase == "upload_started":
            return _requests(emulator, "POST /v1/uploads") > uploads0
        if phase == "job_created":
            return job_created()
        if phase == "job_running":
            if "at" not in seen and job_created():
                seen["at"] = time.monotonic()
            return "at" in seen and time.monotonic() - seen["at"] > 1.0
        if phase == "downloading":
            return _requests(emulator, "GET /files/{assetId}") > files0
        # reporting: every output stored, the manifest not yet written
        folders = [p for p in out.glob("job_*") if p.is_dir()] if out.exists() else []
        stored = any(f for d in folders for f in d.iterdir() if not f.name.startswith("."))
        return stored and not (out / "manifest.json").exists()

    return ready


def kill_trial(
    emulator: Emulator, env: dict[str, str], command: list[str], out: Path, phase: str, log: Path
) -> dict[str, Any]:
    """One kill at ``phase`` and one rerun of the same command."""
    emulator.reset()
    if phase == "downloading":
        # Downloads of a few hundred KB take milliseconds: hold each file a while.
        emulator.control(
            "POST",
            "/_emulator/faults",
            json=[{"route": "GET /files/{assetId}", "kind": "delay", "seconds": 3, "count": 1}],
        )
    killed_at = kill_when(command, env, log, _phase_trigger(phase, emulator, out))
    done = run_to_end(command, env)
    if done.returncode != 0:
        raise RuntimeError(f"rerun after a kill at {phase} failed: {done.stderr[-2000:]}")
    job_id, outputs = verify_manifest(out)
    per_input = jobs_per_input(emulator)
    return {
        "phase": phase,
        "killed_after_seconds": killed_at,
        "jobs": sum(per_input.values()),
        "duplicates": sum(n - 1 for n in per_input.values() if n > 1),
        "outputs_verified": outputs,
        "job_id": job_id,
    }


def run_kills(
    emulator: Emulator, prefect: Service, clip: Path, work: Path, *, repeats: int
) -> dict[str, Any]:
    """Every phase once per model, then ``repeats`` more kills right after the job was created."""
    env = _env(emulator, prefect, work)
    results = Path(env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"])
    trials: list[dict[str, Any]] = []
    plan = [(model, phase) for model in ("layers", "edit") for phase in PHASES]
    plan += [(model, "job_created") for _ in range(repeats) for model in ("layers", "edit")]
    for number, (model, phase) in enumerate(plan):
        out = work / f"kill-{number}"
        # Inputs of each trial's own: a trial never finds another trial's job.
        command = (
            layers_command(clip, f"{INSTRUCTION} (trial {number})", out)
            if model == "layers"
            else edit_command(clip, f"a watercolor painting (trial {number})", out)
        )
        trial = {
            "model": model,
            **kill_trial(emulator, env, command, out, phase, work / f"kill-{number}.log"),
        }
        trial["left_behind"] = litter(work, out, results)
        trials.append(trial)
        print(f"   kill {number} {model} at {phase}: {trial}", flush=True)
    created = [t for t in trials if t["phase"] == "job_created"]
    return {
        "trials": trials,
        "kills": len(trials),
        "kills_right_after_job_created": len(created),
        "duplicates": sum(t["duplicates"] for t in trials),
        "jobs_per_trial_max": max(t["jobs"] for t in trials),
        "outputs_lost": 0,  # verify_manifest raises on any mismatch
        "left_behind": {key: sum(t["left_behind"][key] for t in trials) for key in trials[0]["left_behind"]},
    }


# -- batches --------------------------------------------------------------------------------------


BATCH_SCRIPT = """
import asyncio, json, sys
from prefect_scenario.flows.batch import video_to_layers_batch

async def main():
    state = await video_to_layers_batch(
        sys.argv[1], max_layers=2, videos=json.loads(sys.argv[2]), destination=sys.argv[3],
        concurrency_limit_name=None, return_state=True,
    )
    result = await state.aresult(raise_on_failure=False)
    print("BATCH-RESULT " + json.dumps([
        {"video": c.video, "status": c.status, "job_id": c.job_id, "error": c.error,
         "outputs": [[o.location, o.size, o.sha256] for o in c.outputs]}
        for c in result.clips
    ]), flush=True)

asyncio.run(main())
"""


def _batch_command(clips: list[str], out: Path, instruction: str = INSTRUCTION) -> list[str]:
    return [sys.executable, "-c", BATCH_SCRIPT, instruction, json.dumps(clips), str(out)]


def _batch_outcome(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    for line in done.stdout.splitlines():
        if line.startswith("BATCH-RESULT "):
            return list(json.loads(line.removeprefix("BATCH-RESULT ")))
    raise RuntimeError(f"the batch printed no result: {done.stderr[-3000:]}")


def _verified_outputs(clips: list[dict[str, Any]]) -> int:
    good = 0
    for clip in clips:
        for location, size, sha in clip["outputs"]:
            path = Path(location)
            if path.is_file() and path.stat().st_size == size:
                good += hashlib.sha256(path.read_bytes()).hexdigest() == sha
    return good


def batch_kill(emulator: Emulator, prefect: Service, clips: list[str], work: Path) -> dict[str, Any]:
    """A batch killed once half its jobs exist, then run again."""
    env = _env(emulator, prefect, work)
    emulator.reset()
    out = work / "batch-kill"
    half = len(clips) // 2
    killed = kill_when(
        _batch_command(clips, out),
        env,
        work / "batch-kill.log",
        lambda: int(emulator.stats()["jobs_created"]) >= half,
    )
    jobs_at_kill = int(emulator.stats()["jobs_created"])
    done = run_to_end(_batch_command(clips, out), env, timeout=900)
    outcome = _batch_outcome(done)
    per_input = jobs_per_input(emulator)
    outputs = sum(len(c["outputs"]) for c in outcome)
    return {
        "clips": len(clips),
        "killed_after_seconds": killed,
        "jobs_when_killed": jobs_at_kill,
        "jobs": sum(per_input.values()),
        "distinct_inputs": len(per_input),
        "duplicates": sum(n - 1 for n in per_input.values() if n > 1),
        "succeeded": sum(c["status"] == "succeeded" for c in outcome),
        "outputs": outputs,
        "outputs_verified": _verified_outputs(outcome),
    }


def soak(
    emulator: Emulator, prefect: Service, clips: list[str], work: Path, *, fault_rate: float
) -> dict[str, Any]:
    """A batch under faults on every route, job failures and short URL lifetimes; then a rerun."""
    env = _env(emulator, prefect, work)
    emulator.reset()
    emulator.configure(failure_rate=0.05, asset_url_ttl_seconds=3)
    kinds = [
        {"kind": "status", "status": 503},
        {"kind": "reset"},
        {"kind": "reset_after_accept"},
        {"kind": "delay", "seconds": 1.5},
        {"kind": "truncate"},
    ]
    rules = [
        {"route": "*", "count": 100_000, "probability": fault_rate / len(kinds), **kind} for kind in kinds
    ]
    emulator.control("POST", "/_emulator/faults", json=rules)
    out = work / "soak"
    try:
        first = _batch_outcome(run_to_end(_batch_command(clips, out), env, timeout=1800))
        # The faults are the product's to weather, not this check's: its own reads of the jobs below
        # would meet them too (a truncated body failed the suite once).
        emulator.control("DELETE", "/_emulator/faults")
        after_first = jobs_per_input(emulator)
        failed_first = [c for c in first if c["status"] != "succeeded"]
        # A failed clip whose job succeeded on the server (its download failed, say) must be adopted by
        # the rerun; one with no job, or a failed job, is bought (once).
        # A clip with no job id may still own a job (its answer was lost): any good job of the first run
        # that no clip names is such a job, and is adopted, not bought.
        named = {c["job_id"] for c in first if c["job_id"]}
        unnamed_good = sum(
            1 for job in all_jobs(emulator) if job["jobId"] not in named and job.get("status") != "failure"
        )
        to_buy = (
            sum(
                1
                for c in failed_first
                if not c["job_id"] or _api(emulator, f"/jobs/{c['job_id']}")["job"]["status"] != "success"
            )
            - unnamed_good
        )
        emulator.configure(failure_rate=0.0)
        second = _batch_outcome(run_to_end(_batch_command(clips, out), env, timeout=1800))
    finally:
        emulator.control("DELETE", "/_emulator/faults")
        emulator.configure(failure_rate=0.0, asset_url_ttl_seconds=3600)
    after_second = jobs_per_input(emulator)
    stats = emulator.stats()
    bought_by_rerun = sum(after_second.values()) - sum(after_first.values())
    # A duplicate: two jobs for one input that did not fail on the server (a failed job is re-bought).
    good_jobs = Counter(
        json.dumps(job.get("metadata", {}).get("input"), sort_keys=True)
        for job in all_jobs(emulator)
        if job.get("status") != "failure"
    )
    return {
        "clips": len(clips),
        "fault_rate_per_request": fault_rate,
        "faults_fired": stats.get("faults_fired"),
        "jobs_failed_on_server": stats.get("jobs_failed_by_faults"),
        "first_run": {
            "succeeded": len(first) - len(failed_first),
            "failed": len(failed_first),
            "errors": sorted({(c["error"] or "")[:120] for c in failed_first})[:10],
        },
        "rerun": {
            "succeeded": sum(c["status"] == "succeeded" for c in second),
            "jobs_bought": bought_by_rerun,
        },
        "duplicates": sum(n - 1 for n in good_jobs.values() if n > 1),
        "outputs": sum(len(c["outputs"]) for c in second),
        "outputs_verified": _verified_outputs(second),
        "rerun_should_buy": to_buy,
        "rerun_bought_exactly_the_failed_clips": bought_by_rerun == to_buy,
    }


# -- entry points ---------------------------------------------------------------------------------


def run(*, prefect: Service, log_dir: Path, quick: bool) -> dict[str, Any]:
    """The crash section of ``python -m bench``."""
    from bench._batch import make_clips
    from bench._services import emulator as start_emulator
    from prefect_scenario import video

    work = Path(tempfile.mkdtemp(prefix="bench-crash-"))
    (work / "tmp").mkdir()
    clip = work / "clip.mp4"
    video.make_sample_clip(clip, seconds=2.0, width=160, height=120, fps=12, moving_objects=2)
    section: dict[str, Any] = {}
    with start_emulator(log_dir=log_dir, job_seconds=3.0, fake_model="real") as emulator:
        section["window"] = measure_window(emulator, prefect, clip, runs=3 if quick else 10, work=work)
        # Every phase once per model, then more kills right after the job was created: 20 such in all.
        section["kills"] = run_kills(emulator, prefect, clip, work, repeats=1 if quick else 9)
        clips = make_clips(work / "clips", 4 if quick else 12, seconds=1.0, width=96, height=64, fps=8)
        section["batch_kill"] = batch_kill(emulator, prefect, clips, work)
    with start_emulator(log_dir=log_dir, job_seconds=2.0) as emulator:
        soak_clips = make_clips(
            work / "soak-clips", 8 if quick else 50, seconds=1.0, width=96, height=64, fps=8
        )
        section["soak"] = soak(emulator, prefect, soak_clips, work, fault_rate=0.10)
    return section


def main() -> None:
    """``python -m bench.crash window N``: the window alone, with services of its own."""
    from bench._services import emulator as start_emulator
    from bench._services import prefect_server
    from prefect_scenario import video

    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    work = Path(tempfile.mkdtemp(prefix="bench-crash-"))
    (work / "tmp").mkdir()
    clip = work / "clip.mp4"
    video.make_sample_clip(clip, seconds=2.0, width=160, height=120, fps=12, moving_objects=2)
    with (
        prefect_server(log_dir=work / "logs") as prefect,
        start_emulator(log_dir=work / "logs", job_seconds=1.0) as emulator,
    ):
        print(json.dumps(measure_window(emulator, prefect, clip, runs=runs, work=work), indent=1))


if __name__ == "__main__":
    main()
