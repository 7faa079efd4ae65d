"""Waves: the jobs of one flow run bought up to a ceiling, the run suspended, finished at each wake.

A flow run that waits inline keeps its process alive from the first submit to the last download.
In ``wait="suspend"`` mode a flow run with many jobs (a batch's clips, a split edit's chunks) runs
in *waves*, each an attempt of the same flow run, started from the top by a worker when the
watcher (or a webhook) resumes it. Every attempt:

1. reads the run's :class:`WaveRecord`, written beside the paid submit's results (a resumed attempt
   touches no job already finished);
2. finds which of its jobs in flight ended: one listing of the jobs changed since the oldest of
   them was submitted (100 a page; a job the listing misses is read alone), and finishes each:
   judged, its slot given back, outputs downloaded and stored, then the caller's ``finish``. A job
   that failed on the server is bought again as a new job while the entry has retries left;
3. takes the slots of the global concurrency limit that are free, each under a lease that
   outlives the process (:class:`~prefect_scenario.slot_leases.SlotLeases`), within its own
   ``max_in_flight``;
4. submits that many entries through the one paid path (:meth:`JobRunner.pay`);
5. writes the record, then the wait onto the flow run (the jobs in flight, woken by ANY of them
   ending, the earliest deadline, a journal of the jobs bought) and suspends.

The attempt that finds nothing in flight and nothing left to submit returns, every entry decided.

Nothing is bought twice: an entry whose submit answered but whose record was not written (a crash
in between) is submitted again by the next attempt, and the submit's persisted result, its ledger
entry or the journal on the flow run gives back the same job.

The callers: :mod:`prefect_scenario.flows._batch_waves` (a batch's clips) and
:mod:`prefect_scenario.flows._chunk_waves` (a split edit's chunks).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, Field

from prefect_scenario.blocks import ScenarioCredentials
from prefect_scenario.errors import JobCanceledError, JobFailedError
from prefect_scenario.flows._job import Bought, JobOrder, JobRunner, PaidJob
from prefect_scenario.flows._suspend import (
    WAKE_GRACE,
    job_deadline,
    read_current_flow_run,
    still_running,
    suspend_on,
)
from prefect_scenario.models import CostEstimate, Job
from prefect_scenario.run_context import run_logger
from prefect_scenario.slot_leases import SlotLeases
from prefect_scenario.waiting import journal_label, journaled_job

# A listing reaches this far before the oldest submit in flight: Scenario's clock is not ours.
LISTING_OVERLAP = timedelta(minutes=5)
# The limit is full of other runs' jobs and none of this run's is in flight to wake it: look
# again this often (inside this attempt: there is nothing to suspend on).
FULL_LIMIT_POLL_SECONDS = 5.0

ResultT = TypeVar("ResultT", bound=BaseModel)


class WaveEntry(BaseModel, Generic[ResultT]):
    """One job's intent in a run that suspends, as its record keeps it between attempts.

    Attributes:
        body: its job's request (None: it failed before it had one).
        estimate: its dry-run estimate, when the run took one.
        bought: its job, once submitted.
        lease_id: the concurrency lease of its slot, taken before its submit and given back once
            its job ended ("" when it holds none).
        attempts: new jobs bought after its jobs failed on the server.
        retries: how many such new jobs it may have (a chunk's ``chunk_retries``; a batch clip: 0).
        failed_job_ids: those failed jobs, oldest first.
        result: its outcome, once known.
    """

    body: dict[str, Any] | None = None
    estimate: CostEstimate | None = None
    bought: Bought | None = None
    lease_id: str = ""
    attempts: int = 0
    retries: int = 0
    failed_job_ids: list[str] = Field(default_factory=list)
    result: ResultT | None = None

    @property
    def slot(self) -> str:
        """Its job's name in the flow run's journal (``scenario.paid.<slot>``)."""
        raise NotImplementedError

    @property
    def delivers(self) -> bool:
        """Its stored outputs settle its ledger entry at once (a chunk's wait for the stitch)."""
        return True

    @property
    def in_flight(self) -> bool:
        return self.result is None and self.bought is not None

    @property
    def pending(self) -> bool:
        return self.result is None and self.bought is None


EntryT = TypeVar("EntryT", bound=WaveEntry[Any])


class WaveRecord(BaseModel, Generic[EntryT]):
    """What a run that suspends knows between its attempts: every entry, in order.

    Attributes:
        started_at: when the first attempt started (epoch seconds), for the run's duration.
        planned: the creative units its plan admitted.
        clips: every entry, decided or not.
        waves: how many attempts have run so far (this one included).
        finished: every entry was decided and reported: a later attempt is a retry, not a wave.
    """

    started_at: float
    planned: float = 0.0
    clips: list[EntryT]
    waves: int = 1
    finished: bool = False


class WaveItem(Protocol[ResultT]):
    """What a caller's item (a batch clip, a chunk) does for the waves: its outcome, its cleanup."""

    result: ResultT | None

    @property
    def label(self) -> str:
        """The item as logs name it."""
        ...

    def failed(
        self, exc: BaseException, job_id: str | None = None, failed_job_ids: Sequence[str] = ()
    ) -> ResultT:
        """Its outcome when ``exc`` ended it (``job_id``: its last job; ``failed_job_ids``: the
        jobs that failed before, bought again)."""
        ...

    def release(self) -> None:
        """Remove what it holds locally."""
        ...


ItemT = TypeVar("ItemT", bound=WaveItem[Any])


async def _record_store() -> Any:
    from prefect.results import get_result_store

    from prefect_scenario.tasks import submit_job

    # Beside the submit's results and its ledger: every worker that can resume the run reads it.
    return await get_result_store().aupdate_for_task(submit_job)


def record_key(kind: str, flow_run_id: str) -> str:
    """Where the waves of ``kind`` (``batch``, ``chunk``) of one flow run keep their record."""
    return f"scenario-{kind}-waves-{flow_run_id}"


async def load_record(key: str, model: type[WaveRecord[EntryT]]) -> WaveRecord[EntryT] | None:
    """The record an earlier wave wrote under ``key``; None for the first attempt, and for a retry
    of a run whose waves had finished (it starts over).

    Raises:
        Exception: a record that exists and cannot be read: the caller must not start over.
    """
    store = await _record_store()
    if not await store.aexists(key):
        return None
    record = model.model_validate((await store.aread(key)).result)
    return None if record.finished else record


async def save_record(key: str, record: WaveRecord[Any]) -> None:
    """Write ``record`` (as JSON-ready data: readable whatever the package's version)."""
    store = await _record_store()
    await store.awrite(obj=record.model_dump(mode="json"), key=key)


def _journaled(labels: dict[str, Any], entry: WaveEntry[Any]) -> str | None:
    """The job the journal names for ``entry``, unless it is one that failed (a crash before the
    journal was cleared): that one is never adopted again."""
    job_id = journaled_job(labels, entry.slot)
    return None if job_id in entry.failed_job_ids else job_id


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass
class Waves(Generic[ItemT, ResultT]):
    """One attempt of a run in waves: finish what ended, submit what fits, suspend.

    Attributes:
        jobs: the run's paid path.
        model_id: the Scenario model.
        leases: the run's slots of the global concurrency limit.
        record_key: where the record lives (keyed by the flow run).
        finish: makes an item's result from its stored job and its entry (the caller's reporting
            and review).
        tick: told each item decided (the caller's progress bar).
        max_in_flight: at most this many of its jobs in flight at once (None: the limit decides).
    """

    jobs: JobRunner
    model_id: str
    leases: SlotLeases
    record_key: str
    finish: Callable[[ItemT, PaidJob, WaveEntry[Any]], Awaitable[ResultT]]
    tick: Callable[[ItemT], Awaitable[None]]
    max_in_flight: int | None = None

    @property
    def credentials(self) -> ScenarioCredentials:
        return self.jobs.credentials

    async def go(
        self, items: Sequence[ItemT], record: WaveRecord[Any], entries: Sequence[WaveEntry[Any]] | None = None
    ) -> None:
        """Run waves until every entry is decided; suspends (the process exits) while jobs run.

        ``entries`` (by default ``record.clips``: they may be nested in it, as a split batch
        clip's chunks) and ``items`` go in the same order; each item's ``result`` is set with its
        entry's. ``record`` is what is saved.
        """
        entries = list(record.clips if entries is None else entries)
        logger = run_logger()
        flow_run = await read_current_flow_run()
        journal = {entry.slot: _journaled(flow_run.labels, entry) for entry in entries}
        logger.info(
            "Wave %d: %d finished, %d in flight, %d to submit",
            record.waves,
            sum(1 for entry in entries if entry.result is not None),
            sum(1 for entry in entries if entry.in_flight),
            sum(1 for entry in entries if entry.pending),
        )
        waited_for_room = False
        # Journal slots of entries whose job failed, to empty with the next label write.
        forgotten: list[str] = []
        while True:
            await self._finish_ended(items, entries, journal, forgotten)
            newly = await self._submit(items, entries, record, journal)
            await save_record(self.record_key, record)
            in_flight = [entry for entry in entries if entry.in_flight]
            pending = [entry for entry in entries if entry.pending]
            if not in_flight and not pending:
                if forgotten:
                    await _clear_journal(forgotten)
                # Every entry decided: an attempt after this one (a retry of the run) starts over,
                # as an inline run's retry does: stored jobs come back from their submit's cache,
                # and an entry whose job failed is paid for anew.
                record.finished = True
                await save_record(self.record_key, record)
                return
            if not in_flight:
                # The limit is full of jobs that are not this run's: nothing of ours will wake us.
                if not waited_for_room:
                    logger.info(
                        "The global concurrency limit %r has no free slot and this run has no job in "
                        "flight: waiting here for a slot (%d to submit)",
                        self.leases.limit_name,
                        len(pending),
                    )
                    waited_for_room = True
                await asyncio.sleep(FULL_LIMIT_POLL_SECONDS)
                continue
            bought = [entry.bought for entry in in_flight if entry.bought is not None]
            deadline = min(job_deadline(b.submitted, self.jobs.timeout_seconds) for b in bought)
            logger.info(
                "%d Scenario job(s) in flight (%d submitted in this wave), %d still to submit: this flow "
                "run suspends until one of them ends (at the latest %s), and holds no worker meanwhile.",
                len(in_flight),
                newly,
                len(pending),
                deadline.isoformat(timespec="seconds"),
            )
            record.waves += 1
            await save_record(self.record_key, record)
            await suspend_on(
                [b.submitted.job_id for b in bought],
                deadline=deadline,
                scope=self.credentials.cache_scope(),
                journal={
                    **dict.fromkeys(forgotten, ""),
                    **{entry.slot: entry.bought.submitted.job_id for entry in in_flight if entry.bought},
                },
                wake_on="any",
            )
            # Only a refused pause (a key that fired already) comes back here: look again.
            forgotten.clear()
            record.waves -= 1

    async def _ended(self, in_flight: list[WaveEntry[Any]]) -> dict[str, Job]:
        """The jobs among ``in_flight`` that ended: one listing, and a GET for any it missed."""
        submitted = [entry.bought.submitted for entry in in_flight if entry.bought is not None]
        wanted = {item.job_id for item in submitted}
        since = min(_aware(item.submitted_at) for item in submitted) - LISTING_OVERLAP
        ended: dict[str, Job] = {}
        listed: set[str] = set()
        async with self.credentials.get_client() as client:
            async for job in client.jobs.list(type="custom", updated_after=since, page_size=100):
                if job.job_id in wanted:
                    listed.add(job.job_id)
                    if job.status.is_terminal:
                        ended[job.job_id] = job
            for job_id in sorted(wanted - listed):
                job = await client.jobs.get(job_id)
                if job.status.is_terminal:
                    ended[job_id] = job
        return ended

    async def _finish_ended(
        self,
        items: Sequence[ItemT],
        entries: Sequence[WaveEntry[Any]],
        journal: dict[str, str | None],
        forgotten: list[str],
    ) -> None:
        in_flight = [(item, entry) for item, entry in zip(items, entries, strict=True) if entry.in_flight]
        if not in_flight:
            return
        ended = await self._ended([entry for _, entry in in_flight])
        now = datetime.now(UTC)
        due = [
            (item, entry)
            for item, entry in in_flight
            if entry.bought is not None
            and (
                entry.bought.submitted.job_id in ended
                or now >= job_deadline(entry.bought.submitted, self.jobs.timeout_seconds)
            )
        ]
        await asyncio.gather(
            *(self._finish_one(item, entry, ended, journal, forgotten) for item, entry in due)
        )

    async def _finish_one(
        self,
        item: ItemT,
        entry: WaveEntry[Any],
        ended: dict[str, Job],
        journal: dict[str, str | None],
        forgotten: list[str],
    ) -> None:
        assert entry.bought is not None
        bought = entry.bought
        job_id = bought.submitted.job_id
        try:
            try:
                if job_id not in ended:
                    async with self.credentials.get_client() as client:
                        raise still_running(await client.jobs.get(job_id), self.jobs.timeout_seconds)
                # Ended: the judge reads it once, and fails the entry with the job's error and hint.
                job = await self.jobs.judge(bought.submitted)
            except JobFailedError as exc:
                forgotten.append(entry.slot)  # a retry of the run may buy anew, as inline
                journal[entry.slot] = None
                if not isinstance(exc, JobCanceledError) and entry.attempts < entry.retries:
                    # Submitted again as a new job by this wave's submits (the failed job created
                    # nothing to keep); a canceled one was someone's decision.
                    entry.attempts += 1
                    entry.failed_job_ids.append(job_id)
                    entry.bought = None
                    run_logger().warning(
                        "%s: Scenario job %s failed on the server (%s); submitting it again as a new "
                        "job (retry %d of %d)",
                        item.label,
                        job_id,
                        exc.error or "no reason given",
                        entry.attempts,
                        entry.retries,
                    )
                    return
                raise
            finally:
                # Terminal (or given up on): the slot goes back before the download.
                await self.leases.release([entry.lease_id])
                entry.lease_id = ""
            paid = await self.jobs.store(bought, job, deliver=entry.delivers)
            item.result = await self.finish(item, paid, entry)
        except Exception as exc:
            item.result = item.failed(exc, job_id, entry.failed_job_ids)
            run_logger().error(
                "%s failed (job %s): %s", item.label, job_id, getattr(item.result, "error", exc)
            )
        finally:
            if item.result is not None:
                item.release()
        entry.result = item.result
        await self.tick(item)

    async def _submit(
        self,
        items: Sequence[ItemT],
        entries: Sequence[WaveEntry[Any]],
        record: WaveRecord[Any],
        journal: dict[str, str | None],
    ) -> int:
        """Submit as many waiting entries as there are free slots for; how many were.

        The slots are written into the record before any submit: an attempt that dies after
        taking them leaves them to the next attempt (renewed, not taken again), not to expire.
        """
        pending = [(item, entry) for item, entry in zip(items, entries, strict=True) if entry.pending]
        if self.max_in_flight is not None:
            room = max(0, self.max_in_flight - sum(1 for entry in entries if entry.in_flight))
            pending = pending[:room]
        if not pending:
            return 0
        # A lease lasts as long as its job may run, and a little longer: the wake at its deadline.
        seconds = self.jobs.timeout_seconds + WAKE_GRACE.total_seconds()
        left = [entry.lease_id for _, entry in pending if entry.lease_id]
        kept = set(await self.leases.renew(left, seconds)) if left else set()
        for _, entry in pending:
            if entry.lease_id not in kept:
                entry.lease_id = ""
        unleased = [entry for _, entry in pending if not entry.lease_id]
        taken = await self.leases.take(len(unleased), seconds)
        for entry, lease in zip(unleased, taken, strict=False):
            entry.lease_id = lease
        if taken:
            await save_record(self.record_key, record)
        results = await asyncio.gather(
            *(
                self._submit_one(item, entry, journal.get(entry.slot))
                for item, entry in pending
                if entry.lease_id
            )
        )
        return sum(results)

    async def _submit_one(self, item: ItemT, entry: WaveEntry[Any], journaled: str | None) -> int:
        assert entry.body is not None
        try:
            order = JobOrder(
                self.model_id,
                entry.body,
                estimate=entry.estimate,
                # After a failed job: a new one, whatever the caches hold (its ledger entry still
                # gives back the job of an answered submit whose record was never written).
                fresh=entry.attempts > 0,
            )
            entry.bought = await self.jobs.pay(order, adopt_job_id=journaled)
        except Exception as exc:
            await self.leases.release([entry.lease_id])
            entry.lease_id = ""
            item.result = entry.result = item.failed(exc, None, entry.failed_job_ids)
            run_logger().error("%s failed at its submit: %s", item.label, getattr(item.result, "error", exc))
            item.release()
            await self.tick(item)
            return 0
        return 1


async def _clear_journal(slots: list[str]) -> None:
    """Empty the journal of entries whose job failed; never raises (see ``forget_journaled_job``)."""
    from prefect.client.orchestration import get_client

    try:
        flow_run = await read_current_flow_run()
        async with get_client() as client:
            await client.update_flow_run_labels(flow_run.id, {journal_label(slot): "" for slot in slots})
    except Exception as exc:
        run_logger().warning("Could not clear the journal of %d failed job(s): %s", len(slots), exc)


__all__ = ["WaveEntry", "WaveItem", "WaveRecord", "Waves", "load_record", "save_record"]
