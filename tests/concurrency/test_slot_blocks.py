"""SlotPool blocks: clips that wait together get their slots from one acquisition.

Against the session's Prefect test server, with real global concurrency limits. The increment
requests the server answers are counted by wrapping Prefect's client method that sends them (the
acquisition service calls it once per ask, refused or granted).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.asyncio import concurrency

import prefect_scenario.slot_pool as slot_pool_module
from prefect_scenario.slot_pool import SlotPool

pytestmark = pytest.mark.usefixtures("prefect_harness")


async def _new_limit(size: int) -> str:
    name = f"block-test-{uuid.uuid4().hex[:10]}"
    async with get_client() as client:
        await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=size))
    return name


async def _active_slots(name: str) -> int:
    async with get_client() as client:
        return int((await client.read_global_concurrency_limit_by_name(name)).active_slots)


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


class Asks:
    """The ``occupy`` of every increment request sent to the server (granted or refused).

    ``hold()`` keeps the next requests from leaving until ``let_through()``: the service that sends
    them runs on a thread of its own, hence a thread-safe gate.
    """

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.held = 0
        self._gate = threading.Event()
        self._gate.set()

    def hold(self) -> None:
        self._gate.clear()

    def let_through(self) -> None:
        self._gate.set()

    async def passing(self, slots: int) -> None:
        self.sent.append(slots)
        if not self._gate.is_set():
            self.held += 1
            await asyncio.to_thread(self._gate.wait)


@pytest.fixture
def asks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Asks]:
    seen = Asks()
    original = PrefectClient.increment_concurrency_slots_with_lease

    async def counted(self: PrefectClient, *args: Any, **kwargs: Any) -> Any:
        await seen.passing(int(kwargs["slots"]))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(PrefectClient, "increment_concurrency_slots_with_lease", counted)
    yield seen
    seen.let_through()


class Jobs:
    """Jobs that hold a slot for a while; counts how many run at once and how many ran."""

    def __init__(self, pool: SlotPool) -> None:
        self.pool = pool
        self.running = 0
        self.most = 0
        self.done = 0

    async def one(self, seconds: float = 0.2) -> None:
        async with self.pool.slot():
            self.running += 1
            self.most = max(self.most, self.running)
            try:
                await asyncio.sleep(seconds)
            finally:
                self.running -= 1
        self.done += 1


class Watch:
    """Samples the limit's active slots in the background; ``most`` is the highest seen."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.most = 0
        self.samples = 0

    async def run(self) -> None:
        while True:
            self.most = max(self.most, await _active_slots(self.name))
            self.samples += 1
            await asyncio.sleep(0.05)


@pytest.fixture
async def watch() -> AsyncIterator[Callable[[str], Watch]]:
    tasks: list[asyncio.Task[None]] = []

    def start(name: str) -> Watch:
        w = Watch(name)
        tasks.append(asyncio.create_task(w.run()))
        return w

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_twenty_clips_start_with_one_acquisition_of_six_slots(
    asks: Asks, watch: Callable[[str], Watch]
) -> None:
    limit = await _new_limit(6)
    seen = watch(limit)
    async with SlotPool(limit, 6) as pool:
        jobs = Jobs(pool)
        await asyncio.wait_for(asyncio.gather(*(jobs.one(0.3) for _ in range(20))), timeout=60)
    assert jobs.done == 20
    assert jobs.most == 6
    assert asks.sent == [6]  # one request to the server for the six slots, not six
    assert (pool.acquisition_calls, pool.acquisitions, pool.handovers) == (1, 6, 14)
    assert seen.samples > 0
    assert seen.most <= 6
    assert await _active_slots(limit) == 0


