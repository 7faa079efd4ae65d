"""The paid path, once: estimate → budget → submit (persisted) → wait → download → delivered → billed.

Every Scenario job of every flow runs through :meth:`JobRunner.run`: the single flows
(``run_generation``), the batch engine, and each chunk of a split edit. What differs between them is
an argument, never a copy of the sequence:

* ``slots``: a :class:`~prefect_scenario.slot_pool.SlotPool` held from the submit until the job is
  terminal (what the API counts in flight), released before the download so the next job starts;
* ``wait_as_task``: the wait as a task run of its own (single flows, chunks: a progress artifact
  per job), or inline (a batch: one log, one progress bar for thousands of clips);
* ``deliver``: whether stored outputs settle the ledger entry here, or later (a chunked edit
  settles its chunks once they are stitched);
* ``fresh`` (on the :class:`JobOrder`, what to buy): a new job even when one with the same inputs
  exists (a chunk whose job failed);
* ``wait_mode``: ``inline`` polls in the flow run; ``suspend`` suspends it after the submit, its
  worker free until the job ends (:mod:`prefect_scenario.flows._suspend`).

The safety of each step lives in the task it calls (see ``design.md``, "Where each safety lives"):
the submit is cached, persisted and recorded in the ledger before the POST; downloads are retried
with fresh signed URLs; nothing here retries a paid step.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.filesystems import WritableFileSystem
from pydantic import BaseModel

from prefect_scenario.blocks import ScenarioCredentials
from prefect_scenario.concurrency import (
    CEILING_MAX_RETRIES,
    CEILING_RETRY_DELAYS,
    CEILING_RETRY_JITTER,
    CeilingWatch,
)
from prefect_scenario.errors import JobFailedError, ScenarioConfigError
from prefect_scenario.flows._stopwatch import Stopwatch
from prefect_scenario.flows._suspend import await_job_end, forget_journaled_job, journaled_job_id
from prefect_scenario.manifest import StoredOutput, SubmittedJob
from prefect_scenario.models import CostEstimate, Job
from prefect_scenario.slot_pool import SlotPool
from prefect_scenario.tasks import download_outputs, estimate_job, submit_job, wait_for_job
from prefect_scenario.tasks.submit import mark_delivered, settle_earlier_run
from prefect_scenario.tasks.wait import wait_inline
from prefect_scenario.waiting import WaitMode


def ceiling_aware_submit(watch: CeilingWatch) -> Any:
    """``submit_job`` retried on Scenario's ceiling refusals (429) only, as ``watch`` decides.

    A 429 created nothing, so waiting and sending the submit again cannot buy a second job.
    """
    return submit_job.with_options(
        retries=CEILING_MAX_RETRIES,
        retry_delay_seconds=CEILING_RETRY_DELAYS,
        retry_jitter_factor=CEILING_RETRY_JITTER,
        retry_condition_fn=watch.retry_condition(),
    )


def _flow_run_created() -> datetime | None:
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None
    created = context.flow_run.created
    return created if created is None or created.tzinfo else created.replace(tzinfo=UTC)


def came_from_earlier_run(state: State[Any], submitted: SubmittedJob) -> bool:
    """True when ``submit_job`` found a job submitted before this flow run existed.

    A cache hit alone is not enough: a retry of this flow run also gets its own job back from the
    cache. Only a job older than the flow run itself came from another run; or one the submit
    adopted from the ledger, bought by another run that never delivered it.
    """
    if submitted.adopted_from is not None:
        return True
    if state.name != "Cached":
        return False
    created = _flow_run_created()
    if created is None:
        return True
    submitted_at = submitted.submitted_at
    if submitted_at.tzinfo is None:
        submitted_at = submitted_at.replace(tzinfo=UTC)
    return submitted_at < created


@dataclass(frozen=True)
class JobOrder:
    """One intent to buy a job: :meth:`JobRunner.run` sends its paid submit at most once.

    Attributes:
        model_id: the Scenario model.
        body: the model's inputs (asset ids, camelCase as on the wire).
        estimate: the dry-run estimate when the caller priced the job already (a batch's plan,
            a split clip's total); taken by the runner or the submit otherwise.
        max_creative_units: the job's own budget, checked by the submit before it pays.
        fresh: pay for a new job whatever the caches hold (a chunk whose job failed).
    """

    model_id: str
    body: dict[str, Any]
    estimate: CostEstimate | None = None
    max_creative_units: float | None = None
    fresh: bool = False


@dataclass(frozen=True)
class PaidJob:
    """A job that ended in success, its outputs stored.

    Attributes:
        submitted: what the submit recorded (job id, estimate, ledger key, adoption).
        job: the terminal job as the API returned it.
        outputs: the stored outputs, by output index.
        reused: True when the job came from an earlier flow run (nothing spent by this one).
    """

    submitted: SubmittedJob
    job: Job
    outputs: list[StoredOutput]
    reused: bool

    @property
    def billed(self) -> float | None:
        """What the job cost: the API's billing when it says, else what the submit was charged."""
        if self.job.billing is not None:
            return self.job.billing.cu_cost
        return self.submitted.creative_units_cost


class Bought(BaseModel):
    """A submitted job, as :meth:`JobRunner.pay` returns it (and a suspended batch records it).

    Attributes:
        submitted: what the submit recorded (job id, estimate, ledger key, adoption).
        reused: True when the job came from an earlier flow run (nothing spent by this one).
    """

    submitted: SubmittedJob
    reused: bool = False


@contextlib.asynccontextmanager
async def _no_slot() -> AsyncIterator[None]:
    yield


@dataclass(frozen=True)
class JobRunner:
    """How the jobs of one flow run are run: credentials, destination, reuse, slots, waiting.

    Attributes:
        credentials: resolved Scenario credentials.
        destination: a local directory, or a folder inside ``destination_storage``.
        destination_storage: a storage block for the outputs (None: the local disk).
        timeout_seconds: how long to wait for each job (the job goes on past it).
        reuse_across_runs: a job from an earlier flow run with the same inputs is reused.
        refresh: pay for a new job even when one with the same inputs exists.
        submit: the submit task as the caller configured it (``ceiling_aware_submit``); plain
            ``submit_job`` when None.
        slots: the pool bounding jobs in flight (None: unbounded here).
        wait_as_task: the wait is a task run of its own (False: inline, in the flow run's log).
        estimate_as_task: a job not priced by the caller is estimated by the ``estimate_job`` task
            first, a task run of its own in the UI (False: the submit takes its own free estimate,
            one task run fewer per clip of a batch).
        wait_mode: ``inline`` (poll in this flow run) or ``suspend`` (suspend it until the job
            ends; checked possible by ``check_wait_mode`` at the flow's door, and without slots:
            Prefect frees a concurrency slot when the process exits).
    """

    credentials: ScenarioCredentials
    destination: str = "scenario-outputs"
    destination_storage: WritableFileSystem | None = None
    timeout_seconds: float = 3600
    reuse_across_runs: bool = True
    refresh: bool = False
    submit: Any = None
    slots: SlotPool | None = None
    wait_as_task: bool = True
    estimate_as_task: bool = True
    wait_mode: WaitMode = "inline"

    def __post_init__(self) -> None:
        if self.wait_mode == "suspend" and self.slots is not None:
            raise ScenarioConfigError(
                "wait='suspend' does not hold concurrency slots (Prefect releases them when the "
                "suspended process exits): run these jobs with wait='inline'"
            )

    async def estimate(self, model_id: str, body: dict[str, Any]) -> CostEstimate:
        """A dry run of the job (free): what it would cost, nothing submitted."""
        estimate: CostEstimate = await estimate_job(model_id, body, credentials=self.credentials)
        return estimate

    def _slot(self) -> AbstractAsyncContextManager[None]:
        return self.slots.slot() if self.slots is not None else _no_slot()

    def _submit_task(self, fresh: bool) -> Any:
        submit = self.submit if self.submit is not None else submit_job
        return submit.with_options(refresh_cache=True) if fresh or self.refresh else submit

    async def run(
        self,
        order: JobOrder,
        *,
        deliver: bool = True,
        on_submitted: Callable[[SubmittedJob], None] | None = None,
        clock: Stopwatch | None = None,
        slot: str = "job",
    ) -> PaidJob:
        """Run one job to stored outputs; the submit is paid for at most once per intent.

        Args:
            order: what to buy (model, inputs, price known so far, budget, fresh or not).
            deliver: settle the ledger entry once the outputs are stored (False: the caller does,
                e.g. after stitching).
            on_submitted: told the submitted job as soon as it exists (for a caller's record of
                job ids when a later step fails).
            clock: the flow's stopwatch: the submit, wait and download phases are timed on it.
            slot: the job's name within its flow run (``job``, ``chunk-3``): in suspend mode the
                journal on the flow run keeps the job bought for it, so a resumed attempt adopts
                that job instead of submitting.

        Returns:
            The job with its stored outputs.

        Raises:
            BudgetExceededError: the estimate is over the order's ``max_creative_units``; nothing
                was spent.
            JobFailedError: the job failed on Scenario's side (``JobCanceledError``: canceled).
            JobWaitTimeoutError: the job did not end within ``timeout_seconds``.
        """
        clock = clock or Stopwatch()
        if order.estimate is None and self.estimate_as_task:
            # Free, and outside the slot: a dry run is not a job in flight.
            with clock.phase("submit"):
                order = replace(order, estimate=await self.estimate(order.model_id, order.body))
        suspends = self.wait_mode == "suspend"
        # Read before the submit: a resumed attempt must find its job even without its results.
        journaled = await journaled_job_id(slot) if suspends else None
        async with self._slot():
            bought = await self.pay(order, adopt_job_id=journaled, on_submitted=on_submitted, clock=clock)
            if suspends:
                with clock.phase("wait"):
                    await await_job_end(
                        bought.submitted,
                        credentials=self.credentials,
                        timeout_seconds=self.timeout_seconds,
                        slot=slot,
                    )
            try:
                # In suspend mode the job has ended: the wait only judges it, as inline.
                job = await self.judge(bought.submitted, clock)
            except JobFailedError:
                if suspends:
                    await forget_journaled_job(slot)
                raise
        # The slot is free again: the next job runs while this one's outputs download.
        return await self.store(bought, job, deliver=deliver, clock=clock)

    async def pay(
        self,
        order: JobOrder,
        *,
        adopt_job_id: str | None = None,
        on_submitted: Callable[[SubmittedJob], None] | None = None,
        clock: Stopwatch | None = None,
    ) -> Bought:
        """The paid step of :meth:`run` alone: the submit (cached, persisted, in the ledger).

        For a caller that holds the job's slot itself and waits elsewhere: a batch that suspends
        between its submits and its downloads (:mod:`prefect_scenario.flows._batch_waves`).

        Args:
            adopt_job_id: a job an earlier attempt bought for this intent (a journal's): adopted,
                never submitted again.
            Others: as in :meth:`run`.
        """
        # A fresh job (after a failed one) keeps the cache key other runs look under: a rerun must
        # find the new job, not buy a third. ``refresh_cache`` alone makes this submit pay.
        reuse = self.reuse_across_runs and not self.refresh
        clock = clock or Stopwatch()
        with clock.phase("submit"):
            state: State[SubmittedJob] = await self._submit_task(order.fresh)(
                order.model_id,
                order.body,
                credentials=self.credentials,
                estimate=order.estimate,
                max_creative_units=order.max_creative_units,
                reuse_across_runs=reuse,
                adopt_job_id=adopt_job_id,
                return_state=True,
            )
            submitted: SubmittedJob = await state.aresult()
            if on_submitted is not None:
                on_submitted(submitted)
            reused = came_from_earlier_run(state, submitted)
            if reused:
                await settle_earlier_run(submitted)
        return Bought(submitted=submitted, reused=reused)

    async def judge(self, submitted: SubmittedJob, clock: Stopwatch | None = None) -> Job:
        """The job once it succeeded (polled until it ends, as the runner waits).

        Raises:
            JobFailedError: the job failed on Scenario's side; its submit's cache is dropped.
            JobWaitTimeoutError: it did not end within ``timeout_seconds``.
        """
        wait = wait_for_job if self.wait_as_task else wait_inline
        with (clock or Stopwatch()).phase("wait"):
            job: Job = await wait(
                submitted.job_id, credentials=self.credentials, timeout_seconds=self.timeout_seconds
            )
        return job

    async def store(
        self, bought: Bought, job: Job, *, deliver: bool = True, clock: Stopwatch | None = None
    ) -> PaidJob:
        """The job's outputs downloaded and stored, its ledger entry settled (``deliver``)."""
        with (clock or Stopwatch()).phase("download"):
            outputs = await download_outputs(
                job,
                credentials=self.credentials,
                destination=self.destination,
                storage=self.destination_storage,
            )
            if deliver:
                await mark_delivered(bought.submitted.job_id, bought.submitted.ledger_key)
        return PaidJob(
            submitted=bought.submitted,
            job=job,
            outputs=sorted(outputs, key=lambda output: output.output_index),
            reused=bought.reused,
        )


__all__ = ["Bought", "JobRunner", "PaidJob", "came_from_earlier_run", "ceiling_aware_submit"]
