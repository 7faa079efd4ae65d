"""Suspend: a layers batch waiting on its jobs in its flow-run process (``wait="inline"``) beside one
that suspends between wake-ups (``wait="suspend"``), at 50 and 200 clips.

The claim to show: a batch of 200 clips (emulator job time 60 s, custom-job ceiling 20) in suspend
mode completes with every output stored, no duplicate job, and no worker child process alive while
it waits between wake-ups; and what that costs beside inline mode: Scenario API requests per job,
Prefect server CPU and flow CPU per clip, process-seconds held, at 50 and 200 clips (linear or not).
(The watcher's requests per sweep at 1,000 jobs in flight is ``bench/watcher.py``'s.)

The stack is the fleet benchmark's (``bench/fleet.py``, imported, not copied): a Prefect server of
its own (SQLite unless ``--database postgresql``), the emulator in its own process (job time and a
custom-job ceiling of C), ``prefect deploy --all`` from ``prefect.yaml`` to a ``process`` work pool,
and ONE ``prefect worker start`` for the whole section. Per run (one mode, one N):

* the emulator is reset and the credentials block gets a fresh project id (nothing cached);
* a fresh ``prefect-scenario watch --credentials scenario --interval-seconds S`` is started next to
  the worker (in both modes, so both have the same processes; it reads the block when it starts);
* ``video-to-layers-batch/on-demand`` is run through the REST API as the UI's Run button does, with
  the N clips, ``review=False``, no budget, ``concurrency_limit=C`` on a limit name of its own and,
  in suspend mode, ``wait="suspend"``;
* every 0.5 s, until the run is terminal: the worker's child processes (the flow-run processes,
  read from /proc) and the run's state type. Process-seconds held = the sum of children × the time
  between samples; samples in PAUSED with 0 and with more than 0 flow-run processes alive;
* then: wall (the run's ``created`` → ``end_time`` on the server), final state, the clips' statuses
  (the batch's table artifact), files stored under the destination, the emulator's counters (jobs
  created, most jobs in flight, requests by route: the worker's flow runs' and the watcher's), jobs
  per distinct input (a duplicate is a second job for one input), the run's suspends and resumes
  (its state history), and CPU over the run: the Prefect server's, the flow-run processes' (the
  worker's reaped children), the worker's own, the watcher's, the emulator's.

Suspend rows run only when the batch flow takes a ``wait`` parameter (the deployment's parameter
schema); otherwise they are recorded as skipped.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import math
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench._batch import make_clips
from bench._common import ratio
from bench._services import Emulator, Service, emulator, prefect_server
from bench.crash import jobs_per_input
from bench.fleet import (
    CREDENTIALS_BLOCK,
    TERMINAL,
    UI_RUN_STATE,
    WORKERS_MARKER,
    _cpu_with_reaped,
    _Fleet,
    _kill_marked,
    _postmaster,
    _stat_fields,
    _Worker,
    marked_section,
)
from bench.overhead import MAX_LAYERS

MODES = ("inline", "suspend")
SIZES = (50, 200)
JOB_SECONDS = 60.0
CEILING = 20
SWEEP_SECONDS = 5.0
# --quick: sizes, job seconds, ceiling, sweep seconds.
QUICK_SIZES, QUICK_JOB_SECONDS, QUICK_CEILING, QUICK_SWEEP_SECONDS = (6, 12), 5.0, 3, 2.0
SAMPLE_SECONDS = 0.5
SKIPPED = "the batch flows have no wait parameter yet"
# Per-clip figures compared across modes and sizes (suspend / inline; the larger N / the smaller).
PER_CLIP = (
    "wall_seconds",
    "api_requests",
    "prefect_server_cpu_seconds",
    "flow_cpu_seconds",
    "worker_cpu_seconds",
    "watcher_cpu_seconds",
    "emulator_cpu_seconds",
    "process_seconds",
)


# -- processes ----------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """Live (not zombie) child processes of ``pid``: a worker's flow-run processes."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _cpu_split(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid`` itself, and of its children (live ones and those it reaped)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    own = (int(fields[11]) + int(fields[12])) / tick
    return own, (_cpu_with_reaped(pid) or own) - own


@contextlib.contextmanager
def _watcher(fleet: _Fleet, interval: float, marker: str, name: str) -> Iterator[_Worker]:
    """``prefect-scenario watch`` on the block the deployments name, until it says it watches."""
    command = [sys.executable, "-m", "prefect_scenario.cli", "watch", "--credentials", CREDENTIALS_BLOCK]
    command += ["--interval-seconds", f"{interval:g}"]
    log = fleet.log_dir / f"suspend-{name}.log"
    watcher = fleet.start(name, command, log, marker)
    process = watcher.process
    try:
        deadline = time.monotonic() + 120
        while b"Watching" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"watcher not watching (exit {process.poll()}):\n{tail}")
            time.sleep(0.2)
        yield watcher
    finally:
        watcher.stop()


