"""A batch's share of a global concurrency limit: slots taken in blocks, passed from clip to clip.

:func:`~prefect_scenario.concurrency.job_slot` holds one slot for one job. A batch of many clips
does better with a :class:`SlotPool`: clips that wait together get their slots from one
acquisition (a block of ``occupy=k`` under one lease), and a clip whose job ended hands its slot
to the next waiting clip instead of giving it back and asking again. Both save writes on the
Prefect server, which grants acquisitions one at a time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from prefect_scenario.concurrency import SLOT_LEASE_SECONDS, job_slot, say_what_the_wait_is_for

# How long a batch may pass its slots from clip to clip before giving them back to the limit: at
# least this long, and longer for long jobs (a block lives for about this many of its longest job,
# up to the cap), so that a block of 6-minute jobs is not given back after each job's length.
SLOT_HANDOVER_SECONDS = 60.0
SLOT_HANDOVER_JOBS = 3.0
SLOT_HANDOVER_MAX_SECONDS = 1800.0
# How often a pool looks again at a full limit (first, at most; then as soon as it gives a block back).
# Looking is a read; asking is a write on the server each time, so the pool only asks when it saw room.
SLOT_FULL_POLL_SECONDS = (1.0, 10.0)
# Prefect's answer to an acquisition the limit has no room for (with a Retry-After).
_LOCKED = 423


@dataclass(eq=False)
class _Block:
    """Slots of the limit taken in one acquisition, under one lease, held by a background task.

    Each slot is a lane that one clip's job uses at a time. Prefect releases a lease's slots
    together, so the block goes back to the limit as a whole, once none of its lanes is in use.
    """

    slots: int
    in_use: int = 0
    acquired_at: float = 0.0
    granted: bool = False  # the limit gave the slots (a refused attempt never held any)
    held: bool = False  # granted and not yet asked to go back
    ended: bool = False  # its holder finished: the lease is released (or was never there)
    settled: bool = False  # its places were freed in the pool
    close: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class SlotPool:
    """The slots of a global concurrency limit that one batch's clips hold, passed clip to clip.

    Prefect grants a limit's acquisitions one at a time per process, each a write to its database,
    and on a busy server (a batch's task runs and events) each took seconds: the benchmarks measured
    clips waiting a median 36-50 s for slots held 4 s. So the pool asks for slots as seldom as it
    can:

    * When several clips wait, one acquisition takes a **block** of slots for them all, as many as
      the pool has places free, clips wait, and the limit has free (read just before): Prefect
      grants a request whole or not at all, so a larger block would wait for slots another flow
      run holds while single ones were free.
    * Each acquisition is one ask (``max_retries=0``), made when the limit showed room (or, for a
      lone clip, straight away). While the limit is full the pool looks again, a read instead of a
      refused write, every few seconds and at once when it gave a block back itself. A block
      refused because slots went meanwhile is followed by single slots until one is granted.
    * A clip whose job ended hands its lane straight to the next waiting clip of the batch.

    Rule for a block's lanes (it goes back to the limit whole, so these keep idle slots bounded and
    give other flow runs on the same limit their turn):

    1. While the block is **fresh**, a lane given back goes to the next waiting clip; with none
       waiting it stays idle, and the next clip to come takes it before any new acquisition. A block
       is fresh for its **handover window**: ``handover_seconds``, or ``handover_jobs`` times the
       longest job the pool has seen so far if that is longer (at most ``handover_max_seconds``).
    2. Once the block is **stale**, no clip starts on it: a lane given back stays idle until the
       block's last job ends. Reusing them would keep the block as long as clips keep waiting, and
       no other run would get a slot before the batch's end.
    3. A block none of whose lanes is in use goes back to the limit at once, fresh or stale.

    So a block is back at most its window plus its longest job after it was acquired, and its idle
    slots are held only while one of its jobs runs. The window grows with the jobs because a stale
    block's lanes idle until its slowest job ends: with a fixed 60 s, a block of 6-minute jobs would
    go stale before its first job ended, and a batch would advance in waves, each waiting for its
    slowest job (the spread of job times lost once per job length). Over three job lengths that loss
    comes once per three jobs. Blocks mostly come at a batch's start; clips that come one by one get
    one slot each, as before.

    At most ``size`` slots are held or asked for at once: the batch's clips queue here, not by
    polling the server. With ``name`` None there is no limit on the server: ``size`` (if any) bounds
    the pool's jobs in this process only.

    Counters: ``acquisitions`` (slots taken from the limit), ``acquisition_calls`` (the acquisitions
    that took them: one per block) and ``handovers`` (jobs that got a lane from an earlier job).

    Use ``async with SlotPool(name, size) as pool:`` around the batch (or call :meth:`aclose`) and
    ``async with pool.slot():`` around each job; leaving the pool gives every slot back.
    """

    def __init__(
        self,
        name: str | None,
        size: int | None,
        *,
        handover_seconds: float = SLOT_HANDOVER_SECONDS,
        handover_jobs: float = SLOT_HANDOVER_JOBS,
        handover_max_seconds: float = SLOT_HANDOVER_MAX_SECONDS,
    ) -> None:
        self.name = name
        self.size = size
        self.handover_seconds = handover_seconds
        self.handover_jobs = handover_jobs
        self.handover_max_seconds = handover_max_seconds
        self.longest_job_seconds = 0.0  # the longest a clip held its lane, for the handover window
        self.acquisitions = 0
        self.acquisition_calls = 0
        self.handovers = 0
        self._places = 0  # slots held or being acquired, counted against ``size``
        self._blocks: set[_Block] = set()  # granted, until their places are freed
        self._holders: set[asyncio.Task[None]] = set()  # until their lease is released
        # Waiting clips, first come first served; each gets a lane of a block, and whether it was
        # handed over (True) or freshly acquired.
        self._waiting: collections.deque[asyncio.Future[tuple[_Block, bool]]] = collections.deque()
        # One acquisition at a time: Prefect serialises them per process anyway, and the clips that
        # come meanwhile are all served by the next one.
        self._acquirer: asyncio.Task[None] | None = None
        self._released = asyncio.Event()  # a block went back: the limit may have room now
        self._closed = False
        # Without a limit on the server, a size still bounds this pool's jobs (a split edit's
        # max_parallel_chunks), here in the process.
        self._local = asyncio.Semaphore(size) if name is None and size else None

    async def __aenter__(self) -> SlotPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Give every slot back to the limit, and wait until they are released."""
        self._closed = True
        if self._acquirer is not None:
            # An attempt in flight ends in its holder: granted after this, it goes straight back.
            self._acquirer.cancel()
            await asyncio.gather(self._acquirer, return_exceptions=True)
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(RuntimeError("the slot pool was closed"))
        for block in list(self._blocks):
            self._let_go(block)
        await asyncio.gather(*self._holders, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for one job: one handed over, an idle one, or one of the next block acquired."""
        if self.name is None:
            # No limit on the server: only this pool's own bound, when it has one.
            if self._local is None:
                yield
                return
            async with self._local:
                yield
            return
        if not self.size:
            # An inactive limit: it bounds nothing.
            async with job_slot(self.name):
                yield
            return
        block = await self._take()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            yield
        finally:
            self.longest_job_seconds = max(self.longest_job_seconds, loop.time() - started)
            self._give_back(block)

    async def _take(self) -> _Block:
        if self._closed:
            raise RuntimeError("the slot pool was closed")
        if not self._waiting:
            idle = self._idle_block()
            if idle is not None:
                idle.in_use += 1
                self.handovers += 1
                return idle
        waiter: asyncio.Future[tuple[_Block, bool]] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self._acquire_soon()
        try:
            block, handed_over = await waiter
        except BaseException:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            elif waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Given a lane just as this clip gave up: pass it on.
                self._give_back(waiter.result()[0])
            raise
        if handed_over:
            self.handovers += 1
        return block

    def handover_window(self) -> float:
        """How long a block's lanes pass from clip to clip (rule 1), by the jobs seen so far."""
        by_jobs = min(self.handover_jobs * self.longest_job_seconds, self.handover_max_seconds)
        return max(self.handover_seconds, by_jobs)

    def _fresh(self, block: _Block) -> bool:
        age = asyncio.get_running_loop().time() - block.acquired_at
        return block.held and not block.ended and age < self.handover_window()

    def _idle_block(self) -> _Block | None:
        """A fresh block with an idle lane; the busiest, so that the others drain sooner."""
        usable = [b for b in self._blocks if b.in_use < b.slots and self._fresh(b)]
        return max(usable, key=lambda b: (b.in_use, b.acquired_at), default=None)

    def _give_back(self, block: _Block) -> None:
        block.in_use -= 1
        if self._fresh(block):
            while self._waiting:
                waiter = self._waiting.popleft()
                if not waiter.done():
                    block.in_use += 1
                    waiter.set_result((block, True))
                    return
            # Nobody waits: the lane stays idle for the next clip (rule 1) unless the block is unused.
        if block.in_use == 0:
            self._let_go(block)  # rule 3
        self._settle(block)

    def _let_go(self, block: _Block) -> None:
        """Ask the block's holder to give its slots back to the limit."""
        block.held = False
        block.close.set()

    def _settle(self, block: _Block) -> None:
        """Free the places of a block that is released and no longer in use, once."""
        if block.settled or not block.ended or block.in_use > 0:
            return
        block.settled = True
        self._blocks.discard(block)
        self._places -= block.slots
        if block.granted and not self._closed:
            # Slots went back to the limit only now (not when they were asked back): an acquisition
            # sent earlier would race the release and be refused.
            self._released.set()
            if self._pending():
                self._acquire_soon()

    def _pending(self) -> int:
        return sum(1 for waiter in self._waiting if not waiter.done())

    def _wanted(self) -> int:
        return max(0, min((self.size or 0) - self._places, self._pending()))

    def _acquire_soon(self) -> None:
        # A task, not a call: clips that start together all queue before it counts them.
        if not self._closed and (self._acquirer is None or self._acquirer.done()):
            self._acquirer = asyncio.create_task(self._acquire())

    async def _acquire(self) -> None:
        """Acquire blocks while clips wait and the pool has places free; one attempt at a time."""
        name = self.name
        assert name is not None
        loop = asyncio.get_running_loop()
        notice: asyncio.Task[None] | None = None
        contended = False  # this wait found the limit full, or was refused: look before asking
        one_at_a_time = False  # a block was refused: single slots until one is granted
        poll = SLOT_FULL_POLL_SECONDS[0]
        try:
            while not self._closed:
                self._released.clear()
                slots = self._wanted()
                if slots == 0:
                    return
                short = False  # the limit had less room than the pool wanted: it is full now
                if slots > 1 or contended:
                    room = await self._room_on_server(name)
                    slots = self._wanted()  # clips may have been served or given up meanwhile
                    if slots == 0:
                        continue
                    if room == 0:
                        # Full: an ask would only be refused, and each refusal is a write on the
                        # server (and an error line of Prefect's). Look again later, or as soon as
                        # this pool gives a block back.
                        contended = True
                        notice = notice or asyncio.create_task(say_what_the_wait_is_for(name))
                        # Jittered, so that pools of other flow runs do not look in lockstep.
                        await self._pause(poll * random.uniform(0.8, 1.2))
                        poll = min(poll * 1.5, SLOT_FULL_POLL_SECONDS[1])
                        continue
                    short = room is not None and room < slots
                    slots = min(slots, room if room is not None else 1)
                if one_at_a_time:
                    slots = 1
                block = _Block(slots)
                ready: asyncio.Future[None] = loop.create_future()
                self._places += slots
                block.task = asyncio.create_task(self._hold(name, block, ready))
                self._holders.add(block.task)
                block.task.add_done_callback(self._holders.discard)
                try:
                    # Shielded: cancelled here (aclose), the holder still ends the attempt cleanly.
                    await asyncio.shield(ready)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    retry_after = _retry_after(exc)
                    if slots > 1:
                        # Refused (slots were taken since the read) or failed: single slots from
                        # now, and a real error shows there.
                        one_at_a_time = contended = True
                        continue
                    if retry_after is None:
                        self._fail_next(exc)  # as a clip's own acquisition did: the next one tries again
                        continue
                    contended = True
                    notice = notice or asyncio.create_task(say_what_the_wait_is_for(name))
                    await self._pause(retry_after)  # as long as Prefect's server asked
                    continue
                # Full after this grant (as far as the read knew): look before the next ask.
                contended, one_at_a_time = short, False
                poll = SLOT_FULL_POLL_SECONDS[0]
                if notice is not None:
                    notice.cancel()
                    notice = None
                self.acquisitions += slots
                self.acquisition_calls += 1
                self._hand_out(block)
        except Exception as exc:
            # A fault of the pool's own: every waiting clip fails with it rather than wait forever.
            while self._waiting:
                waiter = self._waiting.popleft()
                if not waiter.done():
                    waiter.set_exception(exc)
        finally:
            if notice is not None:
                notice.cancel()

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if this pool gives a block back (the limit has room then)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._released.wait(), seconds)

    async def _room_on_server(self, name: str) -> int | None:
        """The slots the limit has free now; None when it could not be read.

        A block asks for no more: Prefect grants a request whole or not at all, and a block waiting
        for slots that another flow run holds could wait long after single slots were free.
        """
        from prefect.client.orchestration import get_client

        try:
            async with get_client() as client:
                limit = await client.read_global_concurrency_limit_by_name(name)
        except Exception:
            return None  # the acquisition itself will say what is wrong (a missing limit, say)
        if not limit.active:
            return self.size  # an inactive limit grants anything
        return max(0, int(limit.limit) - int(limit.active_slots))

    async def _hold(self, name: str, block: _Block, ready: asyncio.Future[None]) -> None:
        from prefect.concurrency.asyncio import concurrency

        try:
            # strict: a limit that vanished must stop the batch, not let it run unbounded. A failed
            # lease renewal must not end the wait, though: the jobs are paid for and go on either
            # way. max_retries=0: one attempt, so the pool (not Prefect's queue, which serialises
            # every acquisition of this limit in the process) decides what to ask for next.
            async with concurrency(
                name,
                occupy=block.slots,
                max_retries=0,
                strict=True,
                lease_duration=SLOT_LEASE_SECONDS,
                raise_on_lease_renewal_failure=False,
            ):
                block.acquired_at = asyncio.get_running_loop().time()
                block.granted = block.held = True
                self._blocks.add(block)
                if self._closed:
                    self._let_go(block)  # granted after aclose asked for everything back
                ready.set_result(None)
                await block.close.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
                ready.exception()  # retrieved here: the acquirer may be gone (aclose)
        finally:
            if not ready.done():
                ready.cancel()
            block.held = False
            block.ended = True
            self._settle(block)

    def _hand_out(self, block: _Block) -> None:
        """The lanes of a new block to the waiting clips; any left over stay idle (rule 1)."""
        while block.in_use < block.slots and self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                block.in_use += 1
                waiter.set_result((block, False))
        if block.in_use == 0:
            self._let_go(block)  # every clip it was for was served or gave up meanwhile

    def _fail_next(self, exc: Exception) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(exc)
                return


def _retry_after(exc: BaseException) -> float | None:
    """The wait Prefect's server asked for when it refused an acquisition (423); None otherwise.

    With ``max_retries=0`` Prefect raises ``ConcurrencySlotAcquisitionError`` from the server's
    ``httpx.HTTPStatusError`` (``concurrency/_asyncio.py``), whose Retry-After it would have slept.
    """
    import httpx

    cause = exc.__cause__
    if not isinstance(cause, httpx.HTTPStatusError) or cause.response.status_code != _LOCKED:
        return None
    try:
        return max(0.0, float(cause.response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return 1.0


__all__ = [
    "SLOT_FULL_POLL_SECONDS",
    "SLOT_HANDOVER_JOBS",
    "SLOT_HANDOVER_MAX_SECONDS",
    "SLOT_HANDOVER_SECONDS",
    "SlotPool",
]
