"""What the tasks share: in-flight de-duplication and the retry condition of transient failures.

(The run logger is in :mod:`prefect_scenario.run_context`, job-id labels in
:mod:`prefect_scenario.job_labels`.)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prefect import Task
from prefect.client.schemas.objects import State, TaskRun

from prefect_scenario.errors import (
    RateLimitError,
    ScenarioTransportError,
    ServerError,
)

T = TypeVar("T")


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
