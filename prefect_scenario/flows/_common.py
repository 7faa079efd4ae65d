"""The part every generation flow shares: estimate, submit once, wait, store the outputs, report.

A flow module (``layers``, ``aleph``) checks its inputs locally, uploads them and builds the model's
request body; :func:`run_generation` does the rest, in the same order and with the same safety for
every model:

* the estimate is a dry run (free); with ``dry_run`` the flow stops there;
* ``submit_job`` is the only paid step. It is cached per flow run (a flow retry gets its job back)
  and, with ``reuse_across_runs``, across flow runs (same inputs, same job, nothing spent);
* a failed download is retried by the download task and, past that, by a flow retry, which finds
  the submit cached: outputs are fetched again, never generated again;
* reporting (preview picture, artifacts) never fails a run whose outputs are stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar, cast

from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.filesystems import ReadableFileSystem, WritableFileSystem
from prefect.logging import get_run_logger

from prefect_scenario.blocks import ScenarioCredentials
from prefect_scenario.concurrency import (
    CEILING_MAX_RETRIES,
    CEILING_RETRY_DELAYS,
    CEILING_RETRY_JITTER,
    CeilingWatch,
)
from prefect_scenario.errors import BudgetExceededError, MediaError
from prefect_scenario.flows.reporting import (
    make_preview,
    model_name,
    presigned_preview_url,
    publish_artifacts,
)
from prefect_scenario.flows.result import ESTIMATED, PhaseTimings, ScenarioRunResult
from prefect_scenario.manifest import SubmittedJob
from prefect_scenario.storage import discard, materialize
from prefect_scenario.tasks import download_outputs, estimate_job, submit_job, wait_for_job
from prefect_scenario.tasks.submit import mark_delivered, settle_earlier_run
from prefect_scenario.validation import is_asset_id

T = TypeVar("T")

# A preview picture as stored (its location) and its JPEG bytes (empty when too big to embed).
Preview = tuple[str, bytes]
# A look at a run's stored outputs before it is reported (layer previews, a PSNR figure): it returns
# the result with what it added, and the preview picture when it made one.
Review = Callable[[ScenarioRunResult], Awaitable[tuple[ScenarioRunResult, Preview | None]]]

# Where an input clip may live. Prefect's S3Bucket (prefect-aws) is a WritableFileSystem that is not
# a ReadableFileSystem subclass, though it reads: a flow parameter typed ReadableFileSystem alone
# would refuse the most common storage block.
SourceStorage = ReadableFileSystem | WritableFileSystem


@dataclass
class Stopwatch:
    """Wall-clock seconds per phase of a flow run attempt."""

    started: float = field(default_factory=time.monotonic)
    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name`` (accumulating when a phase runs more than once)."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - start

    def timings(self) -> PhaseTimings:
        """The phases measured so far, and the total since the stopwatch started."""
        return PhaseTimings(
            **{f"{name}_seconds": round(value, 3) for name, value in self.seconds.items()},
            total_seconds=round(time.monotonic() - self.started, 3),
        )


async def check_video(video: str, storage: SourceStorage | None, check: Callable[[Path | None], T]) -> T:
    """Run a local check on the clip before anything is uploaded or spent.

    An asset id cannot be probed here (the API checks it at submit time, still before any job is
    created): ``check`` gets None. A clip inside a storage block is fetched to a temporary file for
    the probe and removed after it.

    Args:
        video: an asset id, a local path, or a path inside ``storage``.
        storage: the block holding ``video``, if any.
        check: the validation to run on the local file (or None).

    Returns:
        What ``check`` returned.
    """
    if is_asset_id(video):
        return check(None)
    if storage is None:
        # Probing decodes the file: keep the event loop free for Prefect's own work meanwhile.
        return await asyncio.to_thread(check, local_clip(video, None))
    try:
        local = await materialize(video, readable(storage))
    except FileNotFoundError:
        raise MediaError(
            f"video {video!r} is not in the {storage.get_block_type_slug()} block: check the path inside it",
            field="video",
        ) from None
    try:
        return await asyncio.to_thread(check, local)
    finally:
        discard(local)


def readable(storage: SourceStorage | None) -> ReadableFileSystem | None:
    """``storage`` as the reading interface the tasks take (every filesystem block reads)."""
    return cast(ReadableFileSystem | None, storage)


def local_clip(video: str, storage: SourceStorage | None) -> Path | None:
    """The clip as a local file, when it is one (not an asset id, not inside a storage block)."""
    if is_asset_id(video) or storage is not None:
        return None
    return Path(video).expanduser()


def source_name(value: str, storage: SourceStorage | None = None) -> str:
    """How an input's origin is recorded: the path (with the block type), or the asset id."""
    if is_asset_id(value) or storage is None:
        return value
    return f"{storage.get_block_type_slug()}:{value}"


