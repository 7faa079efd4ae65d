"""How a custom job moves: derived from the emulator clock and from its fake model's thread.

A custom job is ``queued`` for a moment, then ``in-progress`` with ``progress = elapsed /
job_seconds`` (kept below 1), then ``success`` or ``failure`` once BOTH its time is up AND its
fake model has finished. Each transition is appended to the history once, dated when it happened
on the emulator clock (not when someone looked), so a poll that comes late still sees the true
dates, and advancing the clock finishes a job without sleeping through it.
"""

from __future__ import annotations

from prefect_scenario.emulator.service.records import JobRecord

# Progress stays below 1 until the job has really finished, as the API's does.
MAX_RUNNING_PROGRESS = 0.99


def queue_seconds_for(job_seconds: float, queue_seconds: float) -> float:
    """How long a new job stays queued: the configured moment, at most a quarter of the job."""
    return min(queue_seconds, job_seconds / 4)


def advance(job: JobRecord, now: float) -> bool:
    """Append every transition of ``job`` that has happened by ``now``.

    Only custom jobs move here; upload jobs are moved by their validation thread.

    Returns:
        True when the history changed.
    """
    if job.job_type != "custom" or job.is_terminal:
        return False
    changed = False
    started_at = job.created_at + job.queue_seconds
    if now >= started_at and not job.has_been("in-progress"):
        job.history.append(("in-progress", started_at))
        changed = True
    deadline = job.created_at + job.job_seconds
    if job.work_done_at is not None and job.result is not None and now >= deadline:
        ended_at = max(deadline, job.work_done_at, started_at)
        if not job.has_been("in-progress"):
            job.history.append(("in-progress", started_at))
        job.history.append(("failure" if job.result.error else "success", ended_at))
        changed = True
    return changed


def progress(job: JobRecord, now: float) -> float:
    """The job's progress at ``now``: 0 while waiting, rising while running, 1 on success."""
    status = job.status
    if status == "success":
        return 1.0
    if status in ("pending", "queued"):
        return 0.0
    if job.job_type != "custom":
        # Upload jobs have no duration to measure against: halfway while validating.
        return 0.5
    moment = job.updated_at if job.is_terminal else now
    if job.job_seconds <= 0:
        return MAX_RUNNING_PROGRESS
    return round(min(MAX_RUNNING_PROGRESS, max(0.0, (moment - job.created_at) / job.job_seconds)), 4)
