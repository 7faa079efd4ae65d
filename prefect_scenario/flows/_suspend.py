"""``wait="suspend"``: after the paid submit, the flow run suspends and its worker is free.

An Aleph job takes minutes. Polling inside the flow run keeps its process (a container on a
Docker, Kubernetes or ECS work pool) alive for all of them, doing nothing. In suspend mode
:meth:`~prefect_scenario.flows._job.JobRunner.run` submits as always, then calls
:func:`await_job_end`, which:

1. reads the job once: ended already, the run goes on to its download as inline mode does;
2. writes the wait onto the flow run (:mod:`prefect_scenario.waiting`): the job id under
   ``scenario.awaiting``, the deadline, the scope, and the journal ``scenario.paid.<slot>``;
3. calls Prefect's ``asuspend_flow_run``: the process exits, and the run waits, Paused, until the
   watcher (:mod:`prefect_scenario.watcher`) or a webhook resumes it. A worker then runs the flow
   again **from the top**: validation, upload and submit come back from their persisted results,
   and the submit is told the journaled job id, so it adopts that job and never POSTs again, even
   where the first attempt's result storage cannot be read.

The pause's own timeout is the wait's deadline plus a grace, a backstop: the watcher wakes a run
at its deadline, so the run itself ends with a :class:`JobWaitTimeoutError` naming its job.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.context import FlowRunContext, TaskRunContext

from prefect_scenario.blocks import ScenarioCredentials
from prefect_scenario.errors import InputValidationError, JobWaitTimeoutError
from prefect_scenario.job_labels import drain_job_labels
from prefect_scenario.manifest import SubmittedJob
from prefect_scenario.models import Job
from prefect_scenario.run_context import run_logger
from prefect_scenario.waiting import (
    WAIT_MODES,
    WAITING_TAG,
    WaitMode,
    WakePolicy,
    journal_label,
    journaled_job,
    next_pause_key,
    waiting_labels,
)

# Past the deadline, the pause itself expires this much later (Prefect then fails the run): the
# watcher's sweep must have had its chance to wake the run first.
WAKE_GRACE = timedelta(minutes=5)


def check_wait_mode(wait: str) -> WaitMode:
    """``wait`` as a mode; refused before anything is uploaded or paid when suspending cannot work.

    Prefect suspends only a flow run of a deployment (a worker must start it again), never a
    subflow or a run inside a task: finding that out after the paid submit would leave the job to
    be waited on inline after all, so it is checked at the flow's door.

    Raises:
        InputValidationError: an unknown mode, or ``suspend`` where Prefect cannot suspend.
    """
    if wait not in WAIT_MODES:
        raise InputValidationError(
            f"wait must be one of {', '.join(repr(mode) for mode in WAIT_MODES)}, not {wait!r}", field="wait"
        )
    if wait == "inline":
        return "inline"
    context = FlowRunContext.get()
    flow_run = context.flow_run if context is not None else None
    why = None
    if flow_run is None:
        why = "this is not a Prefect flow run"
    elif TaskRunContext.get() is not None:
        why = "this flow runs inside a task"
    elif flow_run.deployment_id is None:
        why = "this flow run has no deployment (a worker of its work pool must start it again)"
    elif flow_run.parent_task_run_id is not None:
        why = (
            "this flow run is a subflow (Prefect suspends only top-level runs; a child started with "
            "run_deployment needs as_subflow=False)"
        )
    if why is not None:
        raise InputValidationError(
            f"wait='suspend' cannot work here: {why}. Run it from a deployment (prefect deployment run, "
            "the UI, a schedule or an automation), or pass wait='inline' to wait inside this run. "
            "Nothing was uploaded or spent.",
            field="wait",
        )
    return "suspend"


async def read_current_flow_run() -> Any:
    from prefect.client.orchestration import get_client

    context = FlowRunContext.get()
    assert context is not None
    assert context.flow_run is not None
    async with get_client() as client:
        return await client.read_flow_run(context.flow_run.id)


async def journaled_job_id(slot: str) -> str | None:
    """The job an earlier attempt of this flow run bought for ``slot`` (None: it bought none).

    Raises:
        Exception: whatever reading the flow run raises: unread, the journal cannot prove that no
            job exists, so the caller must not pay.
    """
    flow_run = await read_current_flow_run()
    return journaled_job(flow_run.labels, slot)


def job_deadline(submitted: SubmittedJob, timeout_seconds: float) -> datetime:
    """When waiting on ``submitted`` gives up: ``timeout_seconds`` after its submit."""
    submitted_at = submitted.submitted_at
    if submitted_at.tzinfo is None:
        submitted_at = submitted_at.replace(tzinfo=UTC)
    return submitted_at + timedelta(seconds=timeout_seconds)


async def _record_wait(flow_run: Any, labels: dict[str, str | int | float | bool]) -> None:
    """The wait onto the flow run: labels for the watcher and the journal, the tag to find it by."""
    from prefect.client.orchestration import get_client

    # The job-id labels first (the cancel hook reads them): queued writes must not land after ours.
    await drain_job_labels()
    async with get_client() as client:
        await client.update_flow_run_labels(flow_run.id, labels)
        if WAITING_TAG not in (flow_run.tags or []):
            # Tags are written whole: read (above), merge, write.
            await client.update_flow_run(flow_run.id, tags=[*(flow_run.tags or []), WAITING_TAG])


async def suspend_on(
    job_ids: list[str],
    *,
    deadline: datetime,
    scope: str,
    journal: dict[str, str],
    wake_on: WakePolicy = "all",
) -> None:
    """Write the wait onto this flow run and suspend it: the process exits here.

    Returns only when the server refused the pause (a key that fired already): the caller looks
    at its jobs again.

    Args:
        job_ids: the jobs the run waits on.
        deadline: when the wait gives up (the watcher wakes the run then); the pause itself
            expires :data:`WAKE_GRACE` later.
        scope: the credentials scope of the jobs (a watcher wakes only its own scope's runs).
        journal: ``{slot: job id}`` of the jobs bought, for a resumed attempt that cannot read
            its results ("" clears a slot).
        wake_on: ``all`` (wake once every job ended) or ``any`` (once one ended).
    """
    from prefect.flow_runs import asuspend_flow_run

    flow_run = await read_current_flow_run()
    await _record_wait(flow_run, waiting_labels(job_ids, deadline, scope, journal, wake_on))
    pause_timeout = math.ceil((deadline - datetime.now(UTC) + WAKE_GRACE).total_seconds())
    # No POST is in flight here: the submits have returned. The call exits the process.
    await asuspend_flow_run(
        timeout=max(1, pause_timeout), key=next_pause_key(flow_run.empirical_policy.pause_keys)
    )


def still_running(job: Job, timeout_seconds: float) -> JobWaitTimeoutError:
    """The error of a wait whose deadline passed while ``job`` still runs (it goes on)."""
    return JobWaitTimeoutError(
        f"Scenario job {job.job_id} is still {job.status.value} after timeout_seconds="
        f"{timeout_seconds:g}; the job goes on on Scenario's side: rerun this flow with the same "
        "inputs to pick it up (nothing is bought twice), or fetch it later by its id",
        job_id=job.job_id,
        last_status=job.status.value,
    )


async def await_job_end(
    submitted: SubmittedJob,
    *,
    credentials: ScenarioCredentials,
    timeout_seconds: float,
    slot: str,
) -> Job:
    """The job once it ended, the flow run suspended (its process gone) for as long as it runs.

    Returns only in an attempt that finds the job ended (the first, for a quick job, or a resumed
    one); otherwise Prefect's ``Pause`` unwinds the flow and the process exits. Judging the job
    (failure, outputs) stays with the wait task, as in inline mode.

    Raises:
        JobWaitTimeoutError: the wait's deadline passed and the job still runs; the job goes on,
            and a rerun with the same inputs adopts it.
    """
    logger = run_logger()
    deadline = job_deadline(submitted, timeout_seconds)
    while True:
        async with credentials.get_client() as client:
            job: Job = await client.jobs.get(submitted.job_id)
        if job.status.is_terminal:
            return job
        now = datetime.now(UTC)
        if now >= deadline:
            raise still_running(job, timeout_seconds)
        logger.info(
            "Scenario job %s is %s: this flow run suspends until it ends (at the latest %s), and holds "
            "no worker meanwhile. `prefect-scenario watch` (or a webhook) resumes it.",
            job.job_id,
            job.status.value,
            deadline.isoformat(timespec="seconds"),
        )
        await suspend_on(
            [submitted.job_id],
            deadline=deadline,
            scope=credentials.cache_scope(),
            journal={slot: submitted.job_id},
        )


async def forget_journaled_job(slot: str) -> None:
    """Empty the journal of ``slot``: its job failed, so a retry of the flow run may buy anew.

    As in inline mode, where the wait drops a failed job from the submit's cache. Never raises:
    left in place, the journal only makes a retry report the same failure again.
    """
    from prefect.client.orchestration import get_client

    try:
        flow_run = await read_current_flow_run()
        async with get_client() as client:
            await client.update_flow_run_labels(flow_run.id, {journal_label(slot): ""})
    except Exception as exc:
        run_logger().warning("Could not clear the journal of %s on the flow run: %s", slot, exc)


__all__ = [
    "WAKE_GRACE",
    "await_job_end",
    "check_wait_mode",
    "forget_journaled_job",
    "job_deadline",
    "journaled_job_id",
    "read_current_flow_run",
    "still_running",
    "suspend_on",
]
