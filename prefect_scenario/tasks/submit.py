"""Estimate and submit tasks: the only places that talk about money.

A submit is paid and the API has no idempotency key, so:

* the budget is checked against a dry-run estimate before anything is spent;
* the client never re-sends the POST blindly; an ambiguous outcome is reconciled by listing jobs;
* the task has no retries, and its result is persisted (see :class:`JobRequestPolicy`), so a flow
  retry gets the same job back instead of a new one;
* before the POST, an intent is written to the submission ledger (:mod:`prefect_scenario.ledger`),
  and the job id the moment the POST answers: a rerun, another worker or a resume that finds an
  undelivered entry adopts its job, or reconciles an unanswered one by listing jobs, and pays again
  only when a listing that succeeded shows none. Labels and events come after, and never lose a job.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from prefect_scenario.blocks import ScenarioCredentials, resolve_credentials
from prefect_scenario.budget import check_budget
from prefect_scenario.caching import JobRequestPolicy, cache_run_id, job_request_key, normalized_body
from prefect_scenario.client.policies import parse_time
from prefect_scenario.errors import (
    EstimateFailedError,
    NotFoundError,
    ScenarioAPIError,
    ScenarioTransportError,
)
from prefect_scenario.events import emit_job_submitted
from prefect_scenario.formatting import format_units
from prefect_scenario.job_labels import record_job_on_flow_run
from prefect_scenario.ledger import LedgerEntry, Owner, current_ledger
from prefect_scenario.manifest import SubmittedJob
from prefect_scenario.models import (
    ALEPH_MODEL_ID,
    VIDEO_LAYERS_MODEL_ID,
    CostEstimate,
    Job,
    JobStatus,
)
from prefect_scenario.run_context import current_flow_run_id as current_run_id
from prefect_scenario.run_context import run_logger
from prefect_scenario.tasks._runtime import IN_FLIGHT, TRANSIENT_ERRORS, retry_transient_only

# A reused job is only worth something while its outputs can be fetched, and the API lists jobs of
# the last 30 days by default; past that, a new job is the honest answer.
JOB_CACHE_EXPIRATION = timedelta(days=30)


def _cheaper_hint(model_id: str, body: dict[str, Any]) -> str:
    if model_id == VIDEO_LAYERS_MODEL_ID:
        layers = body.get("maxLayers", 6)
        return f"make the job cheaper: ask for fewer layers (maxLayers is {layers}) or use a shorter clip"
    if model_id == ALEPH_MODEL_ID:
        return "make the job cheaper: use a shorter clip (the price follows the clip's length)"
    return "make the job cheaper"


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

    Example:
        ```python
        body = {"video": asset_id, "prompt": "a rainy noir night"}
        estimate = await estimate_job("model_runway-aleph-2", body, credentials=credentials)
        print(estimate.creative_units_cost)
        ```
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


# The estimate a submit takes itself is retried as estimate_job's task retries are: a dry run is free,
# and nothing has been sent that could be paid for.
ESTIMATE_RETRY_DELAYS: list[float] = [2, 10]


async def _free_estimate(client: Any, model_id: str, request: dict[str, Any]) -> CostEstimate:
    """A dry run, retried on transient failures; a final failure says nothing was spent."""
    for attempt in range(len(ESTIMATE_RETRY_DELAYS) + 1):
        try:
            estimate: CostEstimate = await client.generate.estimate(model_id, request)
            return estimate
        except TRANSIENT_ERRORS as exc:
            if attempt == len(ESTIMATE_RETRY_DELAYS):
                raise EstimateFailedError(
                    f"nothing was spent: the free estimate of {model_id} failed {attempt + 1} times, so "
                    f"nothing was submitted ({exc}); run it again when the Scenario API answers",
                    model_id=model_id,
                ) from exc
            run_logger().warning(
                "The estimate of %s failed (%s); nothing was spent; trying again in %.0f s",
                model_id,
                exc,
                ESTIMATE_RETRY_DELAYS[attempt],
            )
            await asyncio.sleep(ESTIMATE_RETRY_DELAYS[attempt])
    raise AssertionError("unreachable")  # pragma: no cover


def _refreshing() -> bool:
    """True when this submit was asked to pay anew (``refresh_cache=True``)."""
    context = TaskRunContext.get()
    return bool(context is not None and context.task.refresh_cache)


def _request_key(model_id: str, request: dict[str, Any], scope: str, reuse_across_runs: bool) -> str:
    run_id = None if reuse_across_runs else cache_run_id(TaskRunContext.get())
    return job_request_key(model_id, request, scope, run_id)


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
    adopt_job_id: str | None = None,
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
        adopt_job_id: the job an earlier attempt of this flow run bought for this intent (a
            suspended run's journal): it is read and returned, and nothing is ever POSTed.

    Returns:
        The submitted job (persisted: a retry of the flow run gets it back without a new submit).

    Raises:
        BudgetExceededError: the estimate is above ``max_creative_units``; nothing was spent.
        SubmissionUncertainError: the submit may have reached the API and no job matches it; do not
            submit again before looking for the job.

    Example:
        ```python
        from prefect import flow
        from prefect_scenario import (
            ScenarioCredentials, download_outputs, submit_job, upload_video, wait_for_job,
        )

        @flow
        async def restyle(clip: str) -> None:
            credentials = await ScenarioCredentials.aload("scenario-prod")
            asset_id = await upload_video(clip, credentials=credentials)
            body = {"video": asset_id, "prompt": "a rainy noir night", "seed": 7}
            submitted = await submit_job("model_runway-aleph-2", body, credentials=credentials,
                                         max_creative_units=100, reuse_across_runs=True)
            job = await wait_for_job(submitted.job_id, credentials=credentials)
            await download_outputs(job, credentials=credentials, destination="out")
        ```
    """
    logger = run_logger()
    request = normalized_body(body)
    creds = await resolve_credentials(credentials)
    if adopt_job_id is not None:
        return await _adopt_journaled(model_id, request, creds, adopt_job_id, estimate)
    key = _request_key(model_id, request, creds.cache_scope(), reuse_across_runs)
    submitted, shared = await IN_FLIGHT.once(
        key,
        lambda: _submit(
            model_id,
            request,
            creds,
            estimate=estimate,
            max_creative_units=max_creative_units,
            reuse=reuse_across_runs and not _refreshing(),
        ),
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
    reuse: bool,
) -> SubmittedJob:
    logger = run_logger()
    async with creds.get_client() as client:
        if estimate is None:
            estimate = await _free_estimate(client, model_id, request)
            logger.info(
                "Scenario job estimate for %s: %s creative units",
                model_id,
                format_units(estimate.creative_units_cost),
            )
        cost = estimate.creative_units_cost
        check_budget(
            f"Scenario job {model_id}", cost, max_creative_units, cheaper=_cheaper_hint(model_id, request)
        )
        key = ledger_key(model_id, request, creds)
        job, paid, found, adopted_from = await _pay_once(
            client, model_id, request, creds.cache_scope(), key, reuse=reuse
        )
    reconciled = found is not None
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
        ledger_key=key,
        adopted_from=adopted_from,
    )
    logger.info(
        "Scenario job %s submitted to %s (%s creative units%s)",
        job.job_id,
        model_id,
        format_units(paid if paid is not None else cost),
        f", {found}: nothing new was bought" if found else "",
    )
    try:
        emit_job_submitted(submitted)
    except Exception as exc:
        logger.warning("Could not emit scenario.job.submitted for %s: %s", job.job_id, exc)
    return submitted


