"""Watcher: Scenario API requests per sweep with 1,000 jobs in flight and 1,000 suspended runs.

``prefect-scenario watch`` (:class:`prefect_scenario.watcher.Watcher`) wakes the flow runs that
suspended on their Scenario job. Its cost grows with the number of runs waiting; the target is at
most 1 Scenario API request per 100 jobs in flight per sweep.

Set-up, against the emulator (its own process, no concurrency ceiling, full pages unless said) and
the bench's Prefect server:

* N flow runs created Running (so each has a ``start_time`` before its job exists, as a real run
  does), then N jobs, one per run, submitted on the API (a tenth with a job time of
  ``SHORT_JOB_SECONDS``, the rest ``LONG_JOB_SECONDS``), then each run labelled as
  ``wait="suspend"`` labels it (:func:`prefect_scenario.waiting.waiting_labels`) and moved to
  Suspended (the runs belong to a deployment: Prefect suspends only those): N runs waiting, N jobs
  in flight;
* sweeps of the production watcher, each measured: a **first** sweep (every run new to it, and a
  reconcile), a **steady** sweep, a sweep after **~10 % of jobs ended** (the emulator clock moved
  past their job time: they end, dated on that clock), a **restart** (a new watcher: its first
  sweep, cursor from the Variable), a **reconcile** sweep of that warm watcher
  (``reconcile_every=0``), and the same reconcile with the emulator's **short pages** on (half
  pages and one empty page while a token remains, as the API documents it may do).

Per sweep: Scenario API requests by route (the emulator's counters), requests per 100 jobs in
flight, Prefect API requests by route (counted in the measuring process, as the ``trace`` option of
``bench/_whatif.py`` does), events emitted, and the sweep's wall time. The measuring process is a
child (``python -m bench.watcher ARGS OUT``) with the Prefect server's settings in its environment.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench._common import REPO, child_env, write_json
from bench._services import EMULATOR_KEY, EMULATOR_SECRET, Service, emulator

LONG_JOB_SECONDS = 7200.0
SHORT_JOB_SECONDS = 900.0
# Past the short jobs' time, well short of the long ones'.
CLOCK_ADVANCE_SECONDS = 1000.0
ENDED_SHARE = 0.1
TARGET_PER_100 = 1.0
# Requests in flight while the set-up creates runs and jobs: enough to overlap round trips on a
# SQLite-backed Prefect server, which serialises writes anyway.
SETUP_CONCURRENCY = 8
LAYERS = "model_scenario-video-layers-extractor"
SCENARIO_ROUTES = ("GET /v1/jobs", "GET /v1/jobs/{jobId}")


def run(*, prefect: Service, log_dir: Path, quick: bool = False, jobs: int | None = None) -> dict[str, Any]:
    """Run the watcher benchmark; returns its report section."""
    jobs = jobs or (100 if quick else 1000)
    workdir = Path(tempfile.mkdtemp(prefix="bench-watcher-"))
    try:
        from prefect_scenario.video import make_sample_clip

        clip = workdir / "clip.mp4"
        make_sample_clip(clip, seconds=1.0, width=96, height=64, fps=8, moving_objects=1)
        with emulator(log_dir=log_dir, job_seconds=LONG_JOB_SECONDS, fake_model="copy") as emu:
            emu.configure(short_pages=False, concurrency_ceiling=None)
            asset_id = emu.register_asset(clip)["id"]
            args = {
                "root_url": emu.root_url,
                "base_url": emu.base_url,
                "project_id": f"proj_bench{uuid.uuid4().hex[:12]}",
                "asset_id": asset_id,
                "jobs": jobs,
            }
            out = workdir / "result.json"
            log = log_dir / "watcher-child.log"
            with log.open("w") as handle:
                done = subprocess.run(
                    [sys.executable, "-m", "bench.watcher", json.dumps(args), str(out)],
                    cwd=REPO,
                    env=child_env(prefect.extra["env"]),
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    timeout=3600,
                )
            if done.returncode != 0 or not out.exists():
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
                raise RuntimeError(f"the watcher child failed (exit {done.returncode}); log {log}:\n{tail}")
            result: dict[str, Any] = json.loads(out.read_text())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    section: dict[str, Any] = {
        "description": "requests per sweep of the watcher with every waiting run's job in flight",
        "jobs": jobs,
        "long_job_seconds": LONG_JOB_SECONDS,
        "short_job_seconds": SHORT_JOB_SECONDS,
        "clock_advance_seconds": CLOCK_ADVANCE_SECONDS,
        "page_size": 100,
        **result,
    }
    judged = [sweep for sweep in result["sweeps"] if sweep["full_pages"] and sweep["jobs_in_flight"]]
    for sweep in judged:
        # One request is the floor: a sweep lists at least one page, even of 90 jobs in flight.
        allowed = max(1.0, TARGET_PER_100 * sweep["jobs_in_flight"] / 100)
        sweep["within_target"] = sweep["scenario_requests"] <= allowed
    worst = max((sweep["scenario_requests_per_100_in_flight"] for sweep in judged), default=None)
    section["targets"] = {
        "requests_per_100_in_flight": {
            "target": f"at most {TARGET_PER_100:g} Scenario API request per 100 jobs in flight per sweep "
            "(full pages; at least one request per sweep)",
            "worst": worst,
            "missed_by": [sweep["sweep"] for sweep in judged if not sweep["within_target"]],
            "met": bool(judged) and all(sweep["within_target"] for sweep in judged),
        }
    }
    for sweep in result["sweeps"]:
        print(
            f"   {sweep['sweep']}: {sweep['scenario_requests']} Scenario requests "
            f"({sweep['scenario_requests_per_100_in_flight']} per 100 in flight), "
            f"{sweep['prefect_requests']} Prefect requests, {sweep['wall_seconds']} s, "
            f"woken {sweep['woken']}",
            flush=True,
        )
    return section


# -- the measuring process -----------------------------------------------------------------------


def _control(root_url: str, method: str, path: str, body: Any = None) -> Any:
    response = httpx.request(method, f"{root_url}/_emulator/{path}", json=body, timeout=120)
    response.raise_for_status()
    return response.json()


async def bounded_prefect_writes(count: int, make: Any) -> list[Any]:
    """``make(i)`` for i in 0..count-1, ``SETUP_CONCURRENCY`` at a time, results in order.

    A Prefect 503 or 429 is tried again: a busy SQLite server answers 503 "database is locked"
    after rolling the transaction back, so nothing was made.
    """
    from prefect.exceptions import PrefectHTTPStatusError

    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(index: int) -> Any:
        async with gate:
            for attempt in range(8):
                try:
                    return await make(index)
                except PrefectHTTPStatusError as exc:
                    if exc.response.status_code not in (429, 503) or attempt == 7:
                        raise
                await asyncio.sleep(0.25 * 2**attempt)

    return list(await asyncio.gather(*(one(index) for index in range(count))))


async def _set_up(args: dict[str, Any], credentials: Any) -> dict[str, Any]:
    """N Running flow runs, one job each, then each run labelled and Suspended."""
    from datetime import UTC, datetime, timedelta

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import FlowRunCreate
    from prefect.client.schemas.objects import FlowRun
    from prefect.states import Running, Suspended, to_state_create

    from prefect_scenario.waiting import WAITING_TAG, waiting_labels

    jobs = int(args["jobs"])
    ended = max(1, round(jobs * ENDED_SHARE))
    started = time.perf_counter()
    deadline = datetime.now(UTC) + timedelta(days=1)
    async with get_client() as client:
        flow_id = await client.create_flow_from_name("bench-watcher-waiter")
        # Prefect suspends (and resumes into Scheduled) only the runs of a deployment.
        deployment_id = await client.create_deployment(flow_id, "bench-watcher")

        async def create_run(index: int) -> FlowRun:
            create = FlowRunCreate(
                flow_id=flow_id,
                deployment_id=deployment_id,
                name=f"waiter-{index:04d}",
                state=to_state_create(Running()),
                tags=[WAITING_TAG],
            )
            response = await client.request(
                "POST", "/flow_runs/", json=create.model_dump(mode="json", exclude_unset=True)
            )
            return FlowRun.model_validate(response.json())

        runs = await bounded_prefect_writes(jobs, create_run)
        job_ids: list[str] = []
        async with credentials.get_client() as scenario:
            body = {"video": args["asset_id"], "separationInstruction": "each object apart", "maxLayers": 1}
            for count, job_seconds in ((ended, SHORT_JOB_SECONDS), (jobs - ended, LONG_JOB_SECONDS)):
                _control(args["root_url"], "POST", "config", {"job_seconds": job_seconds})

                async def submit(_: int) -> str:
                    submission = await scenario.generate.run(LAYERS, body, reconcile=False)
                    return str(submission.job_id)

                job_ids += await bounded_prefect_writes(count, submit)
        scope = credentials.cache_scope()

        async def suspend(index: int) -> str:
            run, job_id = runs[index], job_ids[index]
            await client.update_flow_run_labels(
                run.id, waiting_labels([job_id], deadline, scope, {"job": job_id})
            )
            result = await client.set_flow_run_state(
                run.id, Suspended(timeout_seconds=2 * 86400, pause_key="scenario-wait-1")
            )
            return str(result.status.value)

        statuses = await bounded_prefect_writes(jobs, suspend)
        if set(statuses) != {"ACCEPT"}:
            raise RuntimeError(f"not every flow run suspended: {statuses.count('ACCEPT')} of {jobs} did")
        sample = await client.read_flow_run(runs[0].id)
    return {
        "runs": [str(run.id) for run in runs],
        "job_ids": job_ids,
        "ended_jobs": ended,
        "setup_seconds": round(time.perf_counter() - started, 1),
        "suspend_statuses": {status: statuses.count(status) for status in sorted(set(statuses))},
        # Where the waiter's lower bound comes from: start_time when Prefect set one.
        "start_time_set": sample.start_time is not None,
    }


def _routes_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before.get(key, 0) for key in sorted(after) if after[key] - before.get(key, 0)}


async def _measure(label: str, watcher: Any, root_url: str, *, full_pages: bool = True) -> dict[str, Any]:
    from bench import _whatif

    before = _control(root_url, "GET", "stats")
    prefect_before = dict(_whatif.PREFECT_REQUESTS)
    events_before = sum(_whatif.EVENTS.values())
    started = time.perf_counter()
    report = await watcher.sweep()
    wall = time.perf_counter() - started
    after = _control(root_url, "GET", "stats")
    scenario = _routes_delta(after["requests"], before["requests"])
    prefect = _routes_delta(_whatif.PREFECT_REQUESTS, prefect_before)
    in_flight = int(before["jobs_in_flight"])
    total = sum(scenario.values())
    return {
        "sweep": label,
        "full_pages": full_pages,
        "jobs_in_flight": in_flight,
        "waiting": report.waiting,
        "jobs_listed": report.jobs_listed,
        "jobs_read": report.jobs_read,
        "woken": len(report.woken),
        "already_resumed": len(report.already_resumed),
        "scenario_requests": total,
        "scenario_requests_by_route": scenario,
        "scenario_requests_per_100_in_flight": round(100 * total / in_flight, 2) if in_flight else None,
        "scenario_requests_bound": math.ceil(in_flight / 100) + 2 if in_flight else None,
        "prefect_requests": sum(prefect.values()),
        "prefect_requests_by_route": prefect,
        "events": sum(_whatif.EVENTS.values()) - events_before,
        "wall_seconds": round(wall, 3),
    }


async def _child(args: dict[str, Any]) -> dict[str, Any]:
    from datetime import timedelta

    from bench import _whatif
    from prefect_scenario.blocks import ScenarioCredentials
    from prefect_scenario.watcher import Watcher

    # Counting only (the ``trace`` option's Prefect request and event counters): no behaviour change.
    _whatif._count_prefect_requests()
    root_url = str(args["root_url"])
    credentials = ScenarioCredentials(
        api_key=EMULATOR_KEY,
        api_secret=EMULATOR_SECRET,
        base_url=str(args["base_url"]),
        project_id=str(args["project_id"]),
    )
    setup = await _set_up(args, credentials)
    sweeps = []
    watcher = Watcher(credentials, reconcile_every=timedelta(hours=1))
    sweeps.append(await _measure("first", watcher, root_url))
    sweeps.append(await _measure("steady", watcher, root_url))
    _control(root_url, "POST", "clock", {"advance_seconds": CLOCK_ADVANCE_SECONDS})
    # A job ends once its time is up and its fake model's copy is done: wait for the latter.
    expected = int(args["jobs"]) - int(setup["ended_jobs"])
    for _ in range(240):
        if int(_control(root_url, "GET", "stats")["jobs_in_flight"]) <= expected:
            break
        await asyncio.sleep(0.5)
    sweeps.append(await _measure(f"after {setup['ended_jobs']} jobs ended", watcher, root_url))
    sweeps.append(await _measure("steady, after the wakes", watcher, root_url))
    restarted = Watcher(credentials, reconcile_every=timedelta(0))
    sweeps.append(await _measure("restart (a new watcher's first sweep)", restarted, root_url))
    sweeps.append(await _measure("reconcile", restarted, root_url))
    _control(root_url, "POST", "config", {"short_pages": True})
    sweeps.append(await _measure("reconcile, short pages", restarted, root_url, full_pages=False))
    kept = {key: value for key, value in setup.items() if key not in ("runs", "job_ids")}
    return {"setup": kept, "sweeps": sweeps}


def main() -> None:
    args = json.loads(sys.argv[1])
    result = asyncio.run(_child(args))
    write_json(Path(sys.argv[2]), result)


if __name__ == "__main__":
    main()
