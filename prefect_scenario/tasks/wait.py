"""Waiting for a job: every Scenario status mapped to a Prefect outcome, progress shown as it moves.

The client describes, the task judges: ``client.jobs.wait`` returns the terminal job whatever its
status, and :func:`outcome_for` decides what that means for the Prefect task.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import StateType
from prefect.context import TaskRunContext

from prefect_scenario.blocks import ScenarioCredentials, resolve_credentials
from prefect_scenario.caching import cache_run_id, job_request_key
from prefect_scenario.errors import JobCanceledError, JobFailedError, JobWaitTimeoutError
from prefect_scenario.events import emit_job_finished
from prefect_scenario.formatting import format_units
from prefect_scenario.job_labels import record_job_on_flow_run
from prefect_scenario.models import Job, JobStatus
from prefect_scenario.run_context import current_flow_run_id as current_run_id
from prefect_scenario.run_context import run_logger
from prefect_scenario.tasks._runtime import TRANSIENT_ERRORS, retry_transient_only


@dataclass(frozen=True)
class JobOutcome:
    """What a job's status means for the Prefect task waiting on it.

    Attributes:
        state_type: the Prefect state type the job's status corresponds to.
        final: True when the job will not change any more (waiting is over).
        error: the exception the task raises for this job (None while running and on success).
    """

    state_type: StateType
    final: bool
    error: JobFailedError | None = None


# Every JobStatus, on purpose without a default: a status added to the enum must be placed here
# (the exhaustive test fails otherwise), never silently treated as "still running" (an endless wait)
# or as "done" (a success without outputs).
_STATE_TYPES: dict[JobStatus, StateType] = {
    JobStatus.PENDING: StateType.PENDING,
    JobStatus.QUEUED: StateType.PENDING,
    JobStatus.WARMING_UP: StateType.PENDING,
    JobStatus.IN_PROGRESS: StateType.RUNNING,
    JobStatus.FINALIZING: StateType.RUNNING,
    JobStatus.SUCCESS: StateType.COMPLETED,
    JobStatus.FAILURE: StateType.FAILED,
    JobStatus.CANCELED: StateType.CANCELLED,
}


def failure_message(job: Job) -> str:
    """The message of a failed job, with the server's error and hint."""
    error = job.metadata.error or "no error message from the API"
    message = f"Scenario job {job.job_id} failed: {error}"
    if job.metadata.hint:
        message += f" (hint: {job.metadata.hint})"
    return message


def outcome_for(job: Job) -> JobOutcome:
    """The Prefect outcome of a Scenario job in its current status (pure: no I/O).

    ``pending``, ``queued`` and ``warming-up`` are Prefect PENDING, ``in-progress`` and ``finalizing``
    RUNNING (not final); ``success`` is COMPLETED; ``failure`` is FAILED with a
    :class:`JobFailedError` carrying the server's ``error`` and ``hint``; ``canceled`` is CANCELLED
    with a :class:`JobCanceledError`.
    """
    state_type = _STATE_TYPES[job.status]
    error: JobFailedError | None = None
    if job.status is JobStatus.FAILURE:
        error = JobFailedError(
            failure_message(job),
            job_id=job.job_id,
            status=job.status.value,
            error=job.metadata.error,
            hint=job.metadata.hint,
        )
    elif job.status is JobStatus.CANCELED:
        error = JobCanceledError(
            f"Scenario job {job.job_id} was canceled"
            + (f": {job.metadata.error}" if job.metadata.error else ""),
            job_id=job.job_id,
            status=job.status.value,
            error=job.metadata.error,
            hint=job.metadata.hint,
        )
    return JobOutcome(state_type=state_type, final=job.status.is_terminal, error=error)


def progress_artifact_key(job_id: str) -> str:
    """The key of a job's progress artifact: ``scenario-job-<id>``, lowercase letters, digits, dashes.

    ``job_7QxVn…`` has the key ``scenario-job-7qxvn…``: the id's own ``job_`` is not said twice.
    """
    slug = re.sub(r"[^a-z0-9-]+", "-", job_id.lower()).strip("-").removeprefix("job-")
    return f"scenario-job-{slug}"


def _status_line(job: Job) -> str:
    line = f"Scenario job {job.job_id} is {job.status.value}"
    if 0 < job.progress < 1:
        line += f" ({round(job.progress * 100)}%)"
    return line


async def _forget_failed_job(job: Job, credentials: ScenarioCredentials) -> None:
    """Make sure a failed or canceled job is never handed out again by ``submit_job``'s cache.

    The cached record of the submit is found again from the job's own inputs (the cache key is a
    pure function of model, body and scope) and replaced by an expired one.
    """
    from prefect.results import get_result_store

    from prefect_scenario.tasks.submit import submit_job

    model_id = job.model_id
    if not model_id or job.metadata.input is None:
        return
    body = {k: v for k, v in job.metadata.input.items() if k != "modelId"}
    scope = credentials.cache_scope()
    keys = {job_request_key(model_id, body, scope, None)}
    # In a task run, its flow run; called inline by a batch, the flow run itself.
    flow_run_id = cache_run_id(TaskRunContext.get()) or current_run_id()
    if flow_run_id is not None:
        keys.add(job_request_key(model_id, body, scope, flow_run_id))
    store = await get_result_store().aupdate_for_task(submit_job)
    for key in keys:
        try:
            if not await store.aexists(key):
                continue
            record = await store.aread(key)
            if getattr(record.result, "job_id", None) != job.job_id:
                continue
            await store.awrite(obj=record.result, key=key, expiration=datetime.now(UTC))  # type: ignore[arg-type]
            run_logger().info(
                "Scenario job %s will not be reused: a new submit with these inputs starts a new job",
                job.job_id,
            )
        except Exception as exc:
            run_logger().warning("Could not drop the cached submit of %s: %s", job.job_id, exc)


