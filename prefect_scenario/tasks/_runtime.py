"""What the tasks share: the run logger, flow-run labels that record job ids, the retry condition.

Labels are how a job id outlives the process that submitted it: Prefect runs ``on_cancellation`` and
``on_crashed`` hooks in another process, which can read the flow run (and its labels) back from the
API but nothing that was in memory.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from prefect import Task
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import FlowRunContext
from prefect.exceptions import MissingContextError
from prefect.logging import get_logger, get_run_logger

from prefect_scenario.errors import (
    RateLimitError,
    ScenarioTransportError,
    ServerError,
)

T = TypeVar("T")

JOB_ID_LABEL = "scenario.job_id"
JOB_IDS_LABEL = "scenario.job_ids"
MODEL_ID_LABEL = "scenario.model_id"
# A label value stays short enough to read in the UI; the latest ids win when it would not.
_MAX_JOB_IDS = 50

_module_logger = get_logger("prefect_scenario.tasks")
_labels_lock = threading.Lock()


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The Prefect run logger inside a run, a plain logger outside (``task.fn(...)`` in tests)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return _module_logger


def job_ids_from_labels(labels: Mapping[str, Any] | None) -> list[str]:
    """The Scenario job ids recorded on a flow run, oldest first, without duplicates."""
    if not labels:
        return []
    ids: list[str] = []
    for raw in (str(labels.get(JOB_IDS_LABEL) or ""), str(labels.get(JOB_ID_LABEL) or "")):
        for item in raw.split(","):
            item = item.strip()
            if item and item not in ids:
                ids.append(item)
    return ids


def merged_job_labels(
    existing: Mapping[str, Any] | None, job_id: str, model_id: str | None
) -> dict[str, str | int | float | bool]:
    """The labels to patch onto a flow run so that ``job_id`` is recorded next to earlier ones."""
    ids = [i for i in job_ids_from_labels(existing) if i != job_id] + [job_id]
    update: dict[str, str | int | float | bool] = {
        JOB_ID_LABEL: job_id,
        JOB_IDS_LABEL: ",".join(ids[-_MAX_JOB_IDS:]),
    }
    if model_id:
        update[MODEL_ID_LABEL] = model_id
    return update


def current_flow_run_id() -> str | None:
    """The id of the flow run being executed, if any."""
    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None:
        return str(context.flow_run.id)
    from prefect.context import TaskRunContext

    task_context = TaskRunContext.get()
    if task_context is not None and task_context.task_run.flow_run_id is not None:
        return str(task_context.task_run.flow_run_id)
    return None


def _patch_labels_sync(flow_run_id: str, job_id: str, model_id: str | None) -> None:
    from prefect.client.orchestration import get_client

    # Read-merge-write under one process-wide lock: concurrent submits of a batch flow must not
    # overwrite each other's ids. The PATCH merges keys server-side, so other labels are kept.
    with _labels_lock, get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)  # type: ignore[arg-type]
        client.update_flow_run_labels(flow_run.id, merged_job_labels(flow_run.labels, job_id, model_id))


async def record_job_on_flow_run(job_id: str, model_id: str | None) -> bool:
    """Add a job id to the current flow run's labels; never raises (the job exists either way).

    Returns:
        True when the labels were written.
    """
    flow_run_id = current_flow_run_id()
    if flow_run_id is None:
        return False
    try:
        await asyncio.to_thread(_patch_labels_sync, flow_run_id, job_id, model_id)
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
            flow_run = await client.read_flow_run(flow_run_id)  # type: ignore[arg-type]
    except Exception:
        return []
    return job_ids_from_labels(flow_run.labels)


class InFlight:
    """Identical work running at the same time in this process: the first does it, the others wait.

    Prefect's cache only helps once a result is committed; two identical tasks started together (a
    batch holding the same clip twice) would both miss it and both upload, or both pay. Prefect's
    SERIALIZABLE isolation would serialize them, but its in-memory lock blocks the event loop the
    tasks share. Events are ``threading.Event`` because the tasks may run on different threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[threading.Event, list[Any]]] = {}

    async def once(self, key: str, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Run ``work`` unless identical work (same ``key``) is running; then wait and share its result.

        Returns:
            The result, and True when it came from another caller's run. When that run failed,
            ``work`` runs here instead (a failure is never shared: it may not happen twice).
        """
        while True:
            with self._lock:
                entry = self._entries.get(key)
                first = entry is None
                if entry is None:
                    entry = (threading.Event(), [])
                    self._entries[key] = entry
            done, results = entry
            if first:
                break
            while not done.is_set():  # noqa: ASYNC110 (a threading.Event: see the class docstring)
                await asyncio.sleep(0.1)
            if results:
                return results[0], True
        try:
            result = await work()
            results.append(result)
            return result, False
        finally:
            with self._lock:
                self._entries.pop(key, None)
            done.set()


IN_FLIGHT = InFlight()


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ScenarioTransportError, ServerError, RateLimitError)


async def state_exception(state: State[Any]) -> BaseException | None:
    """The exception a failed task attempt raised (None when there is none)."""
    if isinstance(state.data, BaseException):
        return state.data
    try:
        await state.aresult(raise_on_failure=True)
    except BaseException as exc:
        return exc
    return None


async def retry_transient_only(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Task ``retry_condition_fn``: retry only what another attempt can fix.

    Transport errors, 5xx and 429 that outlived the client's own retries are worth one more go later;
    a 400, a refused key, a missing file or a budget refusal are not.
    """
    return isinstance(await state_exception(state), TRANSIENT_ERRORS)


def format_units(value: float | None) -> str:
    """Creative units as people read them (``12``, ``7.25``)."""
    if value is None:
        return "an unknown number of"
    return f"{value:.2f}".rstrip("0").rstrip(".") if value % 1 else f"{int(value)}"


def human_size(size: int) -> str:
    """Bytes as ``12.3 MB``."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
