"""``/jobs``: read, list, cancel and wait for Scenario jobs."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime

import httpx

from prefect_scenario.errors import JobWaitTimeoutError, NotFoundError
from prefect_scenario.models import Job, JobEnvelope, JobPage, JobStatus

from ._http import HttpCore, parse, utc_iso
from ._paging import every_page_item
from .policies import PollPolicy

logger = logging.getLogger("prefect_scenario.client")

OnJobUpdate = Callable[[Job], Awaitable[None] | None]

# A job can be invisible to GET for a moment right after the submit answered (read-after-write,
# pain point 7 of peers.md): that many 404s are taken as "not there yet" before one is believed.
_NOT_FOUND_GRACE = 3


def _timestamp(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return utc_iso(value)


class JobsAPI:
    """Scenario jobs: ``client.jobs``."""

    def __init__(self, http: HttpCore, polling: PollPolicy) -> None:
        self._http = http
        self._polling = polling

    async def get(self, job_id: str) -> Job:
        """The job ``job_id`` as it is now."""
        response = await self._http.send_api("GET", "jobs", job_id)
        return parse(JobEnvelope, response).job

    async def list(
        self,
        *,
        status: JobStatus | str | None = None,
        type: str | None = None,  # the API's own parameter name
        types: Iterable[str] | None = None,
        created_after: datetime | str | None = None,
        updated_after: datetime | str | None = None,
        page_size: int = 50,
    ) -> AsyncIterator[Job]:
        """Every job matching the filters, across all pages.

        Pages may be short, even empty, while a pagination token remains; the listing goes on
        until the token is absent. ``created_after`` is only accepted by the API without the
        other filters, ``updated_after`` only with one of them.

        Raises:
            ScenarioAPIError: a page failed after retries, or the server repeated a token.
        """
        if not 1 <= page_size <= 100:
            raise ValueError("page_size must be within 1..100")
        params: dict[str, str | int | None] = {
            "pageSize": page_size,
            "status": status.value if isinstance(status, JobStatus) else status,
            "type": type,
            "types": ",".join(types) if types is not None else None,
            "createdAfter": _timestamp(created_after),
            "updatedAfter": _timestamp(updated_after),
        }

        async def fetch(token: str | None) -> httpx.Response:
            return await self._http.send_api("GET", "jobs", params={**params, "paginationToken": token})

        def read(response: httpx.Response) -> tuple[list[Job], str | None]:
            page = parse(JobPage, response)
            return page.jobs, page.next_pagination_token

        async for job in every_page_item(fetch, read, "GET /jobs"):
            yield job

    async def cancel(self, job_id: str) -> Job:
        """Asks the API to cancel the job.

        Custom-model jobs (both video models) cannot be canceled: the API answers 400, raised as
        :class:`~prefect_scenario.errors.BadRequestError` for the caller to judge.
        """
        response = await self._http.send_api("POST", "jobs", job_id, "action", json={"action": "cancel"})
        return parse(JobEnvelope, response).job

    async def wait(
        self,
        job_id: str,
        *,
        timeout_seconds: float = 1800,
        on_update: OnJobUpdate | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> Job:
        """Polls the job until it is terminal and returns it, whatever its status.

        The client describes, the caller judges: a failed or canceled job is returned, not
        raised. Poll intervals come from the client's :class:`PollPolicy`; each poll goes through
        the retry policy, and a 404 just after the submit is retried a few times.

        Args:
            job_id: the job to wait for.
            timeout_seconds: deadline of the wait (not of the job).
            on_update: called with the job on every poll that shows a new status or progress
                (may be a coroutine function).
            clock: monotonic clock (a simulated one in benchmarks and tests).
            sleep: sleep matching ``clock``.

        Raises:
            JobWaitTimeoutError: the deadline passed; the job goes on on the server.
        """
        started = clock()
        deadline = started + timeout_seconds
        last_seen: tuple[JobStatus, float] | None = None
        misses = 0
        while True:
            try:
                job = await self.get(job_id)
            except NotFoundError:
                misses += 1
                if last_seen is not None or misses > _NOT_FOUND_GRACE or clock() >= deadline:
                    raise
                await sleep(min(self._polling.min_interval * 2 ** (misses - 1), max(deadline - clock(), 0)))
                continue
            seen = (job.status, job.progress)
            if seen != last_seen:
                last_seen = seen
                logger.debug("Scenario job %s is %s (%.0f %%)", job_id, job.status.value, 100 * job.progress)
                if on_update is not None:
                    outcome = on_update(job)
                    if inspect.isawaitable(outcome):
                        await outcome
            if job.status.is_terminal:
                return job
            now = clock()
            if now >= deadline:
                raise JobWaitTimeoutError(
                    f"Scenario job {job_id} is still {job.status.value} ({100 * job.progress:.0f} %) after "
                    f"waiting {timeout_seconds:g} s; the job goes on on the server (custom jobs cannot be "
                    "canceled): wait for it again by its id rather than submitting again",
                    job_id=job_id,
                    last_status=job.status.value,
                )
            delay = self._polling.next_delay(now - started, job, self._http.rng)
            # A last poll exactly at the deadline, so a job ending just before it is still seen.
            await sleep(min(delay, deadline - now))