# Waiting again after a transient failure that outlived the client's own retries.
WAIT_RETRY_DELAYS: list[float] = [10, 60]


@task(
    name="wait_for_job",
    task_run_name="wait-{job_id}",
    cache_policy=NO_CACHE,
    # Waiting is free and idempotent: a transient failure that outlived the client's own retries
    # is worth another go.
    retries=len(WAIT_RETRY_DELAYS),
    retry_delay_seconds=WAIT_RETRY_DELAYS,
    retry_condition_fn=retry_transient_only,
)
async def wait_for_job(
    job_id: str,
    *,
    credentials: ScenarioCredentials,
    timeout_seconds: float = 3600,
    forget_failed: bool = True,
    show_progress: bool = True,
) -> Job:
    """Wait until a Scenario job ends; return it on success, raise otherwise.

    Polls adaptively with jitter (in the client), shows the job's progress as a progress artifact
    (key ``scenario-job-<id>``) and logs each status change.

    Args:
        job_id: the Scenario job id.
        credentials: Scenario credentials.
        timeout_seconds: how long to wait. This deadline is the wait's, not the job's.
        forget_failed: when the job failed or was canceled, drop it from ``submit_job``'s cache so a
            retry or a new run submits a new job instead of finding this one again.
        show_progress: keep the job's progress artifact. A batch turns it off: its own progress
            artifact and table already show every clip, and a thousand per-job artifacts (with
            their updates) were a fifth of the Prefect server's load in the benchmarks.

    Returns:
        The successful job (outputs in ``job.metadata.asset_ids``).

    Raises:
        JobFailedError: the job failed; ``error`` and ``hint`` are the server's.
        JobCanceledError: the job was canceled.
        JobWaitTimeoutError: the deadline passed; the job goes on (and is billed): wait again, or
            fetch its outputs later by its id.

    Example:
        ```python
        job = await wait_for_job(submitted.job_id, credentials=credentials, timeout_seconds=1800)
        ```
    """
    logger = run_logger()
    creds = await resolve_credentials(credentials)
    artifact_id = (
        await acreate_progress_artifact(
            progress=0.0,
            key=progress_artifact_key(job_id),
            description=f"Progress of Scenario job {job_id}",
        )
        if show_progress
        else None
    )
    seen: dict[str, Any] = {"status": None, "progress": 0.0, "labelled": False}

    async def on_update(job: Job) -> None:
        if not seen["labelled"]:
            # A job reused from the cache in a new flow run was never labelled on this one.
            seen["labelled"] = await record_job_on_flow_run(job.job_id, job.model_id)
        if job.status != seen["status"]:
            seen["status"] = job.status
            if not job.status.is_terminal:
                # The end gets its own line below (success, or the failure with its reason).
                logger.info(_status_line(job))
        percent = 100.0 if job.status is JobStatus.SUCCESS else max(0.0, min(job.progress, 1.0)) * 100.0
        if artifact_id is not None and percent != seen["progress"]:
            seen["progress"] = percent
            try:
                await aupdate_progress_artifact(artifact_id=artifact_id, progress=percent)
            except Exception as exc:
                logger.debug("progress artifact not updated: %s", exc)

    async with creds.get_client() as client:
        try:
            job: Job = await client.jobs.wait(job_id, timeout_seconds=timeout_seconds, on_update=on_update)
        except JobWaitTimeoutError as exc:
            logger.warning(
                "Stopped waiting for Scenario job %s after %s s (last status %s). The job goes on and "
                "will still be billed: wait again with wait_for_job, or fetch its outputs later by its id.",
                job_id,
                format_units(timeout_seconds),
                exc.last_status,
            )
            raise
    await on_update(job)
    outcome = outcome_for(job)
    try:
        emit_job_finished(job)
    except Exception as exc:
        logger.warning("Could not emit the end event of %s: %s", job_id, exc)
    if outcome.error is not None:
        logger.error(str(outcome.error))
        if forget_failed:
            await _forget_failed_job(job, creds)
        raise outcome.error
    if not outcome.final:
        raise JobWaitTimeoutError(
            f"the wait for Scenario job {job_id} returned while it is still {job.status.value}",
            job_id=job_id,
            last_status=job.status.value,
        )
    cost = job.billing.cu_cost if job.billing else None
    logger.info(
        "Scenario job %s succeeded with %d output(s)%s",
        job_id,
        len(job.metadata.asset_ids),
        f" ({format_units(cost)} creative units)" if cost is not None else "",
    )
    return job


async def wait_inline(job_id: str, *, credentials: ScenarioCredentials, timeout_seconds: float = 3600) -> Job:
    """``wait_for_job``'s work inside the calling flow run, without a task run of its own.

    For batches: a clip's wait was a quarter of its task runs, each three state events for the
    Prefect server to record (a 1,000-clip batch spent more CPU in the server than in the flow),
    while the batch's log, progress bar and table already show every job. The same outcomes,
    logs, events and retries (a transient failure is retried after ``WAIT_RETRY_DELAYS``); no
    per-job progress artifact.
    """
    delays = list(WAIT_RETRY_DELAYS)
    while True:
        try:
            job: Job = await wait_for_job.fn(
                job_id, credentials=credentials, timeout_seconds=timeout_seconds, show_progress=False
            )
            return job
        except TRANSIENT_ERRORS as exc:
            if not delays:
                raise
            delay = delays.pop(0)
            run_logger().warning(
                "Could not read Scenario job %s (%s); trying again in %g s", job_id, exc, delay
            )
            await asyncio.sleep(delay)
