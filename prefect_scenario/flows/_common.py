"""The part every single-clip flow shares: its one job through the paid path, then the report.

A flow module (``layers``, ``aleph``) checks its inputs locally, uploads them and builds the model's
request body; :func:`run_generation` runs the job through :class:`~prefect_scenario.flows._job.JobRunner`
(the paid path every flow shares) and reports, in the same order and with the same safety for every
model:

* the estimate is a dry run (free); with ``dry_run`` the flow stops there;
* ``submit_job`` is the only paid step. It is cached per flow run (a flow retry gets its job back)
  and, with ``reuse_across_runs``, across flow runs (same inputs, same job, nothing spent);
* a failed download is retried by the download task and, past that, by a flow retry, which finds
  the submit cached: outputs are fetched again, never generated again;
* reporting (preview picture, artifacts) never fails a run whose outputs are stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from prefect.filesystems import WritableFileSystem
from prefect.logging import get_run_logger

from prefect_scenario.blocks import ScenarioCredentials
from prefect_scenario.budget import check_budget
from prefect_scenario.clip_source import ClipSource
from prefect_scenario.flows._arguments import RunChoices, options_from
from prefect_scenario.flows._job import JobOrder, JobRunner
from prefect_scenario.flows._stopwatch import Stopwatch
from prefect_scenario.flows.layers_review import Preview
from prefect_scenario.flows.reporting import (
    download_links,
    make_preview,
    model_name,
    publish_artifacts,
)
from prefect_scenario.flows.result import ESTIMATED, ScenarioRunResult
from prefect_scenario.formatting import format_units
from prefect_scenario.video import VideoProbe
from prefect_scenario.waiting import WaitMode

T = TypeVar("T")

# A look at a run's stored outputs before it is reported (layer previews, a PSNR figure): it returns
# the result with what it added, and the preview picture when it made one.
Review = Callable[[ScenarioRunResult], Awaitable[tuple[ScenarioRunResult, Preview | None]]]


def log_clip_checked(clip: ClipSource, probe: VideoProbe | None, also: str = "") -> None:
    """Log what the local check of a flow's clip found; ``also`` adds the model's own inputs.

    An asset id is not probed here (``probe`` is None): the API checks it at submit.
    """
    if probe is None:
        return
    get_run_logger().info(
        "Clip %s checked: %.1f s, %dx%d, %s bytes%s",
        clip.file_name,
        probe.duration_seconds,
        probe.width,
        probe.height,
        probe.size_bytes,
        also,
    )


def storage_slug(storage: WritableFileSystem | None) -> str | None:
    """The block type slug of a destination block; None for the local disk."""
    return storage.get_block_type_slug() if storage is not None else None


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


@dataclass(frozen=True, kw_only=True)
class GenerationOptions(RunChoices):
    """How a generation is run: where outputs go, budget, reuse, deadlines."""

    credentials: ScenarioCredentials
    destination_storage: WritableFileSystem | None = None
    max_creative_units: float | None = None
    reuse_across_runs: bool = True
    wait_mode: WaitMode = "inline"

    def runner(self) -> JobRunner:
        """The paid path for this generation's job(s), with these options."""
        return options_from(JobRunner, vars(self))


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
    jobs = options.runner()
    with clock.phase("submit"):
        if options.dry_run:
            estimate = await jobs.estimate(request.model_id, request.body)
            check_budget(
                name,
                estimate.creative_units_cost,
                options.max_creative_units,
                cheaper="make the job cheaper",
            )
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
                format_units(estimate.creative_units_cost),
            )
            await report_run(request, options, result, clock)
            return result
    order = JobOrder(request.model_id, request.body, max_creative_units=options.max_creative_units)
    paid = await jobs.run(order, clock=clock)
    if paid.reused:
        logger.info(
            "Scenario job %s from an earlier flow run has the same inputs: reused its outputs, nothing "
            "was spent (pass refresh=True for a new generation)",
            paid.job.job_id,
        )
    result = ScenarioRunResult(
        **base,
        job_id=paid.job.job_id,
        status=paid.job.status.value,
        estimated_creative_units=paid.submitted.estimated_creative_units,
        creative_units_cost=paid.billed,
        outputs=paid.outputs,
        reused=paid.reused,
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
        paid.job.job_id,
        len(result.outputs),
        options.destination,
        format_units(paid.billed),
        " (reused: nothing spent by this run)" if paid.reused else "",
    )
    return result


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
    with clock.phase("report"):
        if result.outputs and preview is None:
            try:
                preview = await make_preview(
                    result, source=request.source_video, storage=options.destination_storage
                )
            except Exception as exc:
                logger.warning("No preview picture for this run (%s: %s)", type(exc).__name__, exc)
        result = result.model_copy(
            update={"preview": preview[0] if preview else None, "timings": clock.timings()}
        )
        links: dict[str, str] = {}
        try:
            links = await download_links(options.destination_storage, result.stored_locations)
        except Exception as exc:
            logger.warning("No links to the stored files (%s: %s)", type(exc).__name__, exc)
        try:
            await publish_artifacts(request.flow_slug, result, preview[1] if preview else None, links)
        except Exception as exc:
            logger.warning("Artifacts of this run were not all created (%s: %s)", type(exc).__name__, exc)
    return result.model_copy(update={"timings": clock.timings()})
