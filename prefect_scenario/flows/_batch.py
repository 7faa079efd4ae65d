"""The batch engine: one model over many clips, within the team's job ceiling and the batch's budget.

Both batch flows (``flows/batch.py``) run every clip in ONE flow run as plain tasks (no subflow per
clip: a batch of a thousand clips is five thousand small task runs, not a thousand flow runs). What
each clip goes through:

1. **prepare** (a few clips at a time): the clip is fetched once when it lives in a block, checked
   locally, and made ready to pay for: uploaded (cached by content) as one job's request, fitted to
   the model's limits, or split into chunks (Runway Aleph 2 over 30 s, as ``aleph_edit`` does);
   with a budget or for a dry run, every job is estimated (free);
2. **plan** (in the given order, :func:`~prefect_scenario.budget.plan_within_budget`): clips are
   admitted while the running total of their estimates stays within the budget; from the first one
   that would pass it on, every clip is reported ``skipped: budget``;
3. **run** (all admitted clips at once): every job goes through the one paid path
   (:class:`~prefect_scenario.flows._job.JobRunner`), holding a slot of the batch's
   :class:`~prefect_scenario.slot_pool.SlotPool` from the submit until the job is terminal; a 429
   from Scenario's ceiling is waited out as a task retry. Then the clip is finished: a split clip is
   stitched, layers are reviewed (composite preview, contact sheet, PSNR against the source).

A failure ends only its own clip. The table artifact shows every clip; the flow run ends Completed
when no clip failed, Failed otherwise; either way the state's result is the :class:`BatchResult`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect.artifacts import acreate_progress_artifact
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger
from prefect.states import Completed, Failed

from prefect_scenario.blocks import resolve_credentials
from prefect_scenario.budget import plan_within_budget
from prefect_scenario.clip_source import ClipSource
from prefect_scenario.concurrency import (
    CeilingWatch,
    ensure_global_concurrency_limit,
)
from prefect_scenario.errors import InputValidationError
from prefect_scenario.flows._batch_clip import ERROR_CHARS, BatchClip, describe
from prefect_scenario.flows._batch_recipe import BatchOptions, ModelRecipe
from prefect_scenario.flows._batch_waves import (
    BatchWaves,
    batch_waves,
    load_batch_record,
    new_record,
    run_batch_waves,
)
from prefect_scenario.flows._chunk_waves import ChunkEntry, restored_plan
from prefect_scenario.flows._fan_out import ChildRuns, fan_out_deployment, groups_of
from prefect_scenario.flows._job import JobOrder, JobRunner, PaidJob, ceiling_aware_submit
from prefect_scenario.flows._suspend import check_wait_mode
from prefect_scenario.flows.aleph import fit_clip
from prefect_scenario.flows.aleph_chunks import (
    ChunkPlan,
    chunks_failure,
    finish_chunks,
    plan_chunks,
    run_chunks,
)
from prefect_scenario.flows.batch_report import BatchProgress, publish_batch_artifacts
from prefect_scenario.flows.layers_review import review_layer_outputs
from prefect_scenario.flows.reporting import artifact_key, model_name
from prefect_scenario.flows.result import (
    CLIP_ESTIMATED,
    FAILED,
    SKIPPED_BUDGET,
    SUCCEEDED,
    BatchResult,
    ChunkResult,
    ClipResult,
)
from prefect_scenario.formatting import format_units
from prefect_scenario.job_labels import deferred_job_labels, drain_job_labels
from prefect_scenario.manifest import SubmittedJob
from prefect_scenario.run_context import current_flow_run_id
from prefect_scenario.slot_leases import SlotLeases
from prefect_scenario.slot_pool import SlotPool
from prefect_scenario.storage import (
    find_videos,
    load_destination_storage,
    load_source_storage,
    new_temp_dir,
)
from prefect_scenario.tasks import upload_video
from prefect_scenario.tasks.upload import ensure_uploaded

# Clips checked and uploaded at once. Uploads share the machine's bandwidth and each probe decodes a
# clip: a handful in parallel keeps both busy without drowning either. Jobs are not bounded by this.
PREPARE_CONCURRENCY = 8


@dataclass
class _Run:
    """What every clip of one batch shares."""

    recipe: ModelRecipe
    jobs: JobRunner
    progress: BatchProgress
    prepare_gate: asyncio.Semaphore
    needs_estimates: bool
    children: ChildRuns | None = None
    clips_per_flow_run: int = 1
    waves: BatchWaves | None = None

    async def prepare(self, clip: BatchClip) -> None:
        """Fetch, check and make one clip ready to pay for; a failure is recorded on the clip."""
        async with self.prepare_gate:
            try:
                await self._prepare(clip)
            except Exception as exc:
                clip.result = clip.failed(exc)
                clip.release()
                get_run_logger().error("Clip %s failed before submit: %s", clip.source.name, describe(exc))

    async def _prepare(self, clip: BatchClip) -> None:
        recipe, jobs = self.recipe, self.jobs
        # Fetched once (from a block): the probe, the hash, the upload and the review read this copy.
        clip.local = await clip.source.fetch()
        probe = await asyncio.to_thread(recipe.check, clip.local)
        handling = recipe.handling(probe) if probe is not None else "as_is"
        if handling == "split":
            assert recipe.edit is not None
            assert clip.local is not None
            assert probe is not None
            clip.scratch = new_temp_dir()
            edit = recipe.edit(clip.source, clip.local)
            clip.chunks = await plan_chunks(
                edit, clip.local, probe, clip.scratch, jobs, estimate=self.needs_estimates
            )
            clip.notes.append(clip.chunks.note())
            return
        video_file = clip.local
        if handling == "fit":
            assert clip.local is not None
            assert probe is not None
            clip.scratch = new_temp_dir()
            video_file, note = await fit_clip(clip.local, probe, clip.scratch)
            clip.notes.append(note)
        asset_id = clip.source.asset_id or await ensure_uploaded(
            upload_video, str(video_file), credentials=jobs.credentials
        )
        clip.asset_id = asset_id
        clip.body = recipe.body(asset_id)
        if self.needs_estimates:
            clip.estimate = await jobs.estimate(recipe.model_id, clip.body)
        if not recipe.review_layers:
            # Nothing after the upload reads the clip: free its copy (and a fitted one) now.
            clip.release()

    async def run(self, clip: BatchClip) -> None:
        """Pay for, wait on and store one admitted clip; a failure ends this clip only."""
        job_ids: list[str] = []
        try:
            if clip.chunks is not None:
                clip.result = await self._run_chunks(clip, clip.chunks)
            else:
                clip.result = await self._run_one(clip, job_ids.append)
        except Exception as exc:
            job_id = job_ids[-1] if job_ids else None
            clip.result = clip.failed(exc, job_id)
            where = f" (job {job_id})" if job_id else ""
            get_run_logger().error("Clip %s failed%s: %s", clip.source.name, where, describe(exc))
        finally:
            clip.release()
        await self.progress.tick()

    async def _run_one(self, clip: BatchClip, seen: Callable[[str], None]) -> ClipResult:
        assert clip.body is not None

        def submitted(job: SubmittedJob) -> None:
            seen(job.job_id)

        order = JobOrder(self.recipe.model_id, clip.body, estimate=clip.estimate)
        paid = await self.jobs.run(order, on_submitted=submitted)
        return await self.succeeded(clip, paid)

    async def succeeded(self, clip: BatchClip, paid: PaidJob) -> ClipResult:
        """The result of a clip whose job succeeded and whose outputs are stored (reviewed, logged)."""
        logger = get_run_logger()
        result = clip.report(
            status=SUCCEEDED,
            job_id=paid.job.job_id,
            estimated_creative_units=paid.submitted.estimated_creative_units,
            creative_units_cost=paid.billed,
            reused=paid.reused,
            outputs=paid.outputs,
        )
        if self.recipe.review_layers:
            result = await self._review(clip, result)
        logger.info(
            "Clip %s succeeded: Scenario job %s, %d output(s)%s%s",
            clip.source.name,
            paid.job.job_id,
            len(paid.outputs),
            f", {result.composite_psnr_db:.1f} dB PSNR" if result.composite_psnr_db is not None else "",
            " (reused: nothing spent)" if paid.reused else "",
        )
        return result

    async def _review(self, clip: BatchClip, result: ClipResult) -> ClipResult:
        """The layers' previews and PSNR; a failure is logged: the outputs are stored and paid for."""
        assert result.job_id is not None
        try:
            review = await review_layer_outputs(
                result.job_id,
                result.outputs,
                source=clip.local,
                destination=self.jobs.destination,
                destination_storage=self.jobs.destination_storage,
            )
        except Exception as exc:
            get_run_logger().warning(
                "The layers of clip %s were not reviewed (%s)", clip.source.name, describe(exc)
            )
            return result
        if review is None:
            return result
        return result.model_copy(
            update={
                "previews": review.previews,
                "composite_psnr_db": review.psnr_db,
                "notes": [*result.notes, *([review.note] if review.note else [])],
            }
        )

    async def _run_chunks(self, clip: BatchClip, plan: ChunkPlan) -> ClipResult:
        results = await run_chunks(plan, self.jobs, retries=self.recipe.chunk_retries)
        return await self._stitched(clip, plan, results)

    async def stitch(self, clip: BatchClip, chunks: list[ChunkEntry]) -> ClipResult:
        """A suspended batch's split clip once its chunks' waves are over: stitched as inline."""
        try:
            local = clip.local = clip.local or await clip.source.fetch()
            assert local is not None  # a split clip was probed: it is a file, never an asset id
            probe = await asyncio.to_thread(self.recipe.check, local)
            assert probe is not None
            assert self.recipe.edit is not None
            clip.scratch = new_temp_dir()
            edit = self.recipe.edit(clip.source, local)
            clip.chunks = restored_plan(chunks, edit, local, probe, clip.scratch)
            results = [chunk.result for chunk in chunks if chunk.result is not None]
            return await self._stitched(clip, clip.chunks, results)
        except Exception as exc:
            get_run_logger().error("Clip %s failed: %s", clip.source.name, describe(exc))
            return clip.failed(exc)
        finally:
            clip.release()

    async def _stitched(self, clip: BatchClip, plan: ChunkPlan, results: list[ChunkResult]) -> ClipResult:
        job_ids = [c.job_id or "" for c in results]
        error = chunks_failure(results)
        if error is not None:
            get_run_logger().error("Clip %s failed: %s", clip.source.name, error)
            return clip.report(status=FAILED, chunk_job_ids=job_ids, error=describe(error))
        edit = await finish_chunks(results, plan, self.jobs)
        clip.notes[-1] = (
            f"split into {len(results)} chunks ({', '.join(job_ids)}), stitched back with the source's "
            f"audio ({plan.probe.duration_seconds:.2f} s)"
        )
        get_run_logger().info(
            "Clip %s succeeded: %d chunk jobs stitched into %s%s",
            clip.source.name,
            len(results),
            edit.output.location,
            " (reused: nothing spent)" if edit.reused else "",
        )
        return clip.report(
            status=SUCCEEDED,
            chunk_job_ids=job_ids,
            creative_units_cost=edit.creative_units_cost,
            reused=edit.reused,
            outputs=[edit.output],
        )