def storage_slug(storage: WritableFileSystem | None) -> str | None:
    """The block type slug of a destination block; None for the local disk."""
    return storage.get_block_type_slug() if storage is not None else None


def _flow_run_created() -> datetime | None:
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return None
    created = context.flow_run.created
    return created if created is None or created.tzinfo else created.replace(tzinfo=timezone.utc)


def ceiling_aware_submit(watch: CeilingWatch) -> Any:
    """``submit_job`` retried on Scenario's ceiling refusals (429) only, as ``watch`` decides.

    A 429 created nothing, so waiting and sending the submit again cannot buy a second job.
    """
    return submit_job.with_options(
        retries=CEILING_MAX_RETRIES,
        retry_delay_seconds=CEILING_RETRY_DELAYS,
        retry_jitter_factor=CEILING_RETRY_JITTER,
        retry_condition_fn=watch.retry_condition(),
    )


def came_from_earlier_run(state: State[Any], submitted: SubmittedJob) -> bool:
    """True when ``submit_job`` found a job submitted before this flow run existed.

    A cache hit alone is not enough: a retry of this flow run also gets its own job back from the
    cache. Only a job older than the flow run itself came from another run; or one the submit
    adopted from the ledger, bought by another run that never delivered it.
    """
    if submitted.adopted_from is not None:
        return True
    if state.name != "Cached":
        return False
    created = _flow_run_created()
    if created is None:
        return True
    submitted_at = submitted.submitted_at
    if submitted_at.tzinfo is None:
        submitted_at = submitted_at.replace(tzinfo=timezone.utc)
    return submitted_at < created


@dataclass(frozen=True)
class GenerationRequest:
    """What a flow asks for once its inputs are checked and uploaded.

    Attributes:
        flow_slug: the flow's name (artifact keys start with it).
        model_id: the Scenario model.
        body: the model's inputs, camelCase as on the wire (asset ids, no local paths).
        sources: where each uploaded input came from, for the record.
        source_video: the local clip, when there is one (for a before/after preview).
        fitted_to_limits: the clip was re-encoded to fit the model's limits before upload.
        notes: what was done to the inputs, in words, for the result and the summary.
    """

    flow_slug: str
    model_id: str
    body: dict[str, Any]
    sources: dict[str, str]
    source_video: Path | None = None
    fitted_to_limits: bool = False
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationOptions:
    """How a generation is run: where outputs go, budget, reuse, deadlines."""

    credentials: ScenarioCredentials
    destination: str = "scenario-outputs"
    destination_storage: WritableFileSystem | None = None
    max_creative_units: float | None = None
    reuse_across_runs: bool = True
    refresh: bool = False
    timeout_seconds: float = 3600
    dry_run: bool = False


