"""PollPolicy figures, measured through ``jobs.wait()`` with a simulated clock.

Jobs of 30 s, 2 min and 6 min with linear progress; for each, the number of GET requests and the
lateness (time between the job ending and the poll that saw it). Targets: at most 15 requests
for the 6-minute job, every job seen within 5 % of its duration (or within min_interval).
Run with ``-s`` to see the table.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from prefect_scenario.client import PollPolicy
from prefect_scenario.models import Job, JobStatus

from .conftest import FakeTime, iso, job_payload

IN_PROGRESS_AT = 0.8  # the real capture: pending, queued at +0.13 s, in progress at +0.8 s


@dataclass
class Figures:
    requests: int
    lateness: float


async def simulate(
    make_client: Any,
    duration: float,
    *,
    seed: int,
    quantum: float | None = None,
    fresh_updated_at: bool = True,
) -> Figures:
    fake = FakeTime()
    polls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        now = fake.now
        polls.append(now)
        history = [("pending", iso(0)), ("queued", iso(0.13)), ("in-progress", iso(IN_PROGRESS_AT))]
        if now >= duration:
            history.append(("success", iso(duration)))
            payload = job_payload(status="success", progress=1.0, history=history, updated=iso(duration))
        else:
            progress = max(0.0, (now - IN_PROGRESS_AT) / (duration - IN_PROGRESS_AT))
            if quantum:
                progress = math.floor(progress / quantum) * quantum
            updated = iso(now) if fresh_updated_at else iso(IN_PROGRESS_AT)
            payload = job_payload(status="in-progress", progress=progress, history=history, updated=updated)
        return httpx.Response(200, json={"job": payload})

    async with make_client(handler, rng=random.Random(seed)) as client:
        job = await client.jobs.wait(
            "job_1", timeout_seconds=4 * duration, clock=fake.clock, sleep=fake.sleep
        )
    assert job.status is JobStatus.SUCCESS
    return Figures(requests=len(polls), lateness=polls[-1] - duration)


VARIANTS = {
    "exact progress": {},
    "progress in 1 % steps": {"quantum": 0.01},
    "stale updatedAt": {"fresh_updated_at": False},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_poll_policy_meets_its_targets(make_client: Any, variant: str) -> None:
    rows = []
    for duration, max_requests in ((30.0, None), (120.0, None), (360.0, 15)):
        runs = [await simulate(make_client, duration, seed=seed, **VARIANTS[variant]) for seed in range(20)]
        worst_requests = max(run.requests for run in runs)
        worst_lateness = max(run.lateness for run in runs)
        mean_requests = sum(run.requests for run in runs) / len(runs)
        share = 100 * worst_lateness / duration
        rows.append(
            f"{variant:>22} | {duration:5.0f} s job | requests mean {mean_requests:4.1f} "
            f"max {worst_requests:2d} | lateness max {worst_lateness:5.2f} s ({share:4.1f} %)"
        )
        assert worst_lateness <= max(0.05 * duration, PollPolicy().min_interval), rows[-1]
        if max_requests is not None:
            assert worst_requests <= max_requests, rows[-1]
    print("\n" + "\n".join(rows))


def _job(status: str, progress: float = 0.0, history: list[tuple[str, str]] | None = None) -> Job:
    return Job.model_validate(job_payload(status=status, progress=progress, history=history))


def test_without_progress_the_interval_grows_with_age_up_to_max_interval() -> None:
    policy = PollPolicy(jitter=0.0)
    queued = _job("queued")
    assert policy.next_delay(0.0, queued) == 1.0  # never below min_interval
    assert policy.next_delay(100.0, queued) == pytest.approx(4.0)  # 4 % of the age
    assert policy.next_delay(5000.0, queued) == 30.0  # capped
    running = _job("in-progress", 0.0, [("pending", iso(0)), ("in-progress", iso(1))])
    assert policy.next_delay(250.0, running) == pytest.approx(10.0)


def test_with_progress_the_sleep_follows_the_estimate() -> None:
    policy = PollPolicy(jitter=0.0)
    history = [("pending", iso(0)), ("in-progress", iso(0))]
    job = _job("in-progress", 0.5, history)
    assert policy.remaining_seconds(100.0, job) == pytest.approx(100.0)
    # Far from the end: 60 % of the estimate, within the 100 s the rate was measured over.
    assert policy.next_delay(100.0, job) == pytest.approx(60.0)
    # Close to the end: aim just past it.
    near = _job("in-progress", 0.99, history)
    assert policy.next_delay(99.0, near) > policy.remaining_seconds(99.0, near)  # type: ignore[operator]


def test_jitter_stays_within_bounds_and_never_under_min_interval() -> None:
    policy = PollPolicy()
    rng = random.Random(1)
    queued = _job("queued")
    delays = [policy.next_delay(100.0, queued, rng) for _ in range(500)]
    assert min(delays) >= 3.6 - 1e-9
    assert max(delays) <= 4.4 + 1e-9
    assert len({round(delay, 3) for delay in delays}) > 100
    assert all(policy.next_delay(0.0, queued, rng) >= 1.0 for _ in range(100))
