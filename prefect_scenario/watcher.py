"""The watcher: one process that waits for every suspended flow run's job, and wakes the run.

Flow runs in ``wait="suspend"`` mode record the jobs they wait on and suspend
(:mod:`prefect_scenario.waiting`). One watcher per Scenario project (credentials scope) wakes them:

* **who waits**: Prefect is the registry. Suspended flow runs tagged ``scenario-waiting`` are read
  in pages, and their labels say which jobs they wait on and until when;
* **which jobs ended**: one bulk listing per sweep, ``GET /v1/jobs?type=custom&updatedAfter=<start>``,
  across pages (short or empty pages while a token remains are followed), not one GET per job: a
  listed job's status is its current one, and a job the listing did not return has not changed
  since the window's start. The window starts ``overlap`` before the cursor, the newest
  ``updatedAt`` seen, kept in a Prefect Variable so a restarted watcher goes on where it stopped
  (``overlap``, because whether ``updatedAfter`` is strict is not documented, and because Prefect's
  and Scenario's clocks differ). A run seen for the first time widens the window to ``overlap``
  before its :attr:`~prefect_scenario.waiting.Waiter.since` (its flow run's start): its job may
  have ended before the run finished suspending, behind the cursor, but not before the run
  started. Every ``reconcile_every`` the window is widened so for every waiting run, so no cursor
  mistake can strand a run. On those wide sweeps, a job of those runs that the listing did not
  return at all (another project's job, clocks further apart than ``overlap``) is read with one
  GET. A sweep thus costs a request per page (100 jobs, at least one page) of the jobs updated in
  its window: after a restart or on a reconcile, of those updated since the oldest waiting run
  started (at most ``max_lookback``, a day, ago: the jobs of older runs that it misses are read one
  by one);
* **wake**: an event ``scenario.job.completed`` / ``scenario.job.failed`` (the job as resource, the
  flow run as related resource of role ``waiter``; its id derived from job, status and flow run,
  so the sweep, a webhook and the run itself record one event), then Prefect's resume. A resume
  of a run that is no longer paused is refused by the server and is harmless. A run past its
  deadline is woken too: it then fails itself, naming its job.

The watcher never submits, so it never pays: it reads jobs and resumes flow runs.

Why a direct resume and not only an automation on the event: the watcher needs the API to list
waiting runs anyway; a resume answers at once (accepted, already resumed, expired), with no
de-duplication window or order of related resources to rely on. The event stays the record, and
``automations/resume-on-scenario-job.yaml`` is there for a webhook receiver without API write access.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect_scenario.blocks import ScenarioCredentials
from prefect_scenario.client.policies import parse_time
from prefect_scenario.errors import NotFoundError
from prefect_scenario.events import JOB_COMPLETED, JOB_FAILED, job_resource
from prefect_scenario.models import Job, JobStatus
from prefect_scenario.waiting import WAITING_TAG, Waiter, wake_event_id

logger = logging.getLogger("prefect_scenario.watcher")

_PAGE = 200


def cursor_variable_name(scope: str) -> str:
    """The Prefect Variable holding the sweep's cursor for one credentials scope."""
    return "scenario_watch_" + hashlib.sha256(scope.encode()).hexdigest()[:16]


@dataclass
class SweepReport:
    """What one sweep saw and did.

    Attributes:
        waiting: suspended flow runs of this scope.
        jobs_listed: jobs the bulk listing returned.
        jobs_read: jobs read one by one: jobs of new runs, or of every run on a reconcile, that
            the listing did not return at all (normally none); a webhook's hint.
        woken: flow runs resumed (job ended, or deadline passed).
        already_resumed: flow runs another waker resumed first.
        expired: flow runs whose pause had expired (Prefect failed them).
        cancelled: suspended flow runs cancelled by a user whose jobs the watcher asked Scenario
            to cancel (once each).
    """

    waiting: int = 0
    jobs_listed: int = 0
    jobs_read: int = 0
    woken: list[str] = field(default_factory=list)
    already_resumed: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