async def _adopt_journaled(
    model_id: str,
    request: dict[str, Any],
    creds: ScenarioCredentials,
    job_id: str,
    estimate: CostEstimate | None,
) -> SubmittedJob:
    """The job a resumed flow run's journal names, read back; never a POST, whatever it finds.

    A resumed attempt may miss the first attempt's persisted result (another machine, a refresh, a
    body re-encoded differently): the journal on the flow run still names the job it bought.
    """
    async with creds.get_client() as client:
        job: Job = await client.jobs.get(job_id)
    paid = job.billing.cu_cost if job.billing is not None else None
    run_logger().info(
        "Scenario job %s was bought by an earlier attempt of this flow run (its journal says so): "
        "reading it back, nothing new is submitted",
        job_id,
    )
    return SubmittedJob(
        job_id=job.job_id,
        model_id=model_id,
        inputs=request,
        estimated_creative_units=estimate.creative_units_cost if estimate is not None else paid,
        creative_units_cost=paid,
        reconciled=False,
        ledger_key=ledger_key(model_id, request, creds),
        submitted_at=_job_created(job),
    )


def _job_created(job: Job) -> datetime:
    return parse_time(job.created_at) or datetime.now(UTC)


# -- the ledger: a submit is started once per intent, whatever dies when --------------------------