async def run_generation(
    request: GenerationRequest,
    options: GenerationOptions,
    clock: Stopwatch,
    *,
    review: Review | None = None,
) -> ScenarioRunResult:
    """Estimate, submit (once), wait, store the outputs and report.

    Args:
        request: the checked, uploaded request.
        options: destination, budget, reuse and deadline.
        clock: the flow's stopwatch (validation and upload were timed already).
        review: a look at the stored outputs before the report (e.g. layer previews); its failure
            is logged, never raised: the outputs are stored and paid for.

    Returns:
        The result of the run.
    """
    logger = get_run_logger()
    name = model_name(request.model_id)
    base = {
        "model_id": request.model_id,
        "inputs": request.body,
        "sources": request.sources,
        "destination": str(options.destination),
        "storage": storage_slug(options.destination_storage),
        "fitted_to_limits": request.fitted_to_limits,
        "notes": list(request.notes),
    }
    with clock.phase("submit"):
        estimate = await estimate_job(request.model_id, request.body, credentials=options.credentials)
        if options.dry_run:
            _check_budget(request.model_id, estimate.creative_units_cost, options.max_creative_units)
            result = ScenarioRunResult(
                **base,
                job_id=None,
                status=ESTIMATED,
                estimated_creative_units=estimate.creative_units_cost,
                timings=clock.timings(),
            )
            logger.info(
                "Dry run: %s would cost about %s creative units; nothing was submitted",
                name,
                _units(estimate.creative_units_cost),
            )
            await report_run(request, options, result, clock)
            return result
        # Typed as Any: Prefect's overloads do not see that an async task with return_state=True
        # gives an awaitable of its state.
        submit: Any = submit_job.with_options(refresh_cache=True) if options.refresh else submit_job
        state: State[SubmittedJob] = await submit(
            request.model_id,
            request.body,
            credentials=options.credentials,
            estimate=estimate,
            max_creative_units=options.max_creative_units,
            reuse_across_runs=options.reuse_across_runs and not options.refresh,
            return_state=True,
        )
        submitted: SubmittedJob = await state.aresult()
        reused = came_from_earlier_run(state, submitted)
    if reused:
        await settle_earlier_run(submitted)
        logger.info(
            "Scenario job %s from an earlier flow run has the same inputs: reusing its outputs, nothing "
            "is spent (pass refresh=True for a new generation)",
            submitted.job_id,
        )
    with clock.phase("wait"):
        job = await wait_for_job(
            submitted.job_id, credentials=options.credentials, timeout_seconds=options.timeout_seconds
        )
    with clock.phase("download"):
        outputs = await download_outputs(
            job,
            credentials=options.credentials,
            destination=options.destination,
            storage=options.destination_storage,
        )
        await mark_delivered(submitted.job_id, submitted.ledger_key)
    billed = job.billing.cu_cost if job.billing is not None else submitted.creative_units_cost
    result = ScenarioRunResult(
        **base,
        job_id=job.job_id,
        status=job.status.value,
        estimated_creative_units=submitted.estimated_creative_units,
        creative_units_cost=billed,
        outputs=sorted(outputs, key=lambda o: o.output_index),
        reused=reused,
        timings=clock.timings(),
    )
    preview: Preview | None = None
    if review is not None and result.outputs:
        with clock.phase("report"):
            try:
                result, preview = await review(result)
            except Exception as exc:
                logger.warning("The outputs were not reviewed (%s: %s)", type(exc).__name__, exc)
    result = await report_run(request, options, result, clock, preview=preview)
    logger.info(
        "%s finished: Scenario job %s, %d output(s) in %s, %s creative units%s",
        name,
        job.job_id,
        len(result.outputs),
        options.destination,
        _units(billed),
        " (reused: nothing spent by this run)" if reused else "",
    )
    return result


def _units(value: float | None) -> str:
    if value is None:
        return "an unknown number of"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _check_budget(model_id: str, estimate: float, budget: float | None) -> None:
    if budget is not None and estimate > budget:
        raise BudgetExceededError(
            f"{model_name(model_id)} would cost {_units(estimate)} creative units, over the budget of "
            f"{_units(budget)} (max_creative_units): raise the budget or make the job cheaper",
            estimate=estimate,
            budget=budget,
        )


async def report_run(
    request: GenerationRequest,
    options: GenerationOptions,
    result: ScenarioRunResult,
    clock: Stopwatch,
    *,
    preview: Preview | None = None,
) -> ScenarioRunResult:
    """Preview picture and artifacts; a failure here is logged, never raised.

    Args:
        request: the run's request (flow, source clip).
        options: where the outputs went.
        result: the run's result so far.
        clock: the flow's stopwatch.
        preview: a preview picture already made and stored (location, JPEG bytes); made here when None.

    Returns:
        The result with the preview's location and the final timings.
    """
    logger = get_run_logger()
    preview_url: str | None = None
    with clock.phase("report"):
        if result.outputs and preview is None:
            try:
                preview = await make_preview(
                    result, source=request.source_video, storage=options.destination_storage
                )
            except Exception as exc:
                logger.warning("No preview picture for this run (%s: %s)", type(exc).__name__, exc)
        if preview is not None:
            try:
                preview_url = await presigned_preview_url(options.destination_storage, preview[0])
            except Exception as exc:
                logger.warning("No link to the preview picture (%s: %s)", type(exc).__name__, exc)
        result = result.model_copy(
            update={"preview": preview[0] if preview else None, "timings": clock.timings()}
        )
        try:
            await publish_artifacts(request.flow_slug, result, preview[1] if preview else None, preview_url)
        except Exception as exc:
            logger.warning("Artifacts of this run were not all created (%s: %s)", type(exc).__name__, exc)
    return result.model_copy(update={"timings": clock.timings()})