async def test_a_block_takes_only_what_the_limit_has_free_and_more_as_others_free_up(
    asks: Asks,
) -> None:
    limit = await _new_limit(6)
    others_hold = asyncio.Event()
    others_done = asyncio.Event()

    async def other_run() -> None:
        async with concurrency(limit, occupy=4, strict=True, lease_duration=60):
            others_hold.set()
            await others_done.wait()

    other = asyncio.create_task(other_run())
    await asyncio.wait_for(others_hold.wait(), timeout=30)
    asks.sent.clear()
    try:
        async with SlotPool(limit, 6) as pool:
            jobs = Jobs(pool)
            work = asyncio.gather(*(jobs.one(0.5) for _ in range(20)))

            async def two_granted() -> bool:
                return pool.acquisitions == 2

            await _eventually(two_granted)
            await asyncio.sleep(1.5)  # the limit stays full: the pool waits without asking
            assert (pool.acquisition_calls, pool.acquisitions) == (1, 2)
            assert asks.sent == [2]  # the block of two, and no refused ask while the limit was full
            assert jobs.most == 2
            assert await _active_slots(limit) == 6
            others_done.set()
            await other
            await asyncio.wait_for(work, timeout=60)
        assert jobs.done == 20
        assert jobs.most == 6  # the four freed slots came to the pool
        assert asks.sent[0] == 2
        assert 4 in asks.sent[1:], asks.sent  # and together, in one block
        assert pool.acquisitions == 6
        assert await _active_slots(limit) == 0
    finally:
        others_done.set()
        await asyncio.gather(other, return_exceptions=True)


async def test_clips_cancelled_while_their_block_is_asked_for_leave_no_slot_held(asks: Asks) -> None:
    limit = await _new_limit(6)
    async with SlotPool(limit, 6) as pool:
        jobs = Jobs(pool)
        asks.hold()
        clips = [asyncio.ensure_future(jobs.one(5)) for _ in range(20)]

        async def block_asked() -> bool:
            return asks.held == 1

        await _eventually(block_asked)
        for clip in clips:
            clip.cancel()
        await asyncio.gather(*clips, return_exceptions=True)
        asks.let_through()  # the block is granted now, to nobody

        async def granted() -> bool:
            return pool.acquisition_calls == 1

        async def nothing_held() -> bool:
            return await _active_slots(limit) == 0

        await _eventually(granted)
        assert asks.sent == [6]
        # It goes straight back, before the pool closes.
        await _eventually(nothing_held)
        await asyncio.sleep(0.5)
        assert await _active_slots(limit) == 0
        await asyncio.wait_for(jobs.one(0.01), timeout=30)  # the pool still serves clips
        assert jobs.done == 1
    assert await _active_slots(limit) == 0


async def test_clips_cancelled_while_waiting_for_a_lane_leave_no_slot_held() -> None:
    limit = await _new_limit(6)
    async with SlotPool(limit, 6) as pool:
        jobs = Jobs(pool)
        clips = [asyncio.ensure_future(jobs.one(0.5)) for _ in range(20)]

        async def six_running() -> bool:
            return jobs.running == 6

        await _eventually(six_running)
        for clip in clips[8:]:  # twelve of the fourteen waiting
            clip.cancel()
        outcomes = await asyncio.wait_for(asyncio.gather(*clips, return_exceptions=True), timeout=60)
        assert sum(isinstance(o, asyncio.CancelledError) for o in outcomes) == 12
        assert jobs.done == 8
        assert (pool.acquisition_calls, pool.handovers) == (1, 2)

        async def nothing_held() -> bool:
            return await _active_slots(limit) == 0

        await _eventually(nothing_held)  # the block went back with its last job, not at aclose
    assert await _active_slots(limit) == 0


async def test_a_lane_given_to_a_clip_cancelled_that_instant_passes_to_the_next() -> None:
    limit = await _new_limit(1)
    async with SlotPool(limit, 1) as pool:
        jobs = Jobs(pool)
        release = asyncio.Event()
        holding = asyncio.Event()

        async def first() -> None:
            async with pool.slot():
                holding.set()
                await release.wait()
            # Same step as the handover: the lane is the second clip's, which is cancelled now.
            second.cancel()

        holder = asyncio.ensure_future(first())
        await asyncio.wait_for(holding.wait(), timeout=30)
        second = asyncio.ensure_future(jobs.one(0.01))
        third = asyncio.ensure_future(jobs.one(0.01))
        await asyncio.sleep(0.1)
        release.set()
        await asyncio.wait_for(asyncio.gather(holder, second, third, return_exceptions=True), timeout=30)
        assert second.cancelled()
        assert third.done()
        assert third.exception() is None
        assert jobs.done == 1
        assert pool.acquisition_calls == 1
    assert await _active_slots(limit) == 0