async def _run_clips(run: _Run, clips: list[BatchClip], budget: float | None, dry_run: bool) -> float:
    """Prepare, plan and run the clips; returns the creative units planned (0 without a budget)."""
    logger = get_run_logger()
    progress = run.progress
    preparing = [asyncio.ensure_future(run.prepare(clip)) for clip in clips]
    running: list[asyncio.Future[None]] = []
    if not run.needs_estimates and run.children is None and run.waves is None:
        # No budget: nothing to plan, so each clip is paid for as soon as it is ready.
        for clip, preparation in zip(clips, preparing, strict=True):
            await preparation
            if clip.result is not None:
                await progress.tick()
                continue
            running.append(asyncio.ensure_future(run.run(clip)))
        await asyncio.gather(*running)
        return 0.0
    # The whole plan is known (and logged) before a single creative unit is spent.
    await asyncio.gather(*preparing)
    candidates = [clip for clip in clips if clip.result is None]
    if not run.needs_estimates:
        # Spread over workers without a budget: every prepared clip goes.
        await progress.tick(sum(1 for c in clips if c.result is not None))
        await _run_admitted(run, candidates, clips, 0.0)
        return 0.0
    plan = plan_within_budget([clip.estimated for clip in candidates], budget)
    admitted = [candidates[index] for index in plan.admitted]
    for clip in candidates:
        if clip not in admitted:
            clip.result = clip.report(status=SKIPPED_BUDGET, error=plan.stop)
            clip.release()
    logger.info(
        "Plan: %d clip(s) estimated at %s in all; %d admitted (%s)%s",
        len(candidates),
        format_units(sum(c.estimated or 0.0 for c in candidates), unit=True),
        len(admitted),
        format_units(plan.planned, unit=True),
        f"; the rest is skipped, {plan.stop}" if plan.stop else "",
    )
    await progress.tick(sum(1 for c in clips if c.result is not None))
    if dry_run:
        for clip in admitted:
            clip.result = clip.report(status=CLIP_ESTIMATED)
            clip.release()
        await progress.tick(len(admitted))
        return plan.planned
    await _run_admitted(run, admitted, clips, plan.planned)
    return plan.planned


