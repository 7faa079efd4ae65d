"""The watcher: one process that waits for every suspended flow run's job, and wakes the run.

Flow runs in ``wait="suspend"`` mode record the jobs they wait on and suspend
(:mod:`prefect_scenario.waiting`). One watcher per Scenario project (credentials scope) wakes them:

* **who waits**: Prefect is the registry. Suspended flow runs tagged ``scenario-waiting`` are read
  in pages, and their labels say which jobs they wait on and until when;
* **which jobs ended**: one bulk sweep, ``GET /v1/jobs?type=custom&updatedAfter=<cursor>``, across
  pages (short or empty pages while a token remains are followed), not one GET per job. The
  cursor is the newest ``updatedAt`` seen, kept in a Prefect Variable so a restarted watcher goes
  on where it stopped; the sweep starts ``overlap`` before it, because whether ``updatedAfter`` is
  strict is not documented. A run seen for the first time has its jobs read one by one once: its
  job may have ended before the run finished suspending, out of the sweep's window. Every
  ``reconcile_every`` all awaited jobs are read again, so no cursor mistake can strand a run;
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
        jobs_read: jobs read one by one (runs seen for the first time, reconciles).
        woken: flow runs resumed (job ended, or deadline passed).
        already_resumed: flow runs another waker resumed first.
        expired: flow runs whose pause had expired (Prefect failed them).
    """

    waiting: int = 0
    jobs_listed: int = 0
    jobs_read: int = 0
    woken: list[str] = field(default_factory=list)
    already_resumed: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)


@dataclass
class Watcher:
    """Wakes the suspended flow runs of one Scenario project when their jobs end.

    Attributes:
        credentials: the Scenario credentials of the project (their scope picks the runs to wake).
        overlap: how far before the cursor each sweep starts.
        reconcile_every: how often every awaited job is read one by one.

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
    _seen_runs: set[str] = field(default_factory=set)
    _last_reconcile: datetime | None = None

    @property
    def scope(self) -> str:
        """The credentials scope whose runs this watcher wakes."""
        return self.credentials.cache_scope()

    async def waiting_runs(self) -> list[Waiter]:
        """The suspended flow runs of this scope, with what they wait on."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
            FlowRunFilterTags,
        )
        from prefect.client.schemas.objects import StateType

        flow_filter = FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
            tags=FlowRunFilterTags(all_=[WAITING_TAG]),
        )
        waiters: list[Waiter] = []
        async with get_client() as client:
            offset = 0
            while True:
                page = await client.read_flow_runs(flow_run_filter=flow_filter, limit=_PAGE, offset=offset)
                for flow_run in page:
                    waiter = Waiter.from_labels(str(flow_run.id), flow_run.labels)
                    if waiter is not None and waiter.scope in (None, self.scope):
                        waiters.append(waiter)
                if len(page) < _PAGE:
                    return waiters
                offset += _PAGE

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
        waiters = await self.waiting_runs()
        report.waiting = len(waiters)
        if not waiters:
            self._seen_runs.clear()
            return report
        now = datetime.now(UTC)
        cursor = await self._cursor()
        ended: dict[str, Job] = {}
        newest = cursor
        async with self.credentials.get_client() as client:
            since = (cursor - self.overlap) if cursor is not None else now - self.reconcile_every
            async for job in client.jobs.list(type="custom", updated_after=since, page_size=100):
                report.jobs_listed += 1
                updated = parse_time(job.updated_at)
                if updated is not None and (newest is None or updated > newest):
                    newest = updated
                if job.status.is_terminal:
                    ended[job.job_id] = job
            reconcile = self._last_reconcile is None or now - self._last_reconcile >= self.reconcile_every
            for waiter in waiters:
                if waiter.flow_run_id in self._seen_runs and not reconcile:
                    continue
                for job_id in waiter.job_ids:
                    if job_id not in ended:
                        job = await client.jobs.get(job_id)
                        report.jobs_read += 1
                        if job.status.is_terminal:
                            ended[job_id] = job
            if reconcile:
                self._last_reconcile = now
        for waiter in waiters:
            jobs = [ended[job_id] for job_id in waiter.job_ids if job_id in ended]
            if len(jobs) == len(waiter.job_ids):
                await self._wake(waiter, jobs, report, reason="the job ended")
            elif waiter.overdue(now):
                await self._wake(waiter, jobs, report, reason="its deadline passed")
        self._seen_runs = {waiter.flow_run_id for waiter in waiters} - set(report.woken)
        # Saved only after a full sweep: a sweep cut short starts again from the same place.
        if newest is not None and newest != cursor:
            await self._save_cursor(newest)
        return report

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
                if len(waiter.job_ids) == 1:
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
                if report.woken or report.expired:
                    logger.info(
                        "Sweep: %d waiting, %d job(s) listed, %d read, %d resumed, %d expired",
                        report.waiting,
                        report.jobs_listed,
                        report.jobs_read,
                        len(report.woken),
                        len(report.expired),
                    )
            except Exception as exc:  # the next sweep starts from the same cursor
                logger.warning(
                    "Sweep failed (%s: %s); trying again in %g s", type(exc).__name__, exc, interval_seconds
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_seconds)


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
