"""Flow-run state hooks: ask Scenario to cancel the jobs of a cancelled or crashed flow run.

Use on a flow::

    @flow(on_cancellation=[cancel_remote_jobs], on_crashed=[cancel_remote_jobs])

Prefect may run these hooks in another process than the flow (a worker's hook runner), so nothing
from the flow's memory is available: the job ids come from the flow run's labels (written by
``submit_job`` as soon as a job exists), and the credentials from the flow run's ``credentials``
parameter when it names a saved block, else from the environment.

Scenario refuses to cancel custom-model jobs (400), which covers both video models: the hook then
says plainly that the job goes on, will be billed, and how to fetch its outputs later.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect_scenario.blocks import ScenarioCredentials, resolve_credentials
from prefect_scenario.errors import BadRequestError, ScenarioError
from prefect_scenario.job_labels import job_ids_from_labels


def _logger(flow: Any, flow_run: Any) -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        from prefect.logging.loggers import flow_run_logger

        return flow_run_logger(flow_run, flow)
    except Exception:
        return logging.getLogger("prefect_scenario.hooks")


async def _fresh_labels(flow_run: Any) -> dict[str, Any]:
    """The flow run's labels as the API has them now (the object a hook gets may predate the submit)."""
    labels = dict(getattr(flow_run, "labels", None) or {})
    try:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            current = await client.read_flow_run(flow_run.id)
        labels.update(current.labels or {})
    except Exception:
        pass
    return labels


async def _credentials_for(flow_run: Any) -> ScenarioCredentials:
    parameter = (getattr(flow_run, "parameters", None) or {}).get("credentials")
    return await resolve_credentials(parameter or None)


async def cancel_remote_jobs(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_cancellation`` / ``on_crashed`` hook: cancel the flow run's Scenario jobs. Never raises.

    Args:
        flow: the flow (unused beyond logging).
        flow_run: the flow run; its labels list the Scenario job ids.
        state: the state that triggered the hook.
    """
    logger = _logger(flow, flow_run)
    try:
        job_ids = job_ids_from_labels(await _fresh_labels(flow_run))
        if not job_ids:
            logger.info("No Scenario job recorded on this flow run: nothing to cancel")
            return
        try:
            credentials = await _credentials_for(flow_run)
        except Exception as exc:
            logger.error(
                "Cannot cancel Scenario job(s) %s: no credentials (%s). They go on and will be billed.",
                ", ".join(job_ids),
                exc,
            )
            return
        async with credentials.get_client() as client:
            for job_id in job_ids:
                await _cancel_one(client, job_id, logger)
    except Exception as exc:  # a hook that raises hides the state that called it
        logger.error("Cancelling the Scenario jobs of this flow run failed: %s: %s", type(exc).__name__, exc)


async def _cancel_one(client: Any, job_id: str, logger: Any) -> None:
    try:
        job = await client.jobs.get(job_id)
    except ScenarioError as exc:
        logger.warning("Could not read Scenario job %s before cancelling it: %s", job_id, exc)
        job = None
    if job is not None and job.status.is_terminal:
        logger.info("Scenario job %s already ended (%s): nothing to cancel", job_id, job.status.value)
        return
    try:
        await client.jobs.cancel(job_id)
    except BadRequestError as exc:
        logger.warning(
            "Scenario refused to cancel job %s (%s). The job continues on Scenario's side and will "
            "still be billed; its outputs will stay in the Scenario project, so nothing is lost: fetch "
            "them later by job id (wait_for_job + download_outputs, or the prefect-scenario CLI).",
            job_id,
            exc.reason or exc,
        )
        return
    except ScenarioError as exc:
        logger.error(
            "Could not cancel Scenario job %s (%s): it may continue and be billed; fetch its outputs "
            "later by job id.",
            job_id,
            exc,
        )
        return
    logger.info("Canceled Scenario job %s", job_id)