async def _run_admitted(run: _Run, admitted: list[BatchClip], every: list[BatchClip], planned: float) -> None:
    """Pay for the admitted clips: here, in waves that suspend, or in groups as child flow runs.

    A split clip stays here when spread: its chunks are cut from the local copy this run holds.
    """
    if run.waves is not None:
        for clip in admitted:
            clip.release()  # a wave that finishes a clip fetches it again if its review needs it
        await run_batch_waves(
            run.waves, every, new_record(every, planned, run.recipe.chunk_retries), run.stitch
        )
        return
    if run.children is None:
        await asyncio.gather(*(run.run(clip) for clip in admitted))
        return
    here = [clip for clip in admitted if clip.chunks is not None]
    remote = [clip for clip in admitted if clip.chunks is None]
    groups = groups_of(remote, run.clips_per_flow_run)
    get_run_logger().info(
        "Spreading %d clip(s) over the work pool's workers: %d child flow run(s) of %d clip(s) at most%s",
        len(remote),
        len(groups),
        run.clips_per_flow_run,
        f"; {len(here)} split clip(s) run here" if here else "",
    )
    await asyncio.gather(
        *(run.run(clip) for clip in here),
        *(_run_group(run, run.children, index, group) for index, group in enumerate(groups, start=1)),
    )


