"""Where the code runs: the current flow run, and the logger to write to (Prefect's run logger inside a run).

Shared by tasks, flows, the concurrency helpers and the hooks, so each does not carry its own
fallback for code that runs outside a run (``task.fn(...)`` in tests, the CLI before a flow starts).
"""

from __future__ import annotations

import logging

from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.logging import get_logger, get_run_logger

_module_logger = get_logger("prefect_scenario")


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The Prefect run logger inside a run, a plain logger outside (``task.fn(...)`` in tests)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return _module_logger


def current_flow_run_id() -> str | None:
    """The id of the flow run being executed (from a flow or one of its task runs), if any."""
    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None:
        return str(context.flow_run.id)
    task_context = TaskRunContext.get()
    if task_context is not None and task_context.task_run.flow_run_id is not None:
        return str(task_context.task_run.flow_run_id)
    return None


__all__ = ["current_flow_run_id", "run_logger"]