def _definitely_nothing_created(exc: BaseException) -> bool:
    """True for the submit failures that prove no job exists: a refusal, or a request never sent."""
    if isinstance(exc, ScenarioTransportError):
        return not exc.request_sent
    # generate.run raises an API error only for refusals; ambiguous statuses become uncertainty.
    return isinstance(exc, ScenarioAPIError)


async def _pay_once(
    client: Any, model_id: str, request: dict[str, Any], scope: str, key: str, *, reuse: bool
) -> tuple[Job, float | None, str | None, str | None]:
    """The job of this intent: adopted from the ledger when an earlier submit bought it, else bought.

    ``key`` is the intent's ledger key (:func:`ledger_key`). ``reuse``: the caller would take any
    earlier run's job with these inputs (its cache policy reuses across runs, and no refresh was
    asked for), so a live run's job is adopted too.

    Returns:
        The job, the creative units it cost (None when unknown), how it was found when it was not
        bought by this call (adopted from the ledger, or found again after an uncertain submit), and
        the flow run that bought it when that is another one (its job is adopted: nothing spent).
    """
    ledger = await current_ledger()
    owner = Owner.current(current_run_id())
    async with ledger.hold(key, owner):
        entry = await ledger.read(key)
        adopted = None
        if entry is not None and entry.binds:
            adopted = await _adopt(client, entry, model_id, request, owner, reuse=reuse)
        if adopted is not None:
            assert entry is not None
            # The adopting run owns the job now: should it die too, the next run judges it, not the first.
            await ledger.write(entry.adopted_by(owner, adopted.job_id))
            await _mark_owner_crashed(entry.owner, owner, adopted.job_id)
            own_retry = owner.flow_run_id is not None and entry.owner.flow_run_id == owner.flow_run_id
            paid = adopted.billing.cu_cost if adopted.billing else None
            return adopted, paid, "adopted from the ledger", None if own_retry else entry.owner.describe()
        earlier = _earlier_job_ids(entry)
        intent = LedgerEntry(
            key=key,
            model_id=model_id,
            inputs=request,
            scope=scope,
            state="submitting",
            sent_at=datetime.now(UTC),
            owner=owner,
            earlier_job_ids=earlier,
        )
        await ledger.write(intent)
        try:
            submission = await client.generate.run(model_id, request, reconcile=True)
        except BaseException as exc:
            if _definitely_nothing_created(exc):
                await ledger.write(intent.with_state("abandoned"))
            raise
        # Durable before anything else: a crash from here on leaves the rerun this job id.
        await ledger.write(intent.with_state("submitted", job_id=submission.job.job_id))
    found = "found again after an uncertain submit" if submission.reconciled else None
    return submission.job, submission.creative_units_cost, found, None


def _earlier_job_ids(entry: LedgerEntry | None) -> tuple[str, ...]:
    if entry is None:
        return ()
    return tuple(dict.fromkeys([*entry.earlier_job_ids, *([entry.job_id] if entry.job_id else [])]))