async def _run_group(run: _Run, children: ChildRuns, index: int, group: list[BatchClip]) -> None:
    """One group as a child flow run: its asset ids, and their estimates as its budget."""
    estimates = [clip.estimated for clip in group]
    budget = sum(e for e in estimates if e is not None) if all(e is not None for e in estimates) else None
    parameters: dict[str, Any] = {"videos": [clip.asset_id for clip in group]}
    if run.needs_estimates and budget is not None:
        parameters["budget_creative_units"] = budget
    for clip in group:
        clip.release()
    try:
        outcome = await children.run(index, parameters)
    except Exception as exc:
        for clip in group:
            clip.result = clip.failed(exc)
        await run.progress.tick(len(group))
        return
    found = {r.video: r for r in getattr(outcome.result, "clips", [])}
    for clip in group:
        child = found.get(clip.asset_id or "")
        if child is None:
            why = f"child flow run {outcome.flow_run_id} ended {outcome.state_type}: {outcome.message}"
            clip.result = clip.report(status=FAILED, error=why[:ERROR_CHARS])
            continue
        clip.result = child.model_copy(
            update={
                "video": clip.source.given,
                "source": clip.source.name,
                "notes": [*clip.notes, *child.notes, f"ran in flow run {outcome.flow_run_id}"],
            }
        )
    await run.progress.tick(len(group))


