"""How many Scenario jobs run at once: a Prefect global concurrency limit, and the API's own ceiling.

Scenario caps the custom jobs a team runs in parallel (its plan's ``parallelCustomJobs``). A job
past the ceiling is refused with a 429 whose ``details.actionName`` is ``parallel-custom-jobs``,
and retrying at once only repeats it. Two layers keep a batch inside the ceiling:

* a Prefect **global concurrency limit** (default name ``scenario-custom-jobs``) sized to the
  ceiling. A slot is held from the submit until the job is terminal, which is exactly when the API
  counts the job as in flight, and it is shared by every flow run on the Prefect server: two batches
  started at once still never pass it. :func:`ensure_global_concurrency_limit` creates the limit
  when it is missing (and says so), and never resizes one that exists: its size is the team's to set.
* the **429 fallback**: someone else on the team (the web app, another server) may hold jobs the
  limit does not see. :class:`CeilingWatch` turns the submit's 429 into a task retry, so the
  clip waits for a slot instead of failing. Nothing was created by a refused submit, so sending it
  again cannot buy a second job.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from prefect import Task
from prefect.client.schemas.objects import State, TaskRun

from prefect_scenario.errors import RateLimitError
from prefect_scenario.run_context import run_logger

DEFAULT_LIMIT_NAME = "scenario-custom-jobs"
# Scenario plans start at a couple of parallel custom jobs: a small default refuses nothing that a
# larger plan would allow, it only runs slower. Teams on bigger plans raise it (or the limit itself).
DEFAULT_PARALLEL_JOBS = 2
CEILING_ACTION = "parallel-custom-jobs"

# Waits between two submits refused by the ceiling: short first (a job of this batch may be about to
# end), then every half minute. The jitter keeps many waiting clips from knocking in lockstep.
CEILING_RETRY_DELAYS: list[float] = [2, 3, 5, 8, 13, 20, 30]
CEILING_RETRY_JITTER = 0.3
# Bounded, as every retry layer is: about 12 hours of waiting for the team's jobs to drain.
CEILING_MAX_WAIT_SECONDS = 12 * 3600
CEILING_MAX_RETRIES = len(CEILING_RETRY_DELAYS) + int(CEILING_MAX_WAIT_SECONDS // CEILING_RETRY_DELAYS[-1])
# A slot's lease outlives a crashed flow run by at most this long (plus the server's repossessor
# period, 15 s by default); Prefect renews it (every 3/4 of it) while the job runs, however long
# that is. Short, because every batch on the server waits out the slots of a run that died: 300 s
# kept a rerun silent for five minutes. 60 s is the shortest lease Prefect's server accepts.
SLOT_LEASE_SECONDS = 60.0
# A clip that waits this long for a slot says what it waits for.
SLOT_WAIT_NOTICE_SECONDS = 5.0


async def ensure_global_concurrency_limit(name: str, limit: int) -> int | None:
    """Make sure the global concurrency limit ``name`` exists; return the number of slots it has.

    A missing limit is created with ``limit`` slots and the run log says so. An existing limit is
    used as it is, even when its size differs from ``limit``: whoever set it knows the team's plan.

    Args:
        name: the limit's name (``scenario-custom-jobs`` by default in the flows).
        limit: the slots to create it with; the team's parallel custom-job ceiling.

    Returns:
        The limit's size on the server; None when the limit is inactive (it bounds nothing).

    Raises:
        ValueError: ``limit`` is below 1.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    if limit < 1:
        raise ValueError(f"concurrency_limit must be at least 1, got {limit}")
    logger = run_logger()
    async with get_client() as client:
        try:
            existing = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=limit, active=True)
                )
            except ObjectAlreadyExists:
                # Another flow run created it between our read and our create: use theirs.
                existing = await client.read_global_concurrency_limit_by_name(name)
            else:
                logger.info(
                    "Created the global concurrency limit %r with %d slot(s): at most %d Scenario job(s) "
                    "in flight across every flow run of this Prefect server. Resize it to your team's "
                    "parallel custom-job ceiling with `prefect gcl update %s --limit N`.",
                    name,
                    limit,
                    limit,
                    name,
                )
                return limit
    if not existing.active:
        logger.warning(
            "The global concurrency limit %r is inactive: it limits nothing, so only Scenario's own ceiling "
            "(429, waited on) holds jobs back. Activate it with `prefect gcl enable %s`.",
            name,
            name,
        )
        return None
    if existing.limit != limit:
        logger.info(
            "Using the global concurrency limit %r as it is: %d slot(s) (concurrency_limit=%d only sizes a "
            "limit this flow creates).",
            name,
            existing.limit,
            limit,
        )
    return int(existing.limit)


