"""Job ids on flow-run labels: how a Scenario job id outlives the process that submitted it.

Prefect runs ``on_cancellation`` and ``on_crashed`` hooks in another process, which can read the
flow run (and its labels) back from the API but nothing that was in memory. Every submitted job's
id goes onto its flow run's labels (``scenario.job_ids``, 50 ids a label), written in group commits
by one writer per (event loop, flow run); a batch defers the writes and drains them at its end.
The submission ledger (:mod:`prefect_scenario.ledger`) is what prevents paying twice; labels are
what the UI, the cancel hook and ``prefect flow-run ls`` show.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar
from uuid import UUID

from prefect_scenario.run_context import current_flow_run_id, run_logger

JOB_ID_LABEL = "scenario.job_id"
JOB_IDS_LABEL = "scenario.job_ids"
MODEL_ID_LABEL = "scenario.model_id"
# A label value stays short enough to read in the UI: ids go 50 to a label, the first 50 under
# ``scenario.job_ids``, the next under ``scenario.job_ids.2`` and so on, so a cancel hook sees every
# job of a 1,000-clip batch.
_IDS_PER_LABEL = 50
# A batch submits a job every few tenths of a second as slots free: a deferred write waits this long
# for the ids behind it, so a batch of N jobs costs about (its duration / this) PATCHes, not N.
DEFERRED_LINGER_SECONDS = 1.0
_KNOWN_LABELS_KEPT = 256  # flow runs whose labels a process remembers (the most recently written)


def job_ids_label_key(chunk: int) -> str:
    """The label holding the ``chunk``-th (0-based) group of job ids."""
    return JOB_IDS_LABEL if chunk == 0 else f"{JOB_IDS_LABEL}.{chunk + 1}"


def job_ids_from_labels(labels: Mapping[str, Any] | None) -> list[str]:
    """The Scenario job ids recorded on a flow run, oldest first, without duplicates."""
    if not labels:
        return []
    raws: list[str] = []
    chunk = 0
    while job_ids_label_key(chunk) in labels:
        raws.append(str(labels.get(job_ids_label_key(chunk)) or ""))
        chunk += 1
    raws.append(str(labels.get(JOB_ID_LABEL) or ""))
    ids: list[str] = []
    seen: set[str] = set()
    for raw in raws:
        for item in raw.split(","):
            item = item.strip()
            if item and item not in seen:
                seen.add(item)
                ids.append(item)
    return ids


def merged_job_labels(
    existing: Mapping[str, Any] | None, job_ids: Sequence[str], model_id: str | None
) -> dict[str, str | int | float | bool]:
    """The labels to patch onto a flow run so that ``job_ids`` are recorded after earlier ones.

    Only the id labels whose value changes are returned (Prefect merges a PATCH into the labels).
    """
    existing = existing or {}
    ids = job_ids_from_labels(existing)
    known = set(ids)
    ids += [job_id for job_id in dict.fromkeys(job_ids) if job_id not in known]
    update: dict[str, str | int | float | bool] = {}
    for chunk, start in enumerate(range(0, len(ids), _IDS_PER_LABEL)):
        key, value = job_ids_label_key(chunk), ",".join(ids[start : start + _IDS_PER_LABEL])
        if existing.get(key) != value:
            update[key] = value
    if job_ids:
        update[JOB_ID_LABEL] = job_ids[-1]
    if model_id:
        update[MODEL_ID_LABEL] = model_id
    return update


class _LabelWriter:
    """Group commit of job ids onto one flow run's labels, for the tasks of one event loop.

    A batch submits many jobs at once. Each id must be on the labels before its task goes on (a
    cancel hook in another process reads them back), but a read-merge-PATCH per id, serialized,
    made every submit wait for all the others. Here one write is in flight at a time; ids that
    arrive meanwhile go out together in the next one, through the run's own async client. A
    deferred write (a batch's) lingers a moment first, to gather the ids submitted just after it.

    The flow run is read once: this process is the only writer of a running flow run's job-id
    labels, so the labels it wrote are what the server holds (other labels are merged by the PATCH
    and not needed here). A failed write forgets them, and the next write reads again.
    """

    # Serializes read-merge-PATCH across event loops (tasks submitted to a thread pool run on
    # loops of their own). Taken without blocking: a waiting writer must not hold a thread.
    _process_lock = threading.Lock()
    # The job-id labels of each flow run as this process last wrote them, under the lock above.
    _known_labels: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, flow_run_id: str) -> None:
        self.flow_run_id = flow_run_id
        self.written: set[str] = set()
        self._queued: dict[str, tuple[str | None, asyncio.Future[None]]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self.failed: list[str] = []  # ids whose write failed, until drained

    async def record(self, job_id: str, model_id: str | None, *, wait: bool = True) -> None:
        if job_id in self.written:
            return
        queued = self._queued.get(job_id)
        if queued is None:
            queued = (model_id, asyncio.get_running_loop().create_future())
            self._queued[job_id] = queued
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(linger=not wait))
        if wait:
            await asyncio.shield(queued[1])

    async def drain(self) -> list[str]:
        """Wait until every queued id was written (or failed); returns the ids that failed."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
        failed, self.failed = self.failed, []
        return failed

    async def _flush(self, *, linger: bool) -> None:
        if linger:
            await asyncio.sleep(DEFERRED_LINGER_SECONDS)
        while self._queued:
            batch, self._queued = self._queued, {}
            try:
                await self._write(list(batch), next((m for m, _ in reversed(batch.values()) if m), None))
            except Exception as exc:
                self.failed.extend(batch)
                for _, future in batch.values():
                    if not future.done():
                        future.set_exception(exc)
                        future.exception()  # marked retrieved: a caller that gave up must not warn
                continue
            self.written.update(batch)
            for _, future in batch.values():
                if not future.done():
                    future.set_result(None)

    async def _write(self, job_ids: list[str], model_id: str | None) -> None:
        from prefect.client.orchestration import get_client

        while not self._process_lock.acquire(blocking=False):  # noqa: ASYNC110 (a thread lock)
            await asyncio.sleep(0.02)
        try:
            # Inside a run this is the run's client: no new connection, TLS context or CSRF token.
            async with get_client() as client:
                known = self._known_labels.pop(self.flow_run_id, None)
                if known is None:
                    known = dict((await client.read_flow_run(UUID(self.flow_run_id))).labels or {})
                update = merged_job_labels(known, job_ids, model_id)
                await client.update_flow_run_labels(UUID(self.flow_run_id), update)
                self._known_labels[self.flow_run_id] = {**known, **update}
                while len(self._known_labels) > _KNOWN_LABELS_KEPT:  # a long-lived `serve` process
                    del self._known_labels[next(iter(self._known_labels))]
        finally:
            self._process_lock.release()


# One writer per (event loop, flow run); forgotten with the loop.
_label_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _LabelWriter]] = (
    weakref.WeakKeyDictionary()
)


