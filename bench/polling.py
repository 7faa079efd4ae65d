"""Polling cost: API requests made while waiting on one job, and how late its end was noticed.

The production code runs unchanged: ``ScenarioClient.jobs.wait()`` with the client's own
``PollPolicy`` (the adaptive one), its retry layer and its parsing, on an ``httpx.MockTransport``
that plays a job timeline, with a simulated clock and sleep injected into ``wait()``. A 6-minute
job is simulated in milliseconds. The baselines are the same ``wait()`` loop with a fixed interval
(0.5 s: Replicate's default; 6 s: Runway's; 10 s: dbt Cloud's and Databricks').

Job timeline (policy-independent, the same seeds for every policy):

* created at t=0 when the wait starts (``wait_for_job`` follows the submit at once);
* ``queued`` at +0.13 s, ``in-progress`` at +0.8 s (the real job captured in scenario-api.md 3.3);
* ``progress`` rising linearly to 0.99, ``updatedAt`` = the last status change, as the real API
  and the emulator report it (the policy cannot read the time off ``updatedAt``);
* ``success`` at ``D x U(0.8, 1.2)`` for a nominal duration D: generation times vary, and the
  spread puts a fixed poller's grid at a random phase against the job's end, the honest average case.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench._common import median, ratio

NOMINAL_SECONDS = (30.0, 120.0, 360.0)
FIXED_INTERVALS = (0.5, 6.0, 10.0)
PEERS = {0.5: "Replicate", 6.0: "Runway", 10.0: "dbt Cloud / Databricks"}
TARGET_REQUESTS_6_MIN = 15
TARGET_LATENESS_FRACTION = 0.05
EPOCH = datetime(2026, 1, 10, 9, 0, 0, tzinfo=UTC)
IN_PROGRESS_AT = 0.8
QUEUED_AT = 0.13
SPREAD = 0.2


def _iso(seconds: float) -> str:
    moment = EPOCH + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class SimulatedTime:
    """A clock and a sleep that jumps it forward at once."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


def _job(now: float, duration: float) -> dict[str, Any]:
    history = [("pending", 0.0), ("queued", QUEUED_AT)]
    if now >= IN_PROGRESS_AT:
        history.append(("in-progress", IN_PROGRESS_AT))
    status, progress = history[-1][0], 0.0
    if now >= duration:
        history.append(("success", duration))
        status, progress = "success", 1.0
    elif status == "in-progress":
        progress = round(min(0.99, (now - IN_PROGRESS_AT) / (duration - IN_PROGRESS_AT)), 4)
    return {
        "jobId": "job_bench",
        "jobType": "custom",
        "status": status,
        "progress": progress,
        "statusHistory": [{"status": s, "date": _iso(t)} for s, t in history],
        "metadata": {"assetIds": ["asset_out"] if status == "success" else []},
        "createdAt": _iso(0.0),
        "updatedAt": _iso(history[-1][1]),
    }


def fixed_policy(interval: float) -> Any:
    """A ``PollPolicy`` that always sleeps ``interval`` (what the peers do)."""
    from prefect_scenario.client import PollPolicy

    @dataclass(frozen=True)
    class FixedInterval(PollPolicy):
        interval: float = 1.0

        def next_delay(self, elapsed_seconds: float, job: Any, rng: random.Random | None = None) -> float:
            return self.interval

    return FixedInterval(min_interval=min(interval, 1.0), max_interval=max(interval, 1.0), interval=interval)


async def simulate(policy: Any, nominal: float, seed: int) -> dict[str, float]:
    """One wait on one job: requests sent, and lateness (seconds after the end it was seen)."""
    from prefect_scenario.client import ScenarioClient

    draw = random.Random(f"{nominal}:{seed}")  # the job timeline, the same for every policy
    duration = nominal * draw.uniform(1 - SPREAD, 1 + SPREAD)
    time = SimulatedTime()
    polls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        polls.append(time.now)
        return httpx.Response(200, json={"job": _job(time.now, duration)})

    client = ScenarioClient(
        base_url="https://api.bench/v1",
        api_key="bench",
        api_secret="bench",
        transport=httpx.MockTransport(handler),
        polling=policy,
        sleep=time.sleep,
        clock=time.clock,
        rng=random.Random(seed),  # the client's jitter
    )
    async with client:
        job = await client.jobs.wait(
            "job_bench", timeout_seconds=10 * nominal, clock=time.clock, sleep=time.sleep
        )
    assert job.status.value == "success", job.status
    lateness = polls[-1] - duration
    return {
        "duration_seconds": duration,
        "requests": len(polls),
        "lateness_seconds": lateness,
        "lateness_fraction": lateness / duration,
    }


