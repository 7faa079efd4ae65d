"""Fan-out: a batch spread over a work pool's workers, its clips in groups, each group a flow run.

With ``clips_per_flow_run`` set, a batch flow run of a deployment prepares every clip itself
(fetch, check, fit, upload: free), prices them and plans the budget, exactly as the one-machine
batch does, and then, instead of paying for the jobs in its own process, starts a **child flow run
of its own deployment** per group of clips, with ``run_deployment``. Any worker of the pool picks a
child up. What keeps every guarantee of the one-machine batch:

* **budget:** planned and reserved before any child starts: a child gets the asset ids of its
  clips and, as its own budget, the sum of their estimates. Estimates of the same bodies do not
  change, so no child can spend past its share, and no two children share one;
* **ceiling:** every child's clips take slots of the same Prefect global concurrency limit, on the
  server every worker talks to, so the team's parallel-job ceiling holds across all workers;
* **nothing bought twice:** a child that crashed (its worker died: Prefect's heartbeats and the
  zombie automation mark it Crashed) is started again under a new idempotency key; its jobs are
  adopted through the submit's cache and the submission ledger, which live in the result storage
  the workers share (an S3 bucket for several machines);
* **one record:** the parent's table and :class:`~prefect_scenario.flows.result.BatchResult` gather
  every child's clip results, read from the children's persisted results.

Children are linked to the parent in the UI (subflows) and tagged ``scenario-batch-<parent>``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect.context import FlowRunContext

from prefect_scenario.errors import InputValidationError
from prefect_scenario.run_context import run_logger

# A crashed child is started again this many times at most (each run adopts the jobs bought).
CHILD_ATTEMPTS = 3
# How often the parent reads its children's states: one query for all of them.
CHILD_POLL_SECONDS = 2.0


def fan_out_deployment(clips_per_flow_run: int | None) -> UUID | None:
    """The deployment the children run (this run's own); None when the batch runs in one flow run.

    Raises:
        InputValidationError: a group size below 1, or a flow run without a deployment (a child
            needs a work pool's worker to run it). Checked before anything is uploaded.
    """
    if clips_per_flow_run is None:
        return None
    if clips_per_flow_run < 1:
        raise InputValidationError(
            f"clips_per_flow_run must be 1 or more, not {clips_per_flow_run}: leave it empty to run every "
            "clip in this flow run",
            field="clips_per_flow_run",
        )
    context = FlowRunContext.get()
    flow_run = context.flow_run if context is not None else None
    if flow_run is None or flow_run.deployment_id is None:
        raise InputValidationError(
            "clips_per_flow_run spreads the batch over the workers of this flow run's deployment, and this "
            "run has no deployment: run it from a deployment (the UI, prefect deployment run, a schedule), "
            "or leave clips_per_flow_run empty. Nothing was uploaded or spent.",
            field="clips_per_flow_run",
        )
    return flow_run.deployment_id


@dataclass
class ChildOutcome:
    """How a child flow run ended, after its restarts.

    Attributes:
        flow_run_id: the last attempt's flow run.
        state_type: its final state type (``COMPLETED``, ``FAILED``, ``CRASHED``, ``CANCELLED``).
        message: its final state's message.
        attempts: how many flow runs were started for the group.
        result: the child's persisted result (a ``BatchResult``), None when it cannot be read.
    """

    flow_run_id: str
    state_type: str
    message: str | None
    attempts: int
    result: Any = None


@dataclass
class ChildRuns:
    """Starts the children of one batch and waits for all of them with one read per poll.

    Attributes:
        deployment_id: the deployment the children run.
        parent_id: the batch's flow run id (part of every idempotency key: a retry of the parent
            finds its children again instead of starting new ones).
        base_parameters: the parameters every child shares (the parent's, without the clip list).
    """

    deployment_id: UUID
    parent_id: str
    base_parameters: dict[str, Any]
    poll_seconds: float = CHILD_POLL_SECONDS
    _waiting: dict[UUID, asyncio.Future[Any]] = field(default_factory=dict)
    _poller: asyncio.Task[None] | None = None

    @property
    def tag(self) -> str:
        """The tag every child of this batch carries."""
        return f"scenario-batch-{self.parent_id[:8]}"

    async def run(self, group: int, parameters: dict[str, Any]) -> ChildOutcome:
        """Run one group as a child flow run to its end; a crashed child is started again."""
        from prefect.deployments.flow_runs import arun_deployment

        logger = run_logger()
        attempt = 0
        while True:
            attempt += 1
            started = await arun_deployment(
                self.deployment_id,
                parameters={**self.base_parameters, **parameters},
                timeout=0,
                tags=[self.tag],
                idempotency_key=f"{self.parent_id}:group-{group}:attempt-{attempt}",
                flow_run_name=_child_name(self.parent_id, group, attempt),
            )
            final = await self._final(started.id)
            state = final.state
            if state is not None and state.is_crashed() and attempt < CHILD_ATTEMPTS:
                logger.warning(
                    "Group %d: flow run %s crashed (%s); starting it again on another worker (attempt %d of "
                    "%d): its jobs are adopted, none is bought again",
                    group,
                    final.id,
                    state.message,
                    attempt + 1,
                    CHILD_ATTEMPTS,
                )
                continue
            return await _outcome(final, attempt)

    async def _final(self, flow_run_id: UUID) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[flow_run_id] = future
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        return await future

    async def _poll(self) -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        while self._waiting:
            await asyncio.sleep(self.poll_seconds)
            ids = list(self._waiting)
            try:
                async with get_client() as client:
                    runs = await client.read_flow_runs(
                        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids)
                    )
            except Exception as exc:  # the next poll asks again
                run_logger().warning("Could not read the batch's child flow runs: %s", exc)
                continue
            for run in runs:
                if run.state is not None and run.state.is_final():
                    future = self._waiting.pop(run.id, None)
                    if future is not None and not future.done():
                        future.set_result(run)


def _child_name(parent_id: str, group: int, attempt: int) -> str:
    return f"{parent_id[:8]}-group-{group}" + (f"-retry-{attempt - 1}" if attempt > 1 else "")


async def _outcome(flow_run: Any, attempts: int) -> ChildOutcome:
    state = flow_run.state
    result = None
    try:
        result = await state.aresult(raise_on_failure=False)
    except Exception as exc:
        run_logger().warning(
            "The result of child flow run %s cannot be read (%s): give every worker the same result "
            "storage (PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK)",
            flow_run.id,
            exc,
        )
    if isinstance(result, BaseException):
        result = None
    return ChildOutcome(
        flow_run_id=str(flow_run.id),
        state_type=state.type.value,
        message=state.message,
        attempts=attempts,
        result=result,
    )


def groups_of(items: Sequence[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive groups of ``size`` (the last one shorter)."""
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


__all__ = ["CHILD_ATTEMPTS", "ChildOutcome", "ChildRuns", "fan_out_deployment", "groups_of"]