async def _adopt(
    client: Any, entry: LedgerEntry, model_id: str, request: dict[str, Any], me: Owner, *, reuse: bool
) -> Job | None:
    """The job an undelivered ledger entry stands for, when it exists and did not fail.

    A job whose answer was recorded (``submitted``) is adopted by a retry of its own flow run, by
    a caller that reuses across runs, and by any run when the flow run that bought it did not
    finish (crashed, failed, cancelled, or its process is gone). A run that completed settled its
    job (it handed it on: a task-level caller may never mark it delivered): a seedless edit or a
    refresh then buys a new one, as asked.

    An entry whose answer was never recorded (``submitting``) is reconciled by listing recent custom
    jobs: the job is adopted if the listing shows it; None (pay) only when the listing succeeded and
    shows none, after the POST could no longer be in flight on the server.

    Raises:
        SubmissionUncertainError: the job listing cannot be read: nothing proves there is no job.
    """
    logger = run_logger()
    if entry.state == "submitted" and entry.job_id:
        if not await _may_adopt(entry.owner, me, reuse=reuse):
            return None
        try:
            job: Job = await client.jobs.get(entry.job_id)
        except NotFoundError:
            logger.warning(
                "Scenario job %s of the ledger is not found on this API (%s): a new one is submitted",
                entry.job_id,
                scope_words(entry.scope),
            )
            return None
        if job.status in (JobStatus.FAILURE, JobStatus.CANCELED):
            return None
        logger.info(
            "Scenario job %s was bought for these inputs by %s and never delivered: adopting it, nothing "
            "new is submitted",
            job.job_id,
            entry.owner.describe(),
        )
        return job
    logger.warning(
        "A submit of these inputs by %s was sent at %s and its answer was never recorded: looking for its "
        "job before anything is paid",
        entry.owner.describe(),
        entry.sent_at.isoformat(timespec="seconds"),
    )
    sent = entry.sent_at.isoformat(timespec="seconds")
    why = f"the submit of {entry.owner.describe()} at {sent} was never answered"
    found: Job | None = await client.generate.find_submitted(
        model_id, request, since=entry.sent_at, excluding=entry.earlier_job_ids, cause=why
    )
    if found is None:
        # The POST may still be on its way through the server: look again once it cannot be.
        settle_until = entry.sent_at + timedelta(seconds=submit_settle_seconds())
        pause = (settle_until - datetime.now(UTC)).total_seconds()
        if pause > 0:
            logger.info(
                "No job found yet; the earlier submit could still be in flight on the server: looking "
                "again in %.0f s, before paying",
                pause,
            )
            await asyncio.sleep(pause)
            found = await client.generate.find_submitted(
                model_id, request, since=entry.sent_at, excluding=entry.earlier_job_ids, cause=why
            )
    if found is None:
        logger.info("No Scenario job matches the unanswered submit: it created nothing, paying now")
        return None
    if found.status in (JobStatus.FAILURE, JobStatus.CANCELED):
        return None
    logger.info(
        "Scenario job %s is the job of the unanswered submit by %s: adopting it, nothing new is submitted",
        found.job_id,
        entry.owner.describe(),
    )
    return found


async def _flow_run_state(flow_run_id: str | None) -> Any:
    """The state of flow run ``flow_run_id`` (None when unknown)."""
    if flow_run_id is None:
        return None
    from uuid import UUID

    from prefect.client.orchestration import get_client

    try:
        async with get_client() as prefect:
            return (await prefect.read_flow_run(UUID(flow_run_id))).state
    except Exception:
        return None


async def _may_adopt(owner: Owner, me: Owner, *, reuse: bool) -> bool:
    if reuse or (me.flow_run_id is not None and owner.flow_run_id == me.flow_run_id):
        return True
    state = await _flow_run_state(owner.flow_run_id)
    if state is not None and state.is_completed():
        return False
    if state is not None and state.is_final():
        return True  # failed, crashed or cancelled after buying: its job was never handed on
    if state is not None and (state.is_paused() or state.is_scheduled() or state.is_pending()):
        # Suspended while its job runs, or about to be run again: it has no process by design and
        # will come back for its job. A run that did not ask for reuse buys its own.
        return False
    # Still "running": adopt unless its process is alive here (a deliberate second run at once).
    return owner.is_gone() or owner.host != me.host