def _summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    requests = [run["requests"] for run in runs]
    late = [run["lateness_seconds"] for run in runs]
    share = [run["lateness_fraction"] for run in runs]
    return {
        "requests_median": median(requests),
        "requests_max": max(requests),
        "lateness_seconds_median": round(median(late) or 0.0, 3),
        "lateness_seconds_max": round(max(late), 3),
        "lateness_fraction_median": round(median(share) or 0.0, 4),
        "lateness_fraction_max": round(max(share), 4),
        "runs": len(runs),
    }


async def _run_all(runs: int) -> dict[str, Any]:
    from prefect_scenario.client import PollPolicy

    policies: dict[str, Any] = {"adaptive": PollPolicy()}
    for interval in FIXED_INTERVALS:
        policies[f"fixed {interval:g} s"] = fixed_policy(interval)
    table: dict[str, dict[str, Any]] = {}
    for name, policy in policies.items():
        table[name] = {}
        for nominal in NOMINAL_SECONDS:
            samples = [await simulate(policy, nominal, seed) for seed in range(runs)]
            table[name][f"{nominal:g}"] = _summary(samples)
    return table


def run(*, quick: bool = False, runs: int | None = None) -> dict[str, Any]:
    """Run the polling benchmark; returns its section of the report."""
    runs = runs or (3 if quick else 15)
    table = asyncio.run(_run_all(runs))
    adaptive = table["adaptive"]
    ratios: dict[str, dict[str, Any]] = {}
    for interval in FIXED_INTERVALS:
        name = f"fixed {interval:g} s"
        ratios[name] = {
            f"{nominal:g}": {
                "requests": ratio(
                    adaptive[f"{nominal:g}"]["requests_median"],
                    table[name][f"{nominal:g}"]["requests_median"],
                ),
                "lateness": ratio(
                    adaptive[f"{nominal:g}"]["lateness_seconds_median"],
                    table[name][f"{nominal:g}"]["lateness_seconds_median"],
                ),
            }
            for nominal in NOMINAL_SECONDS
        }
    six = adaptive["360"]
    worst_share = max(adaptive[f"{n:g}"]["lateness_fraction_max"] for n in NOMINAL_SECONDS)
    targets = {
        "requests_6_min": {
            "target": f"<= {TARGET_REQUESTS_6_MIN} requests for a 6-minute job",
            "median": six["requests_median"],
            "worst": six["requests_max"],
            "met": six["requests_max"] <= TARGET_REQUESTS_6_MIN,
        },
        "lateness": {
            "target": f"completion noticed within {TARGET_LATENESS_FRACTION:.0%} of the job's duration",
            "worst_fraction": worst_share,
            "met": worst_share <= TARGET_LATENESS_FRACTION,
        },
    }
    return {
        "description": "API requests while waiting on one job, and lateness; simulated clock, production "
        "PollPolicy via client.jobs.wait on an httpx.MockTransport",
        "runs_per_cell": runs,
        "nominal_seconds": list(NOMINAL_SECONDS),
        "duration_spread": f"x U({1 - SPREAD:g}, {1 + SPREAD:g})",
        "table": table,
        "ratios_adaptive_to_fixed": ratios,
        "peers": {f"fixed {k:g} s": v for k, v in PEERS.items()},
        "targets": targets,
        "ideal_requests_note": "a poller that knew the end would need 1 request; "
        "fixed intervals need about duration/interval + 1 "
        f"(e.g. {math.ceil(360 / 0.5) + 1} at 0.5 s for 6 min)",
    }
