"""SlotPool: a batch's slots of a global concurrency limit, passed clip to clip, never over the limit.

Against the session's Prefect test server, with real global concurrency limits.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

from prefect_scenario.slot_pool import SlotPool

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
async def limit() -> str:
    name = f"pool-test-{uuid.uuid4().hex[:10]}"
    async with get_client() as client:
        await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=2))
    return name


async def _active_slots(name: str) -> int:
    async with get_client() as client:
        return int((await client.read_global_concurrency_limit_by_name(name)).active_slots)


class Jobs:
    """Jobs that hold a slot for a while; counts how many ran at once."""

    def __init__(self, pool: SlotPool) -> None:
        self.pool = pool
        self.running = 0
        self.most = 0

    async def one(self, seconds: float = 0.2) -> None:
        async with self.pool.slot():
            self.running += 1
            self.most = max(self.most, self.running)
            await asyncio.sleep(seconds)
            self.running -= 1


async def test_slots_pass_from_clip_to_clip_within_the_limit(limit: str) -> None:
    async with SlotPool(limit, 2) as pool:
        jobs = Jobs(pool)
        work = asyncio.gather(*(jobs.one() for _ in range(8)))
        await asyncio.sleep(0.3)
        held_meanwhile = await _active_slots(limit)
        await work
    assert jobs.most == 2  # two at once, never more
    assert held_meanwhile <= 2
    assert pool.acquisitions == 2  # the other six jobs got a slot handed over
    assert pool.handovers == 6
    assert await _active_slots(limit) == 0  # leaving the pool gave every slot back


async def test_a_slot_held_past_the_handover_time_goes_back_to_the_limit(limit: str) -> None:
    async with SlotPool(limit, 2, handover_seconds=0.0, handover_jobs=0.0) as pool:
        jobs = Jobs(pool)
        await asyncio.gather(*(jobs.one(0.05) for _ in range(5)))
    assert jobs.most == 2
    assert pool.acquisitions == 5  # every job asked the limit again: other flow runs get turns
    assert pool.handovers == 0
    assert await _active_slots(limit) == 0


async def test_another_flow_run_holding_slots_is_respected(limit: str) -> None:
    """The pool's size is a local ceiling only: the global limit still decides."""
    async with SlotPool(limit, 1) as other, other.slot(), SlotPool(limit, 2) as pool:
        jobs = Jobs(pool)
        await asyncio.gather(*(jobs.one(0.1) for _ in range(3)))
        assert jobs.most == 1  # one slot of two was the other run's
    assert await _active_slots(limit) == 0


async def test_a_clip_cancelled_while_waiting_loses_no_place(limit: str) -> None:
    async with SlotPool(limit, 1) as pool:
        jobs = Jobs(pool)
        holder = asyncio.ensure_future(jobs.one(0.3))
        await asyncio.sleep(0.1)
        waiter = asyncio.ensure_future(jobs.one())
        await asyncio.sleep(0.05)
        waiter.cancel()
        await asyncio.gather(holder, waiter, return_exceptions=True)
        await asyncio.wait_for(jobs.one(0.01), timeout=30)  # the place came back
    assert await _active_slots(limit) == 0


async def test_a_missing_limit_fails_every_clip_and_hangs_none() -> None:
    async with SlotPool(f"never-created-{uuid.uuid4().hex[:8]}", 1) as pool:
        jobs = Jobs(pool)
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(jobs.one() for _ in range(3)), return_exceptions=True), timeout=60
        )
    assert all("must be created before acquiring slots" in str(o) for o in outcomes), outcomes
    assert jobs.most == 0


async def test_no_limit_runs_everything_at_once() -> None:
    async with SlotPool(None, None) as pool:
        jobs = Jobs(pool)
        await asyncio.gather(*(jobs.one(0.1) for _ in range(5)))
    assert jobs.most == 5
    assert pool.acquisitions == 0
