"""``wait="suspend"`` for a batch: submit up to the ceiling, suspend, go on from a record at each wake.

A batch that waits inline keeps its process alive from the first submit to the last download: a
nightly batch of 1,000 six-minute jobs pins a worker (a container, on Docker, Kubernetes or ECS
pools) all night, doing nothing. In suspend mode the batch runs in *waves*, each an attempt of the
same flow run, started from the top by a worker when the watcher (or a webhook) resumes it:

1. the first attempt prepares and plans every clip exactly as inline mode does (fetch, check,
   upload, estimate; the budget plan before anything is spent), and writes the batch's
   :class:`WaveRecord` beside the paid submit's results;
2. every attempt reads the record (a resumed one touches no clip already finished, and neither
   lists, fetches nor uploads again), then:

   a. finds which of its jobs in flight ended: one listing of the jobs changed since the oldest of
      them was submitted (100 a page; a job the listing misses is read alone), and finishes each
      clip whose job ended: judged, its slot given back, outputs downloaded and stored, reviewed;
   b. takes the slots of the global concurrency limit that are free, each under a lease that
      outlives the process (:class:`~prefect_scenario.slot_leases.SlotLeases`): a suspended batch
      still counts its jobs against the team's ceiling, and no other run can pass it;
   c. submits that many clips through the one paid path (:meth:`JobRunner.pay`);
   d. writes the record, then the wait onto the flow run (the jobs in flight, woken by ANY of them
      ending, the earliest deadline, a journal of the jobs bought) and suspends.

3. the attempt that finds nothing in flight and nothing left to submit reports the batch, as inline
   mode does.

Nothing is bought twice: a clip whose submit answered but whose record was not written (a crash in
between) is submitted again by the next attempt, and the submit's persisted result, its ledger
entry or the journal on the flow run gives back the same job.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from prefect_scenario.blocks import ScenarioCredentials
from prefect_scenario.flows._job import Bought, JobRunner, PaidJob
from prefect_scenario.flows._suspend import (
    WAKE_GRACE,
    job_deadline,
    read_current_flow_run,
    still_running,
    suspend_on,
)
from prefect_scenario.flows.result import ClipResult
from prefect_scenario.models import CostEstimate, Job
from prefect_scenario.run_context import run_logger
from prefect_scenario.slot_leases import SlotLeases
from prefect_scenario.waiting import journal_label, journaled_job

if TYPE_CHECKING:
    from prefect_scenario.flows._batch_clip import BatchClip

RECORD_PREFIX = "scenario-batch-waves"
# A listing reaches this far before the oldest submit in flight: Scenario's clock is not ours.
LISTING_OVERLAP = timedelta(minutes=5)
# The limit is full of other runs' jobs and none of this batch's is in flight to wake it: look
# again this often (inside this attempt: there is nothing to suspend on).
FULL_LIMIT_POLL_SECONDS = 5.0


class WaveClip(BaseModel):
    """One clip of a suspended batch, as its record keeps it between attempts.

    Attributes:
        given: the clip as the batch was given it.
        asset_id: its uploaded asset (None: it failed before).
        body: its job's request.
        estimate: its dry-run estimate, when the batch took one.
        notes: what was done to it.
        bought: its job, once submitted.
        lease_id: the concurrency lease of its slot, taken before its submit and given back once
            its job ended ("" when it holds none).
        result: its outcome, once known (skipped, failed or succeeded).
    """

    given: str
    asset_id: str | None = None
    body: dict[str, Any] | None = None
    estimate: CostEstimate | None = None
    notes: list[str] = Field(default_factory=list)
    bought: Bought | None = None
    lease_id: str = ""
    result: ClipResult | None = None


class WaveRecord(BaseModel):
    """What a suspended batch knows between its attempts: every clip, in the order given.

    Attributes:
        started_at: when the first attempt started (epoch seconds), for the batch's duration.
        planned: the creative units its plan admitted.
        clips: every clip, decided or not.
        waves: how many attempts have run so far (this one included).
        finished: every clip was decided and reported: a later attempt is a retry, not a wave.
    """

    started_at: float
    planned: float = 0.0
    clips: list[WaveClip]
    waves: int = 1
    finished: bool = False


def slot_of(given: str) -> str:
    """The journal slot of a batch clip: short, stable, the same whatever the clip's position."""
    return "clip-" + hashlib.sha256(given.encode()).hexdigest()[:16]


def _record_key(flow_run_id: str) -> str:
    return f"{RECORD_PREFIX}-{flow_run_id}"


async def _record_store() -> Any:
    from prefect.results import get_result_store

    from prefect_scenario.tasks import submit_job

    # Beside the submit's results and its ledger: every worker that can resume the run reads it.
    return await get_result_store().aupdate_for_task(submit_job)