# Dead flow runs this process already looked at (and marked Crashed when they were not final).
_SETTLED_OWNERS: set[str] = set()


async def _mark_owner_crashed(owner: Owner, me: Owner, job_id: str) -> None:
    """Mark the dead flow run that bought ``job_id`` Crashed, so it does not show Running forever."""
    if owner.flow_run_id is None or owner.flow_run_id == me.flow_run_id or not owner.is_gone():
        return
    if owner.flow_run_id in _SETTLED_OWNERS:
        return  # a batch reusing many jobs of one dead run asks about it once
    _SETTLED_OWNERS.add(owner.flow_run_id)
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        async with get_client() as prefect:
            flow_run = await prefect.read_flow_run(UUID(owner.flow_run_id))
            # Only a run that says Running is owed a process: a suspended (Paused) run has none by
            # design, and a resumed one (Scheduled, Pending) waits for a worker to give it one.
            if flow_run.state is None or not flow_run.state.is_running():
                return
            await prefect.set_flow_run_state(
                flow_run.id,
                Crashed(
                    message=(
                        f"Its process ({owner.pid} on {owner.host}) died after buying Scenario job "
                        f"{job_id}; flow run {me.flow_run_id} adopted the job"
                    )
                ),
                force=True,
            )
        run_logger().info("Flow run %s, whose process died, is marked Crashed", owner.flow_run_id)
    except Exception as exc:
        run_logger().warning("Could not mark flow run %s Crashed: %s", owner.flow_run_id, exc)


async def settle_earlier_run(submitted: SubmittedJob) -> None:
    """This run reuses a job an earlier run bought: mark that run Crashed if its process died.

    A run killed while it waited or downloaded would otherwise show "Running" forever. Never raises.
    """
    if submitted.ledger_key is None:
        return
    try:
        entry = await (await current_ledger()).read(submitted.ledger_key)
        if entry is not None and entry.job_id == submitted.job_id:
            await _mark_owner_crashed(entry.owner, Owner.current(current_run_id()), submitted.job_id)
    except Exception as exc:
        run_logger().warning("Could not check the run that bought %s: %s", submitted.job_id, exc)


def submit_settle_seconds() -> float:
    """How long after a lost submit was sent its job may still appear.

    Set with ``PREFECT_SCENARIO_SUBMIT_SETTLE_SECONDS`` (default 90).
    The client gives a POST up after its read timeout (60 s by default); a server may finish a
    request whose client went away. Before an unanswered submit may be paid for again, the job
    listing must show nothing this long after it was sent.
    """
    return float(os.environ.get("PREFECT_SCENARIO_SUBMIT_SETTLE_SECONDS", "90"))


def scope_words(scope: str) -> str:
    """A credentials scope as people read it."""
    return scope or "the default API"


async def mark_delivered(job_id: str, ledger_key: str | None) -> None:
    """Record that the outputs of ``job_id`` are stored: its ledger entry binds later runs no more.

    Never raises: the outputs are stored either way; an entry left ``submitted`` only means a later
    run with the same inputs adopts the job instead of buying one.

    Args:
        job_id: the job whose outputs are stored.
        ledger_key: its entry's key (``SubmittedJob.ledger_key``, or :func:`ledger_key`).
    """
    if ledger_key is None:
        return
    try:
        ledger = await current_ledger()
        entry = await ledger.read(ledger_key)
        if entry is not None and entry.job_id == job_id and entry.state != "delivered":
            await ledger.write(entry.with_state("delivered"))
    except Exception as exc:
        run_logger().warning("Could not mark Scenario job %s delivered in the ledger: %s", job_id, exc)


def ledger_key(model_id: str, body: Any, credentials: ScenarioCredentials) -> str:
    """The ledger key of a submit of ``body`` to ``model_id`` (whatever the reuse policy)."""
    return job_request_key(model_id, normalized_body(body), credentials.cache_scope(), None)