@dataclass
class Watcher:
    """Wakes the suspended flow runs of one Scenario project when their jobs end.

    Attributes:
        credentials: the Scenario credentials of the project (their scope picks the runs to wake).
        overlap: how far before the cursor (or a run's start, see ``reconcile_every``) each
            sweep's listing starts: Prefect's and Scenario's clocks differ.
        reconcile_every: how often the listing reaches back to the start of the oldest waiting
            run, whatever the cursor says (it does so for a run seen for the first time too).
        max_lookback: how far back a listing reaches for a run's start, at most (never less far
            than the cursor): a run waiting for days would make every reconcile list all the
            project's jobs since then. The jobs of older runs that the listing misses are read one
            by one.

    Example:
        ```python
        import asyncio
        from prefect_scenario import ScenarioCredentials
        from prefect_scenario.watcher import Watcher

        watcher = Watcher(ScenarioCredentials.from_env())
        report = asyncio.run(watcher.sweep())
        print(report.woken)
        ```
    """

    credentials: ScenarioCredentials
    overlap: timedelta = timedelta(seconds=120)
    reconcile_every: timedelta = timedelta(minutes=10)
    max_lookback: timedelta = timedelta(hours=24)
    _seen_runs: set[str] = field(default_factory=set)
    _last_reconcile: datetime | None = None

    @property
    def scope(self) -> str:
        """The credentials scope whose runs this watcher wakes."""
        return self.credentials.cache_scope()

    async def waiting_runs(self) -> list[Waiter]:
        """The suspended flow runs of this scope, with what they wait on."""
        from prefect.client.orchestration import get_client

        flow_filter = _tagged_waiting("PAUSED")
        waiters: list[Waiter] = []
        async with get_client() as client:
            offset = 0
            while True:
                page = await client.read_flow_runs(flow_run_filter=flow_filter, limit=_PAGE, offset=offset)
                for flow_run in page:
                    # Its jobs end after the run started (see Waiter.since); ``created`` is earlier
                    # still, for a run with no start.
                    since = flow_run.start_time or flow_run.created
                    waiter = Waiter.from_labels(str(flow_run.id), flow_run.labels, since=since)
                    if waiter is not None and waiter.scope in (None, self.scope):
                        waiters.append(waiter)
                if len(page) < _PAGE:
                    return waiters
                offset += _PAGE

    async def cancel_jobs_of_cancelled_runs(self) -> list[str]:
        """Ask Scenario to cancel the jobs of suspended runs a user cancelled; their ids.

        A suspended run has no process: Prefect's server turns its Cancelling straight into
        Cancelled, and no ``on_cancellation`` hook runs anywhere. So the watcher runs the hook's
        work for it (:func:`~prefect_scenario.hooks.cancel_remote_jobs`, its outcome in the run's
        own logs: Scenario refuses to cancel custom jobs, and the log then says the job goes on and
        is billed), then takes the ``scenario-waiting`` tag off the run, so it is done once.
        """
        from prefect.client.orchestration import get_client

        from prefect_scenario.hooks import cancel_remote_jobs

        flow_filter = _tagged_waiting("CANCELLED")
        handled: list[str] = []
        async with get_client() as client:
            # One page a sweep: each run handled leaves the filter, the next sweep takes the rest.
            for flow_run in await client.read_flow_runs(flow_run_filter=flow_filter, limit=_PAGE):
                waiter = Waiter.from_labels(str(flow_run.id), flow_run.labels)
                if waiter is not None and waiter.scope not in (None, self.scope):
                    continue
                await cancel_remote_jobs(None, flow_run, flow_run.state)
                await client.update_flow_run(
                    flow_run.id, tags=[tag for tag in flow_run.tags if tag != WAITING_TAG]
                )
                logger.info(
                    "Flow run %s was cancelled while suspended: asked Scenario to cancel its jobs",
                    flow_run.id,
                )
                handled.append(str(flow_run.id))
        return handled

    async def _cursor(self) -> datetime | None:
        from prefect.variables import Variable

        value: Any = await Variable.aget(cursor_variable_name(self.scope), default={})
        return parse_time(value.get("updated_after")) if isinstance(value, dict) else None

    async def _save_cursor(self, cursor: datetime) -> None:
        from prefect.variables import Variable

        value = {"updated_after": cursor.isoformat(), "swept_at": datetime.now(UTC).isoformat()}
        await Variable.aset(cursor_variable_name(self.scope), value, overwrite=True)

    async def sweep(self) -> SweepReport:
        """One pass: find who waits, list the jobs that changed, wake the runs whose jobs ended."""
        report = SweepReport()
        report.cancelled = await self.cancel_jobs_of_cancelled_runs()
        waiters = await self.waiting_runs()
        report.waiting = len(waiters)
        if not waiters:
            self._seen_runs.clear()
            return report
        now = datetime.now(UTC)
        cursor = await self._cursor()
        reconcile = self._last_reconcile is None or now - self._last_reconcile >= self.reconcile_every
        # The runs whose every job this sweep accounts for, whatever the cursor: all of them on a
        # reconcile, else those not seen before. The others' jobs did not change if not listed.
        checked = waiters if reconcile else [w for w in waiters if w.flow_run_id not in self._seen_runs]
        listed: set[str] = set()
        ended: dict[str, Job] = {}
        newest = cursor
        async with self.credentials.get_client() as client:
            since = self._window_start(cursor, checked, now)
            async for job in client.jobs.list(type="custom", updated_after=since, page_size=100):
                report.jobs_listed += 1
                listed.add(job.job_id)
                updated = parse_time(job.updated_at)
                if updated is not None and (newest is None or updated > newest):
                    newest = updated
                if job.status.is_terminal:
                    ended[job.job_id] = job
            # Not listed at all, though the window reaches back to the run's start: the listing
            # does not show this job (another project's, a clock further off than ``overlap``).
            # One GET each, so such a run still wakes; normally there are none.
            for job_id in dict.fromkeys(job_id for waiter in checked for job_id in waiter.job_ids):
                if job_id not in listed:
                    report.jobs_read += 1
                    try:
                        job = await client.jobs.get(job_id)
                    except NotFoundError:
                        # Not this project's job (or deleted): it cannot wake the run, and must not
                        # stop every other run's wake-up. The run's deadline still ends its wait.
                        logger.warning("Scenario job %s is not found in this project: skipped", job_id)
                        continue
                    if job.status.is_terminal:
                        ended[job_id] = job
            if reconcile:
                self._last_reconcile = now
        for waiter in waiters:
            jobs = [ended[job_id] for job_id in waiter.job_ids if job_id in ended]
            if waiter.wakes_on(job.job_id for job in jobs):
                await self._wake(waiter, jobs, report, reason="the job ended")
            elif waiter.overdue(now):
                await self._wake(waiter, jobs, report, reason="its deadline passed")
        self._seen_runs = {waiter.flow_run_id for waiter in waiters} - set(report.woken)
        # Saved only after a full sweep: a sweep cut short starts again from the same place.
        if newest is not None and newest != cursor:
            await self._save_cursor(newest)
        return report

    def _window_start(self, cursor: datetime | None, checked: list[Waiter], now: datetime) -> datetime:
        """``overlap`` before the cursor, and before the start of every run in ``checked`` (but
        not more than ``max_lookback`` ago for those)."""
        bounds: list[datetime] = []
        starts = [waiter.since for waiter in checked if waiter.since is not None]
        if starts:
            bounds.append(max(min(starts) - self.overlap, now - self.max_lookback))
        if cursor is not None:
            bounds.append(cursor - self.overlap)
        if not bounds:
            # Nothing known (no cursor saved yet, runs without a start): a recent window; the
            # checked runs' jobs it misses are read one by one.
            return now - self.reconcile_every
        return min(bounds)

    async def wake_job(self, job_id: str) -> SweepReport:
        """Wake the runs waiting on ``job_id`` if it ended (a webhook's hint: the job is read first)."""
        report = SweepReport()
        async with self.credentials.get_client() as client:
            job = await client.jobs.get(job_id)
        report.jobs_read = 1
        if not job.status.is_terminal:
            return report
        for waiter in await self.waiting_runs():
            if job_id in waiter.job_ids:
                report.waiting += 1
                if waiter.wakes_on([job_id]):
                    await self._wake(waiter, [job], report, reason="the job ended (webhook)")
        return report

    async def _wake(self, waiter: Waiter, jobs: Iterable[Job], report: SweepReport, *, reason: str) -> None:
        from prefect.exceptions import FlowPauseTimeout, NotPausedError
        from prefect.flow_runs import aresume_flow_run

        for job in jobs:
            _emit_wake_event(job, waiter.flow_run_id)
        try:
            await aresume_flow_run(UUID(waiter.flow_run_id))
        except NotPausedError:
            report.already_resumed.append(waiter.flow_run_id)
            return
        except FlowPauseTimeout:
            logger.warning(
                "Flow run %s waited on Scenario job(s) %s past its pause's timeout: Prefect failed it. The "
                "job goes on; a rerun with the same inputs adopts it.",
                waiter.flow_run_id,
                ", ".join(waiter.job_ids),
            )
            report.expired.append(waiter.flow_run_id)
            return
        except RuntimeError as exc:  # the server refused the resume for another reason
            logger.warning("Could not resume flow run %s: %s", waiter.flow_run_id, exc)
            return
        logger.info(
            "Resumed flow run %s: %s (Scenario job(s) %s)",
            waiter.flow_run_id,
            reason,
            ", ".join(waiter.job_ids),
        )
        report.woken.append(waiter.flow_run_id)

    async def run(self, *, interval_seconds: float = 30.0, stop: asyncio.Event | None = None) -> None:
        """Sweep every ``interval_seconds`` until ``stop`` is set; a failed sweep is logged and retried."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                report = await self.sweep()
                if report.woken or report.expired or report.cancelled:
                    logger.info(
                        "Sweep: %d waiting, %d job(s) listed, %d read, %d resumed, %d expired, %d cancelled",
                        report.waiting,
                        report.jobs_listed,
                        report.jobs_read,
                        len(report.woken),
                        len(report.expired),
                        len(report.cancelled),
                    )
            except Exception as exc:  # the next sweep starts from the same cursor
                logger.warning(
                    "Sweep failed (%s: %s); trying again in %g s", type(exc).__name__, exc, interval_seconds
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_seconds)


def _tagged_waiting(state_type: str) -> Any:
    """The filter of the flow runs tagged ``scenario-waiting`` in the state ``state_type``."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    return FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(state_type)])),
        tags=FlowRunFilterTags(all_=[WAITING_TAG]),
    )


def _emit_wake_event(job: Job, flow_run_id: str) -> None:
    from prefect.events import emit_event

    succeeded = job.status == JobStatus.SUCCESS
    payload: dict[str, Any] = {"job_id": job.job_id, "status": job.status.value, "flow_run_id": flow_run_id}
    if not succeeded:
        payload["error"] = job.metadata.error
    try:
        emit_event(
            JOB_COMPLETED if succeeded else JOB_FAILED,
            resource=job_resource(job.job_id, job.model_id),
            # First among the related resources: an automation's resume-flow-run acts on the first.
            related=[
                {"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": "waiter"}
            ],
            payload=payload,
            id=wake_event_id(job.job_id, job.status.value, flow_run_id),
        )
    except Exception as exc:
        logger.warning("Could not emit the wake-up event of %s: %s", job.job_id, exc)


__all__ = ["SweepReport", "Watcher", "cursor_variable_name"]