# -- one run --------------------------------------------------------------------------------------


def _sample(fleet: _Fleet, run_id: str, worker: int, timeout: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Poll the run's state and the worker's children every SAMPLE_SECONDS until it is terminal."""
    started = time.monotonic()
    previous = started
    held = 0.0
    samples = paused_idle = paused_busy = 0
    streak_started: float | None = None
    longest_busy_paused = 0.0
    seen: set[int] = set()
    most = 0
    final = fleet.api.call("GET", f"/flow_runs/{run_id}")
    while final["state_type"] not in TERMINAL and time.monotonic() - started < timeout:
        time.sleep(max(0.0, SAMPLE_SECONDS - (time.monotonic() - previous)))
        alive = _children(worker)
        now = time.monotonic()
        final = fleet.api.call("GET", f"/flow_runs/{run_id}")
        held += len(alive) * (now - previous)
        previous = now
        samples += 1
        seen.update(alive)
        most = max(most, len(alive))
        if final["state_type"] == "PAUSED":
            paused_idle += not alive
            paused_busy += bool(alive)
        # The longest stretch in PAUSED with a flow-run process still alive (its exit after suspending).
        if final["state_type"] == "PAUSED" and alive:
            streak_started = now if streak_started is None else streak_started
            longest_busy_paused = max(longest_busy_paused, now - streak_started)
        else:
            streak_started = None
    return final, {
        "observed_seconds": round(time.monotonic() - started, 1),
        "samples": samples,
        "sample_seconds": SAMPLE_SECONDS,
        "process_seconds": round(held, 1),
        "flow_processes_started": len(seen),
        "flow_processes_at_once_max": most,
        "paused_samples_with_0_alive": paused_idle,
        "paused_samples_with_alive": paused_busy,
        "paused_alive_longest_seconds": round(longest_busy_paused, 1),
    }


def _history(fleet: _Fleet, run_id: str) -> dict[str, Any]:
    """Suspends and resumes of a run, from its state history."""
    states = fleet.api.call("GET", f"/flow_run_states/?flow_run_id={run_id}")
    states.sort(key=lambda state: state["timestamp"])
    kinds = [state["type"] for state in states]
    return {
        "suspends": kinds.count("PAUSED"),
        "resumes": sum(1 for a, b in itertools.pairwise(kinds) if a == "PAUSED" and b != "PAUSED"),
        "runs_started": kinds.count("RUNNING"),
        "states": len(kinds),
    }


def _one(
    fleet: _Fleet,
    worker: _Worker,
    clips: list[str],
    *,
    mode: str,
    ceiling: int,
    sweep_seconds: float,
    timeout: float,
) -> dict[str, Any]:
    emu, server = fleet.emu, fleet.server
    emu.reset()
    project_id = f"proj_suspend{uuid.uuid4().hex[:12]}"
    fleet.save_credentials(project_id)
    destination = fleet.workdir / "outputs" / f"{mode}-{len(clips)}-{uuid.uuid4().hex[:6]}"
    marker = uuid.uuid4().hex
    row: dict[str, Any] = {"mode": mode, "clips": len(clips), "project_id": project_id}
    parameters: dict[str, Any] = {
        "videos": clips,
        "destination": str(destination),
        "max_layers": MAX_LAYERS,
        "concurrency_limit_name": f"suspend-{uuid.uuid4().hex[:8]}",
        "concurrency_limit": ceiling,
        "review": False,
        "budget_creative_units": None,
    }
    if mode != "inline":
        parameters["wait"] = mode
    try:
        with _watcher(fleet, sweep_seconds, marker, f"watcher-{mode}-{len(clips)}") as watcher:
            pid = worker.process.pid
            server_before, emulator_before = server.cpu_seconds(), emu.service.cpu_seconds()
            (own_before, children_before), postgres_before = (
                _cpu_split(pid),
                _cpu_with_reaped(fleet.postmaster),
            )
            watcher_before = _cpu_with_reaped(watcher.process.pid) or 0.0
            run = fleet.api.call(
                "POST",
                f"/deployments/{fleet.deployment['id']}/create_flow_run",
                {"parameters": parameters, "state": UI_RUN_STATE},
            )
            final, row["processes"] = _sample(fleet, run["id"], pid, timeout)
            # The last flow-run process reaped, so its CPU is in the worker's children's.
            deadline = time.monotonic() + 30
            while _children(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            row["flow_processes_after_end"] = len(_children(pid))
            own, children = _cpu_split(pid)
            row["worker_cpu_seconds"] = round(own - own_before, 2)
            row["flow_cpu_seconds"] = round(children - children_before, 2)
            row["watcher_cpu_seconds"] = round(
                (_cpu_with_reaped(watcher.process.pid) or 0.0) - watcher_before, 2
            )
            row["prefect_server_cpu_seconds"] = round(server.cpu_seconds() - server_before, 2)
            row["emulator_cpu_seconds"] = round(emu.service.cpu_seconds() - emulator_before, 2)
            postgres = _cpu_with_reaped(fleet.postmaster)
            if postgres is not None and postgres_before is not None:
                row["postgres_cpu_seconds"] = round(postgres - postgres_before, 2)
        fleet.cancel_unfinished(final, row)
        figures = fleet._figures(final, len(clips), destination)
        # Read before the job listing below, whose own requests would count.
        stats = fleet.emu.stats()
        requests = stats["requests"]
        inputs = jobs_per_input(emu)
        row.update({key: figures[key] for key in ("flow_run_id", "state", "message", "wall_seconds")})
        row.update({key: figures[key] for key in ("jobs_created", "max_jobs_in_flight", "clip_statuses")})
        row["outputs_stored"] = figures["outputs_stored"]
        row["clips_with_outputs"] = len(
            {p.relative_to(destination).parts[0] for p in destination.rglob("*") if p.is_file()}
        )
        row["all_outputs_stored"] = row["clips_with_outputs"] == len(clips) and figures["clip_statuses"].get(
            "succeeded"
        ) == len(clips)
        row["duplicate_jobs"] = sum(n - 1 for n in inputs.values() if n > 1)
        row["api_requests"] = sum(requests.values())
        row["api_requests_by_route"] = requests
        row["api_requests_per_job"] = ratio(row["api_requests"], row["jobs_created"])
        # The submit's free estimate: a second POST /generate/custom per job.
        row["dry_runs"] = stats.get("dry_runs")
        row.update(_history(fleet, run["id"]))
        row["per_clip"] = {
            key: round(value / len(clips), 3)
            for key in PER_CLIP
            if (value := row.get(key, row["processes"].get(key))) is not None
        }
    finally:
        row["left_running_after_watcher"] = _kill_marked(WORKERS_MARKER, marker)
        shutil.rmtree(destination, ignore_errors=True)
    return row


# -- the section ----------------------------------------------------------------------------------


def wait_parameter(fleet: _Fleet | None = None) -> dict[str, bool]:
    """Whether the batch flows take ``wait``: in the code, and in the deployed parameter schema."""
    from prefect_scenario.flows.batch import aleph_edit_batch, video_to_layers_batch

    found = {
        name: "wait" in inspect.signature(flow.fn).parameters
        for name, flow in (
            ("video_to_layers_batch", video_to_layers_batch),
            ("aleph_edit_batch", aleph_edit_batch),
        )
    }
    if fleet is not None:
        schema = fleet.deployment.get("parameter_openapi_schema") or {}
        found["deployment"] = "wait" in (schema.get("properties") or {})
    return found


def _compare(rows: list[dict[str, Any]], sizes: tuple[int, ...]) -> dict[str, Any]:
    """Per-clip ratios: suspend / inline at each size, and the largest size / the smallest per mode."""
    cells = {(row["mode"], row["clips"]): row.get("per_clip") or {} for row in rows}
    mode_ratio = {
        str(size): {
            key: ratio(cells.get(("suspend", size), {}).get(key), cells.get(("inline", size), {}).get(key))
            for key in PER_CLIP
        }
        for size in sizes
    }
    small, large = min(sizes), max(sizes)
    size_ratio = {
        mode: {
            key: ratio(cells.get((mode, large), {}).get(key), cells.get((mode, small), {}).get(key))
            for key in PER_CLIP
        }
        for mode in MODES
    }

    def marginal(mode: str, key: str) -> float | None:
        """What one more clip adds: the larger run's total less the smaller's, per extra clip."""
        low, high = cells.get((mode, small), {}).get(key), cells.get((mode, large), {}).get(key)
        if low is None or high is None or large == small:
            return None
        return round((float(high) * large - float(low) * small) / (large - small), 3)

    return {
        "suspend_over_inline": mode_ratio,
        "large_over_small": size_ratio,
        "marginal_per_clip": {mode: {key: marginal(mode, key) for key in PER_CLIP} for mode in MODES},
        "small": small,
        "large": large,
    }


def run(
    *,
    log_dir: Path,
    quick: bool = False,
    sizes: tuple[int, ...] | None = None,
    job_seconds: float | None = None,
    ceiling: int | None = None,
    sweep_seconds: float | None = None,
    database: str = "sqlite",
) -> dict[str, Any]:
    """Run the suspend benchmark (a server of its own); returns its section of the report."""
    sizes = tuple(sizes or (QUICK_SIZES if quick else SIZES))
    job_seconds = job_seconds or (QUICK_JOB_SECONDS if quick else JOB_SECONDS)
    ceiling = ceiling or (QUICK_CEILING if quick else CEILING)
    sweep_seconds = sweep_seconds or (QUICK_SWEEP_SECONDS if quick else SWEEP_SECONDS)
    section: dict[str, Any] = {
        "description": "a layers batch in wait='inline' and wait='suspend' mode, from a deployment, "
        "one process worker and a watcher",
        "sizes": list(sizes),
        "job_seconds": job_seconds,
        "ceiling": ceiling,
        "sweep_seconds": sweep_seconds,
        "max_layers": MAX_LAYERS,
        "database": database,
        "sample_seconds": SAMPLE_SECONDS,
        "rows": [],
    }
    with marked_section(section, "bench-suspend-") as marked, contextlib.ExitStack() as stack:
        workdir, marker = marked.workdir, marked.marker
        clips = make_clips(workdir / "clips", max(sizes), seconds=2.0, width=160, height=120, fps=12)
        print(f"   starting a Prefect server on {database}...", flush=True)
        server: Service = stack.enter_context(
            prefect_server(log_dir=log_dir / "suspend-server", database=database)
        )
        marked.postmaster = _postmaster(server)
        emu: Emulator = stack.enter_context(
            emulator(
                log_dir=log_dir / "suspend-emulator",
                job_seconds=job_seconds,
                fake_model="copy",
                concurrency_ceiling=ceiling,
            )
        )
        fleet = _Fleet(server, emu, workdir, log_dir, marker)
        stack.callback(fleet.api.close)
        fleet.deploy()
        section["setup"] = fleet.setup_seconds
        section["wait_parameter"] = wait_parameter(fleet)
        modes = [m for m in MODES if m == "inline" or section["wait_parameter"]["deployment"]]
        print(
            f"   deployed ({fleet.setup_seconds}); wait parameter: {section['wait_parameter']}",
            flush=True,
        )
        (worker,) = fleet.start_workers(1, marker)
        stack.callback(worker.stop)
        # Warm-up, not measured: the fake model's first (real) run, the worker's first flow run.
        emu.configure(job_seconds=1.0)
        section["warm_up"] = _one(
            fleet,
            worker,
            clips[:1],
            mode="inline",
            ceiling=ceiling,
            sweep_seconds=sweep_seconds,
            timeout=300,
        ).get("state")
        emu.configure(job_seconds=job_seconds)
        for index, size in enumerate(sizes):
            # The order alternates with the size, so drifting load hits both modes alike.
            for mode in MODES if index % 2 == 0 else MODES[::-1]:
                if mode not in modes:
                    section["rows"].append({"mode": mode, "clips": size, "skipped": SKIPPED})
                    continue
                waves = math.ceil(size / ceiling)
                timeout = 600 + 3 * waves * (job_seconds + sweep_seconds)
                try:
                    row = _one(
                        fleet,
                        worker,
                        clips[:size],
                        mode=mode,
                        ceiling=ceiling,
                        sweep_seconds=sweep_seconds,
                        timeout=timeout,
                    )
                except Exception as exc:  # one broken run must not lose the others' figures
                    row = {"mode": mode, "clips": size, "error": f"{type(exc).__name__}: {exc}"[:2000]}
                section["rows"].append(row)
                processes = row.get("processes") or {}
                print(
                    f"   {mode} {size}: {row.get('state', row.get('error'))}, "
                    f"wall {row.get('wall_seconds')} s, "
                    f"jobs {row.get('jobs_created')} (max {row.get('max_jobs_in_flight')} in flight), "
                    f"outputs {row.get('clips_with_outputs')}, suspends {row.get('suspends')}, "
                    f"process-s {processes.get('process_seconds')}, "
                    f"requests/job {row.get('api_requests_per_job')}",
                    flush=True,
                )
        section["comparison"] = _compare([r for r in section["rows"] if "per_clip" in r], sizes)
    return section