def _label_writer(flow_run_id: str) -> _LabelWriter:
    writers = _label_writers.setdefault(asyncio.get_running_loop(), {})
    writer = writers.get(flow_run_id)
    if writer is None:
        writer = writers[flow_run_id] = _LabelWriter(flow_run_id)
    return writer


# Set by a batch: label writes are queued and the task goes on; the batch drains them at its end.
_deferred_labels: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "prefect_scenario_deferred_labels", default=False
)


@contextlib.contextmanager
def deferred_job_labels() -> Iterator[None]:
    """Within this block, ``record_job_on_flow_run`` queues the write and returns at once.

    For a batch: waiting for each label write (seconds on a busy Prefect server) held the job's
    concurrency slot, and it bought no safety, since the job exists from the moment the API
    answered either way. Tasks started inside the block inherit it; call
    :func:`drain_job_labels` before the flow run ends.
    """
    token = _deferred_labels.set(True)
    try:
        yield
    finally:
        _deferred_labels.reset(token)


async def drain_job_labels() -> None:
    """Wait until the job ids queued for the current flow run are on its labels; log any failure."""
    flow_run_id = current_flow_run_id()
    if flow_run_id is None:
        return
    failed = await _label_writer(flow_run_id).drain()
    if failed:
        run_logger().warning(
            "Could not record %d Scenario job(s) on the flow run's labels (%s); cancel hooks will not "
            "see them",
            len(failed),
            ", ".join(failed[:10]) + (", ..." if len(failed) > 10 else ""),
        )


async def record_job_on_flow_run(job_id: str, model_id: str | None) -> bool:
    """Add a job id to the current flow run's labels; never raises (the job exists either way).

    Returns once the id is on the labels (at once if this process already wrote it there), or,
    inside :func:`deferred_job_labels`, once the write is queued.

    Returns:
        True when the labels hold the id (or it is queued for them).
    """
    flow_run_id = current_flow_run_id()
    if flow_run_id is None:
        return False
    try:
        await _label_writer(flow_run_id).record(job_id, model_id, wait=not _deferred_labels.get())
        return True
    except Exception as exc:
        run_logger().warning(
            "Could not record Scenario job %s on the flow run's labels (%s: %s); cancel hooks will "
            "not see it",
            job_id,
            type(exc).__name__,
            exc,
        )
        return False


async def flow_run_job_ids() -> list[str]:
    """The job ids already recorded on the current flow run's labels (empty outside a flow run)."""
    flow_run_id = current_flow_run_id()
    if flow_run_id is None:
        return []
    from prefect.client.orchestration import get_client

    try:
        async with get_client() as client:
            flow_run = await client.read_flow_run(UUID(flow_run_id))
    except Exception:
        return []
    return job_ids_from_labels(flow_run.labels)


__all__ = [
    "JOB_IDS_LABEL",
    "JOB_ID_LABEL",
    "MODEL_ID_LABEL",
    "deferred_job_labels",
    "drain_job_labels",
    "flow_run_job_ids",
    "job_ids_from_labels",
    "job_ids_label_key",
    "merged_job_labels",
    "record_job_on_flow_run",
]