async def existing_limit_size(name: str | None) -> int | None:
    """The size of the global concurrency limit ``name`` when it exists and is active, else None."""
    if not name:
        return None
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            limit = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return None
    return int(limit.limit) if limit.active else None


@contextlib.asynccontextmanager
async def job_slot(name: str | None) -> AsyncIterator[None]:
    """Hold one slot of the global concurrency limit ``name`` (nothing when ``name`` is None).

    Hold it from the submit until the job is terminal: that is when the API counts the job in flight.
    The slot is leased; if the process dies, the lease lapses and the slot comes back by itself.
    """
    if name is None:
        yield
        return
    from prefect.concurrency.asyncio import concurrency

    notice = asyncio.create_task(_say_what_the_wait_is_for(name))
    try:
        # strict: a limit that vanished must stop the batch, not let it run unbounded. A failed
        # lease renewal must not end the wait, though: the job is paid for and goes on either way.
        async with concurrency(
            name,
            occupy=1,
            strict=True,
            lease_duration=SLOT_LEASE_SECONDS,
            raise_on_lease_renewal_failure=False,
        ):
            notice.cancel()
            yield
    finally:
        notice.cancel()


async def _say_what_the_wait_is_for(name: str) -> None:
    """Once a clip has waited a while for a slot, log who holds them (never raises)."""
    await asyncio.sleep(SLOT_WAIT_NOTICE_SECONDS)
    held = ""
    with contextlib.suppress(Exception):
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            limit = await client.read_global_concurrency_limit_by_name(name)
        held = f" ({limit.active_slots} of {limit.limit} slot(s) taken)"
    run_logger().info(
        "Waiting for a slot of the global concurrency limit %r%s: held by running Scenario jobs, or by a "
        "run that died, whose lease lapses within %.0f s",
        name,
        held,
        SLOT_LEASE_SECONDS,
    )


# How long a batch may pass one slot from clip to clip before giving it back to the limit.
SLOT_HANDOVER_SECONDS = 60.0