async def test_closing_a_pool_that_waits_on_a_full_limit_does_not_hang(
    asks: Asks, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Looks at the full limit every 20 s: closing must not wait for the next look.
    monkeypatch.setattr(slot_pool_module, "SLOT_FULL_POLL_SECONDS", (20.0, 20.0))
    limit = await _new_limit(2)
    async with SlotPool(limit, 2) as other, other.slot(), other.slot():
        asks.sent.clear()
        pool = SlotPool(limit, 2)
        jobs = Jobs(pool)
        clips = [asyncio.ensure_future(jobs.one()) for _ in range(3)]
        await asyncio.sleep(1.0)
        assert asks.sent == []  # the limit was full when read: nothing asked
        started = time.monotonic()
        await pool.aclose()
        assert time.monotonic() - started < 5
        outcomes = await asyncio.gather(*clips, return_exceptions=True)
        assert all(isinstance(o, RuntimeError) for o in outcomes), outcomes
        assert await _active_slots(limit) == 2  # only the other pool's
    assert await _active_slots(limit) == 0


async def test_a_pool_granted_less_than_it_wanted_looks_before_it_asks_again(asks: Asks) -> None:
    """The limit is full after that grant: a blind ask would be refused (a write, and an error line)."""
    limit = await _new_limit(2)
    async with SlotPool(limit, 1) as other, other.slot():
        asks.sent.clear()
        async with SlotPool(limit, 2) as pool:
            jobs = Jobs(pool)
            await asyncio.wait_for(asyncio.gather(*(jobs.one(0.3) for _ in range(3))), timeout=30)
            assert jobs.most == 1
            assert asks.sent == [1]  # the one slot the limit had, and no ask refused after it
    assert await _active_slots(limit) == 0


@pytest.mark.parametrize("handover_jobs", [3.0, 0.0], ids=["window-grows-with-jobs", "fixed-window"])
async def test_jobs_longer_than_the_handover_time_keep_their_lanes_busy(
    asks: Asks, handover_jobs: float
) -> None:
    """Jobs of 0.4-1.2 s on two lanes with a 0.1 s handover time, as 6-minute jobs meet the 60 s.

    A lane given back must go to the next clip at once, not idle until the block's slowest job ends.
    With the window fixed at ``handover_seconds`` (``handover_jobs=0``, the earlier rule), the block
    is stale before its first job ends: the short job's lane idles while the long one runs, and the
    third clip starts only when the long job ended.
    """
    limit = await _new_limit(2)
    starts: dict[int, float] = {}
    ends: dict[int, float] = {}
    seconds = [0.4, 1.2, 0.4, 0.4]

    async with SlotPool(limit, 2, handover_seconds=0.1, handover_jobs=handover_jobs) as pool:

        async def clip(index: int) -> None:
            async with pool.slot():
                starts[index] = time.monotonic()
                await asyncio.sleep(seconds[index])
                ends[index] = time.monotonic()

        await clip_pair_then_two(clip)

    assert await _active_slots(limit) == 0
    third_started_after_short_end = starts[2] - ends[0]
    if handover_jobs:
        assert asks.sent == [2]  # the two later clips got the short job's lane handed over
        assert pool.handovers == 2
        assert third_started_after_short_end < 0.3, (starts, ends)
        assert starts[2] < ends[1]  # the third clip ran while the long job still did
    else:
        assert pool.handovers == 0
        assert starts[2] >= ends[1]  # the wave: the short job's lane idled until the long job ended


async def clip_pair_then_two(clip: Callable[[int], Awaitable[None]]) -> None:
    """Clips 0 and 1 ask first (one block of two), clips 2 and 3 a moment later."""
    first = [asyncio.create_task(clip(0)), asyncio.create_task(clip(1))]
    await asyncio.sleep(0.05)
    later = [asyncio.create_task(clip(2)), asyncio.create_task(clip(3))]
    await asyncio.wait_for(asyncio.gather(*first, *later), timeout=60)
