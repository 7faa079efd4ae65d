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

    notice = asyncio.create_task(say_what_the_wait_is_for(name))
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


async def say_what_the_wait_is_for(name: str) -> None:
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