async def run_batch(recipe: ModelRecipe, options: BatchOptions) -> State[BatchResult]:
    """Run one model over every clip of a batch (the body of both batch flows).

    Args:
        recipe: how the model checks a clip and builds its request(s).
        options: the clips, destination, budget and concurrency limit.

    Returns:
        The final state: Completed when no clip failed, Failed otherwise; its data is the BatchResult.
    """
    logger = get_run_logger()
    started = time.time()
    name = model_name(recipe.model_id)
    suspends = _suspends(options)
    # Checked first: a batch that cannot be spread must not have uploaded anything.
    deployment_id = None if options.dry_run else fan_out_deployment(options.clips_per_flow_run)
    credentials = await resolve_credentials(options.credentials)
    video_storage = await load_source_storage(options.video_storage)
    destination_storage = await load_destination_storage(options.destination_storage)
    flow_run_id = current_flow_run_id() or ""
    record = await load_batch_record(flow_run_id) if suspends else None
    if record is not None:
        # A resumed wave: the clips as the first attempt found and prepared them, nothing listed again.
        clips = [BatchClip.restored(entry, video_storage) for entry in record.clips]
        started = record.started_at
    else:
        videos = await find_videos(options.videos, options.folder, options.pattern, video_storage)
        clips = [BatchClip(source=ClipSource.of(video, video_storage)) for video in videos]
    limit_name = options.concurrency_limit_name or None
    limit_size = None
    if limit_name is not None and not options.dry_run:
        limit_size = await ensure_global_concurrency_limit(limit_name, options.concurrency_limit)
    watch = CeilingWatch(limit_name=limit_name, limit_size=limit_size)
    if record is None:
        logger.info(
            "%s batch: %d clip(s); budget %s; at most %s job(s) in flight (%s)%s",
            name,
            len(clips),
            format_units(options.budget_creative_units, unit=True, missing="no limit"),
            limit_size if limit_size is not None else "any number of",
            f"global concurrency limit {limit_name!r}" if limit_name else "no global concurrency limit",
            "; suspends while its jobs run" if suspends else "",
        )
    progress = BatchProgress(total=len(clips))
    if clips:
        progress.artifact_id = await acreate_progress_artifact(
            progress=0.0,
            key=artifact_key(recipe.flow_slug, "progress"),
            description=f"{name} batch: clips finished out of {len(clips)}",
        )
    needs_estimates = options.budget_creative_units is not None or options.dry_run
    slots = SlotPool(limit_name, limit_size)
    jobs = JobRunner(
        credentials=credentials,
        destination=options.destination,
        destination_storage=destination_storage,
        timeout_seconds=options.timeout_seconds,
        reuse_across_runs=recipe.reuse_across_runs,
        refresh=options.refresh,
        submit=ceiling_aware_submit(watch),
        # Suspended, the batch holds its slots as leases of its own (Waves), not in a live pool.
        slots=None if suspends else slots,
        # Inline, not a task run per wait: the batch's log, progress bar and table show every job.
        wait_as_task=False,
        # Unpriced clips (no budget) are priced by their submit: one task run fewer per clip.
        estimate_as_task=False,
    )
    run = _Run(
        recipe=recipe,
        jobs=jobs,
        progress=progress,
        prepare_gate=asyncio.Semaphore(PREPARE_CONCURRENCY),
        needs_estimates=needs_estimates,
        children=_children(deployment_id),
        clips_per_flow_run=options.clips_per_flow_run or 1,
    )
    if suspends:
        run.waves = batch_waves(
            jobs,
            recipe.model_id,
            SlotLeases(limit_name, flow_run_id),
            flow_run_id,
            run.succeeded,
            progress.tick,
            fetch_source=recipe.review_layers,
        )
    # Job ids go onto the run's labels in the background: no slot waits on a label write.
    with deferred_job_labels():
        try:
            if record is not None and run.waves is not None:
                await progress.tick(sum(1 for c in clips if c.result is not None))
                await run_batch_waves(run.waves, clips, record, run.stitch)
                planned = record.planned
            else:
                planned = await _run_clips(run, clips, options.budget_creative_units, options.dry_run)
        finally:
            await slots.aclose()  # every slot back to the limit
            await progress.flush()
            await drain_job_labels()
            for clip in clips:
                clip.release()

    results = [clip.result for clip in clips if clip.result is not None]
    if not needs_estimates:
        # Each submit priced its own job: the plan is what the submitted clips were estimated at.
        planned = sum(
            r.estimated_creative_units or 0.0 for r in results if r.job_id is not None or r.chunk_job_ids
        )
    result = BatchResult(
        model_id=recipe.model_id,
        clips=results,
        budget_creative_units=options.budget_creative_units,
        planned_creative_units=planned,
        creative_units_cost=sum(r.creative_units_cost or 0.0 for r in results if not r.reused),
        concurrency_limit_name=limit_name,
        concurrency_limit=limit_size,
        ceiling_refusals=watch.refusals,
        destination=options.destination,
        storage=destination_storage.get_block_type_slug() if destination_storage is not None else None,
        duration_seconds=round(time.time() - started, 3),
        dry_run=options.dry_run,
    )
    try:
        await publish_batch_artifacts(recipe.flow_slug, result)
    except Exception as exc:
        logger.warning("Artifacts of this batch were not all created (%s: %s)", type(exc).__name__, exc)
    message = result.message()
    if result.failed:
        logger.error(message)
        return Failed(message=message, data=result)
    logger.info(message)
    return Completed(message=message, data=result)


