"""Estimate and submit tasks: the only places that talk about money.

A submit is paid and the API has no idempotency key, so:

* the budget is checked against a dry-run estimate before anything is spent;
* the client never re-sends the POST blindly; an ambiguous outcome is reconciled by listing jobs;
* the task has no retries, and its result is persisted (see :class:`JobRequestPolicy`), so a flow
  retry gets the same job back instead of a new one;
* the job id goes onto the flow run's labels at once, and before paying, the jobs already on the
  labels are checked for one with the same model and inputs (the window between "the API answered"
  and "the result was persisted", should the process die in it).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import task
from prefect.context import FlowRunContext, TaskRunContext

from prefect_scenario.blocks import ScenarioCredentials, resolve_credentials
from prefect_scenario.caching import JobRequestPolicy, current_flow_run_id, job_request_key, normalized_body
from prefect_scenario.errors import BudgetExceededError, ScenarioError
from prefect_scenario.events import emit_job_submitted
from prefect_scenario.manifest import SubmittedJob
from prefect_scenario.models import (
    ALEPH_MODEL_ID,
    VIDEO_LAYERS_MODEL_ID,
    CostEstimate,
    Job,
    JobStatus,
    model_input_body,
)
from prefect_scenario.tasks._runtime import (
    IN_FLIGHT,
    flow_run_job_ids,
    format_units,
    record_job_on_flow_run,
    retry_transient_only,
    run_logger,
)

# A reused job is only worth something while its outputs can be fetched, and the API lists jobs of
# the last 30 days by default; past that, a new job is the honest answer.
JOB_CACHE_EXPIRATION = timedelta(days=30)
# How many jobs recorded on the flow run's labels are checked before paying for a new one.
_LEDGER_DEPTH = 20


def _cheaper_hint(model_id: str, body: dict[str, Any]) -> str:
    if model_id == VIDEO_LAYERS_MODEL_ID:
        return f"ask for fewer layers (maxLayers is {body.get('maxLayers', 6)}) or use a shorter clip"
    if model_id == ALEPH_MODEL_ID:
        return "use a shorter clip (the price follows the clip's length)"
    return "change the inputs"


@task(
    name="estimate_job",
    task_run_name="estimate-{model_id}",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_transient_only,
)
async def estimate_job(
    model_id: str,
    body: dict[str, Any],
    *,
    credentials: ScenarioCredentials,
) -> CostEstimate:
    """Ask what a job would cost (a dry run: nothing runs, nothing is spent).

    Args:
        model_id: the Scenario model id.
        body: the model's inputs (a dict, camelCase as on the wire).
        credentials: Scenario credentials.

    Returns:
        The estimate, in creative units.
    """
    creds = await resolve_credentials(credentials)
    async with creds.get_client() as client:
        estimate: CostEstimate = await client.generate.estimate(model_id, normalized_body(body))
    run_logger().info(
        "Scenario job estimate for %s: %s creative units",
        model_id,
        format_units(estimate.creative_units_cost),
    )
    return estimate


async def _job_already_on_labels(client: Any, model_id: str, body: dict[str, Any]) -> Job | None:
    """A job recorded on this flow run with the same model and inputs that did not fail, if any."""
    wanted = model_input_body(model_id, body)
    for job_id in reversed((await flow_run_job_ids())[-_LEDGER_DEPTH:]):
        try:
            job: Job = await client.jobs.get(job_id)
        except ScenarioError:
            continue
        if job.metadata.input == wanted and job.status not in (JobStatus.FAILURE, JobStatus.CANCELED):
            return job
    return None


def _request_key(model_id: str, request: dict[str, Any], scope: str, reuse_across_runs: bool) -> str:
    run_id = None if reuse_across_runs else current_flow_run_id(TaskRunContext.get())
    return job_request_key(model_id, request, scope, run_id)


def _should_check_labels() -> bool:
    """Only a retried flow run can hold a job of this task that its cache does not know about."""
    task_context = TaskRunContext.get()
    if task_context is not None and task_context.task.refresh_cache:
        return False
    flow_context = FlowRunContext.get()
    return bool(flow_context and flow_context.flow_run and flow_context.flow_run.run_count > 1)


@task(
    name="submit_job",
    task_run_name="submit-{model_id}",
    cache_policy=JobRequestPolicy(),
    cache_expiration=JOB_CACHE_EXPIRATION,
    persist_result=True,
    # Never: an attempt after the POST may have reached the server could buy a second job.
    retries=0,
)
async def submit_job(
    model_id: str,
    body: dict[str, Any],
    *,
    credentials: ScenarioCredentials,
    estimate: CostEstimate | None = None,
    max_creative_units: float | None = None,
    reuse_across_runs: bool = False,
) -> SubmittedJob:
    """Start a paid Scenario job, once.

    Args:
        model_id: the Scenario model id.
        body: the model's inputs (camelCase as on the wire).
        credentials: Scenario credentials.
        estimate: an estimate already taken (see :func:`estimate_job`); taken here when None.
        max_creative_units: refuse, before spending, when the estimate is above this.
        reuse_across_runs: reuse a job from any earlier flow run with the same model, inputs and
            credentials scope (cached 30 days), not only from a retry of this flow run. Use
            ``submit_job.with_options(refresh_cache=True)`` to pay for a new one anyway.

    Returns:
        The submitted job (persisted: a retry of the flow run gets it back without a new submit).

    Raises:
        BudgetExceededError: the estimate is above ``max_creative_units``; nothing was spent.
        SubmissionUncertainError: the submit may have reached the API and no job matches it; do not
            submit again before looking for the job.
    """
    logger = run_logger()
    request = normalized_body(body)
    creds = await resolve_credentials(credentials)
    key = _request_key(model_id, request, creds.cache_scope(), reuse_across_runs)
    submitted, shared = await IN_FLIGHT.once(
        key,
        lambda: _submit(model_id, request, creds, estimate=estimate, max_creative_units=max_creative_units),
    )
    if shared:
        logger.info(
            "Scenario job %s was just submitted by an identical submit of this flow run: reusing it",
            submitted.job_id,
        )
    return submitted


async def _submit(
    model_id: str,
    request: dict[str, Any],
    creds: ScenarioCredentials,
    *,
    estimate: CostEstimate | None,
    max_creative_units: float | None,
) -> SubmittedJob:
    logger = run_logger()
    async with creds.get_client() as client:
        if estimate is None:
            estimate = await client.generate.estimate(model_id, request)
            logger.info(
                "Scenario job estimate for %s: %s creative units",
                model_id,
                format_units(estimate.creative_units_cost),
            )
        cost = estimate.creative_units_cost
        if max_creative_units is not None and cost > max_creative_units:
            raise BudgetExceededError(
                f"Scenario job estimate for {model_id} is {format_units(cost)} creative units, over the "
                f"budget of {format_units(max_creative_units)} (max_creative_units); nothing was submitted "
                f"or spent. Raise max_creative_units to at least {format_units(cost)}, or make the job "
                f"cheaper: {_cheaper_hint(model_id, request)}.",
                estimate=cost,
                budget=max_creative_units,
            )
        existing = await _job_already_on_labels(client, model_id, request) if _should_check_labels() else None
        if existing is not None:
            logger.info(
                "Scenario job %s on this flow run already ran %s with these inputs: reusing it, nothing "
                "new is submitted",
                existing.job_id,
                model_id,
            )
            job, paid, reconciled = existing, (existing.billing.cu_cost if existing.billing else None), True
        else:
            submission = await client.generate.run(model_id, request, reconcile=True)
            job, paid, reconciled = submission.job, submission.creative_units_cost, submission.reconciled
    # From here on the job exists and is paid for: nothing below may raise, or a retry of the flow
    # would not find the persisted result and the cost of the job would be lost from the record.
    await record_job_on_flow_run(job.job_id, model_id)
    submitted = SubmittedJob(
        job_id=job.job_id,
        model_id=model_id,
        inputs=request,
        estimated_creative_units=cost,
        creative_units_cost=paid,
        reconciled=reconciled,
    )
    logger.info(
        "Scenario job %s submitted to %s (%s creative units%s)",
        job.job_id,
        model_id,
        format_units(paid if paid is not None else cost),
        ", found again after an uncertain submit" if reconciled and existing is None else "",
    )
    try:
        emit_job_submitted(submitted)
    except Exception as exc:
        logger.warning("Could not emit scenario.job.submitted for %s: %s", job.job_id, exc)
    return submitted