@dataclass(eq=False)
class _Lane:
    """One slot of the limit, held open by a background task until ``close`` is set."""

    acquired_at: float = 0.0
    close: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class SlotPool:
    """The slots of a global concurrency limit that one batch's clips hold, passed clip to clip.

    A clip whose job ended hands its slot straight to the next waiting clip of the batch, instead
    of releasing it and the next clip acquiring it again. Prefect grants acquisitions one at a time
    per limit, each a write to its database, and on a busy server (a batch's task runs and events)
    each took seconds: the benchmarks measured clips waiting a median 36-50 s for slots held 4 s.
    A slot is passed on for at most ``handover_seconds`` after it was acquired, then given back to
    the limit, so other flow runs waiting on the same limit get their turn. At most ``size`` slots
    are held or asked for at once: the batch's clips queue here, not by polling the server.

    With ``name`` None there is no limit on the server: ``size`` (if any) bounds the pool's jobs in
    this process only.

    Use ``async with SlotPool(name, size) as pool:`` around the batch (or call :meth:`aclose`) and
    ``async with pool.slot():`` around each job; leaving the pool gives every slot back.
    """

    def __init__(
        self, name: str | None, size: int | None, *, handover_seconds: float = SLOT_HANDOVER_SECONDS
    ) -> None:
        self.name = name
        self.size = size
        self.handover_seconds = handover_seconds
        self.acquisitions = 0
        self.handovers = 0
        self._places = 0  # slots held or being acquired, counted against ``size``
        self._lanes: set[_Lane] = set()
        self._holders: set[asyncio.Task[None]] = set()  # closed lanes' too, until they released
        # Waiting clips get a lane (handed over) or None (a place is theirs: acquire a slot).
        self._waiting: list[asyncio.Future[_Lane | None]] = []
        # Without a limit on the server, a size still bounds this pool's jobs (a split edit's
        # max_parallel_chunks), here in the process.
        self._local = asyncio.Semaphore(size) if name is None and size else None

    async def __aenter__(self) -> SlotPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Give every slot back to the limit, and wait until they are released."""
        for lane in self._lanes:
            lane.close.set()
        self._lanes.clear()
        await asyncio.gather(*self._holders, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for one job: one handed over, a new one, or the next one given back."""
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
        lane = await self._take()
        try:
            yield
        finally:
            self._give_back(lane)

    async def _take(self) -> _Lane:
        if self._places < (self.size or 0) and not self._waiting:
            self._places += 1
            return await self._open()
        waiter: asyncio.Future[_Lane | None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            lane = await waiter
        except BaseException:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                # Given something just as this clip gave up: pass it on.
                given = waiter.result()
                if given is None:
                    self._free_place()
                else:
                    self._give_back(given)
            raise
        if lane is None:
            return await self._open()
        self.handovers += 1
        return lane

    async def _open(self) -> _Lane:
        """Acquire a slot for a place already counted; on failure the place is freed."""
        lane = _Lane()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane.task = asyncio.create_task(self._hold(lane, ready))
        self._holders.add(lane.task)
        lane.task.add_done_callback(self._holders.discard)
        self._lanes.add(lane)
        try:
            await asyncio.shield(ready)
        except BaseException:
            self._close(lane)
            raise
        return lane

    async def _hold(self, lane: _Lane, ready: asyncio.Future[None]) -> None:
        try:
            async with job_slot(self.name):
                self.acquisitions += 1
                lane.acquired_at = asyncio.get_running_loop().time()
                ready.set_result(None)
                await lane.close.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
                ready.exception()  # retrieved here: the clip that asked raises it
        finally:
            if not ready.done():
                ready.cancel()

    def _give_back(self, lane: _Lane) -> None:
        alive = lane.task is not None and not lane.task.done()  # a slot whose holder ended is gone
        fresh = alive and asyncio.get_running_loop().time() - lane.acquired_at < self.handover_seconds
        if fresh:
            while self._waiting:
                waiter = self._waiting.pop(0)
                if not waiter.done():
                    waiter.set_result(lane)
                    return
        self._close(lane)

    def _close(self, lane: _Lane) -> None:
        """Give the slot back to the limit; its place goes to the next waiting clip, if any."""
        lane.close.set()
        self._lanes.discard(lane)
        self._free_place()

    def _free_place(self) -> None:
        while self._waiting:
            waiter = self._waiting.pop(0)
            if not waiter.done():
                waiter.set_result(None)  # the place stays counted: it is the waiter's now
                return
        self._places -= 1


def is_ceiling_refusal(exc: BaseException | None) -> bool:
    """True for a 429 of the API: nothing was created, and a later submit may pass."""
    return isinstance(exc, RateLimitError)


@dataclass
class CeilingWatch:
    """Counts the submits refused by Scenario's ceiling in one flow run, and decides their retry.

    Attributes:
        limit_name: the global concurrency limit in use (None when off), named in the advice.
        limit_size: its size, compared with the ceiling the API reports.
        refusals: 429s seen so far.
        api_ceiling: the ceiling the API reported (``details.actionLimit``), when it did.
    """

    limit_name: str | None = None
    limit_size: int | None = None
    refusals: int = 0
    api_ceiling: int | None = None
    _advised: bool = field(default=False, repr=False)

    def retry_condition(self) -> Callable[[Task[..., Any], TaskRun, State[Any]], bool]:
        """A ``retry_condition_fn`` for ``submit_job``: retry a 429, nothing else.

        Returned as a plain function: Prefect only calls functions there (a bound method would be
        treated as "no condition").
        """

        def retry_on_ceiling(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
            exc = state.data if isinstance(state.data, BaseException) else None
            if not is_ceiling_refusal(exc):
                return False
            assert isinstance(exc, RateLimitError)
            self.note(exc)
            return True

        return retry_on_ceiling

    def note(self, exc: RateLimitError) -> None:
        """Record a refusal; the first one that shows a too-large limit gets a word of advice."""
        self.refusals += 1
        if exc.action_limit is not None:
            self.api_ceiling = exc.action_limit
        logger = run_logger()
        ceiling = f" (ceiling: {exc.action_limit})" if exc.action_limit is not None else ""
        logger.info(
            "Scenario refused the submit: %s%s. Nothing was created; waiting for a slot to free up.",
            exc.action_name or "rate limited",
            ceiling,
        )
        if self._advised or exc.action_name != CEILING_ACTION:
            return
        self._advised = True
        if self.limit_name is None:
            logger.warning(
                "No global concurrency limit is in use, so this batch submits until Scenario refuses. "
                "Set concurrency_limit_name (e.g. %r) sized to your team's ceiling%s to queue in Prefect "
                "instead.",
                DEFAULT_LIMIT_NAME,
                ceiling,
            )
        elif (
            exc.action_limit is not None
            and self.limit_size is not None
            and self.limit_size > exc.action_limit
        ):
            logger.warning(
                "The global concurrency limit %r allows %d jobs but Scenario's ceiling is %d: clips will "
                "wait on 429s. Run `prefect gcl update %s --limit %d` to queue them in Prefect instead.",
                self.limit_name,
                self.limit_size,
                exc.action_limit,
                self.limit_name,
                exc.action_limit,
            )
        else:
            logger.warning(
                "Scenario's ceiling is reached although the global concurrency limit %r has room: other "
                "jobs of your team (the web app, another Prefect server) hold slots.",
                self.limit_name,
            )