def _suspends(options: BatchOptions) -> bool:
    """True for a batch that suspends while its jobs run; refused at the door where it cannot."""
    if options.wait == "suspend" and options.clips_per_flow_run:
        raise InputValidationError(
            "wait='suspend' with clips_per_flow_run: a spread batch waits on its child flow runs, and "
            "cannot suspend while they run. Use one or the other. Nothing was uploaded or spent.",
            field="wait",
        )
    return check_wait_mode(options.wait) == "suspend" and not options.dry_run


def _children(deployment_id: Any) -> ChildRuns | None:
    """The children of a spread batch: this run's own parameters, but for the clips and the budget."""
    if deployment_id is None:
        return None
    context = FlowRunContext.get()
    assert context is not None
    assert context.flow_run is not None
    parent = context.flow_run
    # A child gets uploaded asset ids: nothing to list, fetch or spread again. Every field is sent,
    # null included (the Run form's schema allows null for each): a field left out would take the
    # deployment's default instead of the parent's value, e.g. prefect.yaml's budget of 500 for a
    # batch run without one, or the default concurrency limit for a batch run without any.
    cleared = {"videos", "folder", "pattern", "video_storage", "clips_per_flow_run", "budget_creative_units"}
    shared = {name: None if name in cleared else value for name, value in (parent.parameters or {}).items()}
    shared.update(dict.fromkeys(cleared), dry_run=False)
    return ChildRuns(deployment_id=deployment_id, parent_id=str(parent.id), base_parameters=shared)


__all__ = ["BatchOptions", "ModelRecipe", "run_batch"]