async def load_record(flow_run_id: str) -> WaveRecord | None:
    """The record an earlier wave of this flow run wrote; None for the first attempt, and for a
    retry of a batch that had finished (it starts over).

    Raises:
        Exception: a record that exists and cannot be read: the caller must not start over.
    """
    store = await _record_store()
    key = _record_key(flow_run_id)
    if not await store.aexists(key):
        return None
    record = WaveRecord.model_validate((await store.aread(key)).result)
    return None if record.finished else record


async def save_record(flow_run_id: str, record: WaveRecord) -> None:
    """Write ``record`` (as JSON-ready data: readable whatever the package's version)."""
    store = await _record_store()
    await store.awrite(obj=record.model_dump(mode="json"), key=_record_key(flow_run_id))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass
class Waves:
    """One attempt of a suspended batch: finish what ended, submit what fits, suspend.

    Attributes:
        jobs: the batch's paid path.
        model_id: the Scenario model.
        leases: the batch's slots of the global concurrency limit.
        flow_run_id: this flow run (the record's key, the leases' holder).
        finish: makes a clip's result from its stored job (the batch's reporting and review).
        tick: counts a clip finished on the batch's progress bar.
        fetch_source: a finished clip's review reads the clip itself (layers: the PSNR): fetch it
            again (the attempt that uploaded it is gone).
    """

    jobs: JobRunner
    model_id: str
    leases: SlotLeases
    flow_run_id: str
    finish: Callable[[BatchClip, PaidJob], Awaitable[ClipResult]]
    tick: Callable[[], Awaitable[None]]
    fetch_source: bool = False

    @property
    def credentials(self) -> ScenarioCredentials:
        return self.jobs.credentials

    async def go(self, clips: list[BatchClip], record: WaveRecord) -> None:
        """Run waves until every clip is decided; suspends (the process exits) while jobs run."""
        logger = run_logger()
        flow_run = await read_current_flow_run()
        journal = {
            slot_of(entry.given): journaled_job(flow_run.labels, slot_of(entry.given))
            for entry in record.clips
        }
        logger.info(
            "Wave %d: %d clip(s) finished, %d in flight, %d to submit",
            record.waves,
            sum(1 for entry in record.clips if entry.result is not None),
            sum(1 for entry in record.clips if entry.result is None and entry.bought is not None),
            sum(1 for entry in record.clips if entry.result is None and entry.bought is None),
        )
        waited_for_room = False
        # Journal slots of clips whose job failed, to empty with the next label write.
        forgotten: list[str] = []
        while True:
            await self._finish_ended(clips, record, forgotten)
            newly = await self._submit(clips, record, journal)
            await save_record(self.flow_run_id, record)
            in_flight = [entry for entry in record.clips if entry.result is None and entry.bought is not None]
            pending = [entry for entry in record.clips if entry.result is None and entry.bought is None]
            if not in_flight and not pending:
                if forgotten:
                    await _clear_journal(forgotten)
                # Every clip decided: an attempt after this one (a retry of the run) starts over,
                # as an inline batch's retry does: stored clips come back from their submit's cache,
                # and a clip whose job failed is paid for anew.
                record.finished = True
                await save_record(self.flow_run_id, record)
                return
            if not in_flight:
                # The limit is full of jobs that are not this batch's: nothing of ours will wake us.
                if not waited_for_room:
                    logger.info(
                        "The global concurrency limit %r has no free slot and this batch has no job in "
                        "flight: waiting here for a slot (%d clip(s) to submit)",
                        self.leases.limit_name,
                        len(pending),
                    )
                    waited_for_room = True
                await asyncio.sleep(FULL_LIMIT_POLL_SECONDS)
                continue
            bought = [entry.bought for entry in in_flight if entry.bought is not None]
            deadline = min(job_deadline(b.submitted, self.jobs.timeout_seconds) for b in bought)
            logger.info(
                "%d Scenario job(s) in flight (%d submitted in this wave), %d clip(s) still to submit: this "
                "flow run suspends until one of them ends (at the latest %s), and holds no worker meanwhile.",
                len(in_flight),
                newly,
                len(pending),
                deadline.isoformat(timespec="seconds"),
            )
            record.waves += 1
            await save_record(self.flow_run_id, record)
            await suspend_on(
                [b.submitted.job_id for b in bought],
                deadline=deadline,
                scope=self.credentials.cache_scope(),
                journal={
                    **{
                        slot_of(entry.given): entry.bought.submitted.job_id
                        for entry in in_flight
                        if entry.bought
                    },
                    **dict.fromkeys(forgotten, ""),
                },
                wake_on="any",
            )
            # Only a refused pause (a key that fired already) comes back here: look again.
            forgotten.clear()
            record.waves -= 1

    async def _ended(self, in_flight: list[WaveClip]) -> dict[str, Job]:
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

    async def _finish_ended(self, clips: list[BatchClip], record: WaveRecord, forgotten: list[str]) -> None:
        in_flight = [
            (clip, entry)
            for clip, entry in zip(clips, record.clips, strict=True)
            if entry.result is None and entry.bought is not None
        ]
        if not in_flight:
            return
        ended = await self._ended([entry for _, entry in in_flight])
        now = datetime.now(UTC)
        due = [
            (clip, entry)
            for clip, entry in in_flight
            if entry.bought is not None
            and (
                entry.bought.submitted.job_id in ended
                or now >= job_deadline(entry.bought.submitted, self.jobs.timeout_seconds)
            )
        ]
        await asyncio.gather(*(self._finish_one(clip, entry, ended, forgotten) for clip, entry in due))

    async def _finish_one(
        self, clip: BatchClip, entry: WaveClip, ended: dict[str, Job], forgotten: list[str]
    ) -> None:
        from prefect_scenario.errors import JobFailedError

        assert entry.bought is not None
        bought = entry.bought
        job_id = bought.submitted.job_id
        try:
            try:
                if job_id not in ended:
                    async with self.credentials.get_client() as client:
                        raise still_running(await client.jobs.get(job_id), self.jobs.timeout_seconds)
                # Ended: the judge reads it once, and fails the clip with the job's error and hint.
                job = await self.jobs.judge(bought.submitted)
            except JobFailedError:
                forgotten.append(slot_of(entry.given))  # a retry of the run may buy anew, as inline
                raise
            finally:
                # Terminal (or given up on): the slot goes back before the download.
                await self.leases.release([entry.lease_id])
                entry.lease_id = ""
            paid = await self.jobs.store(bought, job)
            if self.fetch_source and clip.local is None:
                clip.local = await clip.source.fetch()
            clip.result = await self.finish(clip, paid)
        except Exception as exc:
            clip.result = clip.failed(exc, job_id)
            run_logger().error("Clip %s failed (job %s): %s", clip.source.name, job_id, clip.result.error)
        finally:
            clip.release()
        entry.result = clip.result
        await self.tick()

    async def _submit(
        self, clips: list[BatchClip], record: WaveRecord, journal: dict[str, str | None]
    ) -> int:
        """Submit as many waiting clips as the limit has free slots for; how many were.

        The slots are written into the record before any submit: an attempt that dies after
        taking them leaves them to the next attempt (renewed, not taken again), not to expire.
        """
        pending = [
            (clip, entry)
            for clip, entry in zip(clips, record.clips, strict=True)
            if entry.result is None and entry.bought is None
        ]
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
            await save_record(self.flow_run_id, record)
        results = await asyncio.gather(
            *(
                self._submit_one(clip, entry, journal.get(slot_of(entry.given)))
                for clip, entry in pending
                if entry.lease_id
            )
        )
        return sum(results)

    async def _submit_one(self, clip: BatchClip, entry: WaveClip, journaled: str | None) -> int:
        assert clip.body is not None
        try:
            entry.bought = await self.jobs.pay(
                self.model_id, clip.body, estimate=clip.estimate, adopt_job_id=journaled
            )
        except Exception as exc:
            await self.leases.release([entry.lease_id])
            entry.lease_id = ""
            clip.result = entry.result = clip.failed(exc)
            run_logger().error("Clip %s failed at its submit: %s", clip.source.name, clip.result.error)
            clip.release()
            await self.tick()
            return 0
        return 1


async def _clear_journal(slots: list[str]) -> None:
    """Empty the journal of clips whose job failed; never raises (see ``forget_journaled_job``)."""
    from prefect.client.orchestration import get_client

    try:
        flow_run = await read_current_flow_run()
        async with get_client() as client:
            await client.update_flow_run_labels(flow_run.id, {journal_label(slot): "" for slot in slots})
    except Exception as exc:
        run_logger().warning("Could not clear the journal of %d failed clip(s): %s", len(slots), exc)


def new_record(clips: list[BatchClip], planned: float) -> WaveRecord:
    """The record of a batch about to run its first wave: every clip as prepared and planned."""
    return WaveRecord(
        started_at=time.time(),
        planned=planned,
        clips=[
            WaveClip(
                given=clip.source.given,
                asset_id=clip.asset_id,
                body=clip.body,
                estimate=clip.estimate,
                notes=list(clip.notes),
                result=clip.result,
            )
            for clip in clips
        ],
    )


__all__ = ["WaveClip", "WaveRecord", "Waves", "load_record", "new_record", "save_record", "slot_of"]
