"""The "aleph-edit" flow: rewrite the look of a clip from a prompt with Runway Aleph 2."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prefect.filesystems import WritableFileSystem
from prefect.logging import get_run_logger

from prefect_scenario import video as media
from prefect_scenario.blocks import ScenarioCredentials, resolve_credentials
from prefect_scenario.budget import check_budget
from prefect_scenario.clip_source import ClipSource, SourceStorage
from prefect_scenario.concurrency import (
    DEFAULT_LIMIT_NAME,
    DEFAULT_PARALLEL_JOBS,
    CeilingWatch,
    existing_limit_size,
)
from prefect_scenario.flows._arguments import options_from
from prefect_scenario.flows._chunk_waves import (
    ChunkRecord,
    load_chunk_record,
    new_chunk_record,
    restored_plan,
    run_chunk_waves,
)
from prefect_scenario.flows._common import (
    GenerationOptions,
    GenerationRequest,
    log_clip_checked,
    report_run,
    run_generation,
    storage_slug,
)
from prefect_scenario.flows._flow import clip_run_name, scenario_flow
from prefect_scenario.flows._job import JobRunner, ceiling_aware_submit
from prefect_scenario.flows._stopwatch import Stopwatch
from prefect_scenario.flows._suspend import check_wait_mode
from prefect_scenario.flows.aleph_chunks import (
    DEFAULT_CHUNK_RETRIES,
    AlephEdit,
    ChunkPlan,
    chunks_failure,
    finish_chunks,
    plan_chunks,
    run_chunks,
)
from prefect_scenario.flows.reporting import model_name
from prefect_scenario.flows.result import ESTIMATED, ChunkResult, ScenarioRunResult
from prefect_scenario.formatting import format_units, mebibytes
from prefect_scenario.models import ALEPH_MAX_VIDEO_BYTES, ALEPH_MODEL_ID, Keyframe, PromptImage
from prefect_scenario.run_context import current_flow_run_id
from prefect_scenario.slot_leases import SlotLeases
from prefect_scenario.slot_pool import SlotPool
from prefect_scenario.storage import load_destination_storage, load_source_storage, new_temp_dir
from prefect_scenario.tasks import upload_image, upload_video
from prefect_scenario.tasks.upload import ensure_uploaded
from prefect_scenario.validation import (
    ALEPH_FIT_MAX_FPS,
    ClipHandling,
    KeyframeSpec,
    PromptImageSpec,
    plan_aleph_clip,
    validate_aleph_inputs,
)
from prefect_scenario.waiting import WaitMode

FLOW_NAME = "aleph-edit"


async def _upload_references(
    keyframes: list[KeyframeSpec], prompt_images: list[PromptImageSpec], credentials: ScenarioCredentials
) -> tuple[list[Keyframe], list[PromptImage], dict[str, str]]:
    """Upload the reference images (once per content) and pin them as the wire models want."""
    sources: dict[str, str] = {}
    wire_keyframes: list[Keyframe] = []
    for index, keyframe in enumerate(keyframes):
        asset_id = await ensure_uploaded(upload_image, keyframe.image, credentials=credentials)
        sources[f"keyframes[{index}]"] = keyframe.image
        wire_keyframes.append(Keyframe(uri=asset_id, seconds=keyframe.seconds, at=keyframe.at))
    wire_images: list[PromptImage] = []
    for index, spec in enumerate(prompt_images):
        asset_id = await ensure_uploaded(upload_image, spec.image, credentials=credentials)
        sources[f"promptImage[{index}]"] = spec.image
        if spec.timestamp_seconds is not None:
            wire_images.append(
                PromptImage(uri=asset_id, position_type="timestamp", timestamp_seconds=spec.timestamp_seconds)
            )
        else:
            wire_images.append(
                PromptImage(
                    uri=asset_id, position_type="position", position_percentage=spec.position_percentage
                )
            )
    return wire_keyframes, wire_images, sources


async def fit_clip(source: Path, probe: media.VideoProbe, out_dir: Path) -> tuple[Path, str]:
    """Re-encode a clip as H.264 within Runway Aleph 2's 16 MiB, at most 30 fps.

    Args:
        source: the local clip.
        probe: its probe.
        out_dir: where the fitted copy goes.

    Returns:
        The fitted clip, and a note saying what changed (for the result and the summary).

    Raises:
        MediaError: no bitrate fits (the clip is too long for the byte budget).
    """
    out = out_dir / f"{source.stem}-fitted.mp4"
    try:
        fitted = await asyncio.to_thread(
            media.fit_to_limits, source, out, max_bytes=ALEPH_MAX_VIDEO_BYTES, max_fps=ALEPH_FIT_MAX_FPS
        )
    except media.MediaError as exc:
        raise media.MediaError(
            f"video {source.name} cannot be fitted to Runway Aleph 2's limits: {exc}", field="video"
        ) from None
    note = (
        f"the clip was re-encoded to fit Runway Aleph 2's limits (fit_to_limits): "
        f"{mebibytes(probe.size_bytes)}, {probe.frame_rate:g} fps, {probe.video_codec} became "
        f"{mebibytes(fitted.size_bytes)}, {fitted.frame_rate:g} fps, H.264"
    )
    get_run_logger().info("Clip %s: %s", source.name, note)
    return out, note


@dataclass(frozen=True)
class ChunkSettings:
    """How the chunks of a split edit run.

    Attributes:
        max_parallel_chunks: chunk jobs in flight at once, at most.
        chunk_retries: new jobs for a chunk whose job failed on the server.
        concurrency_limit_name: the Prefect global concurrency limit the batches use; chunk jobs
            hold a slot of it too when it exists on the server (it is never created here).
    """

    max_parallel_chunks: int = DEFAULT_PARALLEL_JOBS
    chunk_retries: int = DEFAULT_CHUNK_RETRIES
    concurrency_limit_name: str | None = None


async def _chunk_slots(settings: ChunkSettings) -> SlotPool:
    """The slots a split edit's chunk jobs hold: the batches' limit when it exists, bounded by
    ``max_parallel_chunks`` either way. A single edit never creates the limit (that is the batches'
    call, sized to the team's ceiling); it only joins it, so split edits and batches share one count.
    """
    parallel = max(1, settings.max_parallel_chunks)
    size = await existing_limit_size(settings.concurrency_limit_name)
    if size is None:
        return SlotPool(None, parallel)
    return SlotPool(settings.concurrency_limit_name, min(size, parallel))


def _log_chunk_jobs(plan: ChunkPlan, parallel: int | None, limit_name: str | None, *, suspends: bool) -> None:
    get_run_logger().info(
        "Running %d chunk jobs, at most %d at once%s%s",
        len(plan.chunks),
        parallel,
        f", inside the global concurrency limit {limit_name!r}" if limit_name else "",
        "; this flow run suspends while they run" if suspends else "",
    )


async def _chunks_in_waves(
    plan: ChunkPlan,
    record: ChunkRecord | None,
    options: GenerationOptions,
    settings: ChunkSettings,
    clock: Stopwatch,
) -> tuple[JobRunner, list[ChunkResult]]:
    """The chunk jobs in ``wait="suspend"`` mode: bought in waves, the run suspended between them.

    The chunks hold slots of the batches' limit (when it exists) as leases that outlive the
    process, as a suspended batch's clips do; ``max_parallel_chunks`` bounds them either way.
    """
    flow_run_id = current_flow_run_id() or ""
    parallel = max(1, settings.max_parallel_chunks)
    size = await existing_limit_size(settings.concurrency_limit_name)
    limit_name = settings.concurrency_limit_name if size is not None else None
    if record is None:
        _log_chunk_jobs(plan, parallel if size is None else min(size, parallel), limit_name, suspends=True)
        record = new_chunk_record(plan, settings.chunk_retries)
    watch = CeilingWatch(limit_name=limit_name, limit_size=size)
    jobs = replace(options.runner(), submit=ceiling_aware_submit(watch))
    with clock.phase("wait"):
        results = await run_chunk_waves(
            plan,
            record,
            jobs,
            leases=SlotLeases(limit_name, flow_run_id),
            flow_run_id=flow_run_id,
            max_parallel=parallel,
        )
    return jobs, results


async def edit_in_chunks(
    edit: AlephEdit,
    source: Path,
    probe: media.VideoProbe,
    options: GenerationOptions,
    settings: ChunkSettings,
    clock: Stopwatch,
) -> ScenarioRunResult:
    """Edit a clip over Runway Aleph 2's limits in chunks and stitch them back (see ``aleph_chunks``).

    Returns:
        The result: ``outputs`` holds the stitched video, ``chunks`` every chunk's job, cost and
        outputs; ``creative_units_cost`` is the sum over the chunks.

    Raises:
        BudgetExceededError: the chunks' total estimate is above ``max_creative_units``; nothing spent.
        ChunksFailedError: chunks failed after their retries; nothing was stitched, and the finished
            chunks' outputs are stored.
        MediaError: the clip could not be split within the limits.
    """
    logger = get_run_logger()
    name = model_name(ALEPH_MODEL_ID)
    scratch = new_temp_dir()
    suspends = options.wait_mode == "suspend" and not options.dry_run
    try:
        # A resumed wave: the chunks as the first attempt cut, uploaded and priced them.
        record = await load_chunk_record(current_flow_run_id() or "") if suspends else None
        with clock.phase("prepare"):
            if record is None:
                plan = await plan_chunks(edit, source, probe, scratch, options.runner())
            else:
                plan = restored_plan(record.clips, edit, source, probe, scratch)
        check_budget(
            f"{name} on the whole clip ({len(plan.chunks)} chunks: {plan.estimates_line()})",
            plan.estimated,
            options.max_creative_units,
            cheaper="use a shorter clip",
        )
        request = GenerationRequest(
            flow_slug=FLOW_NAME, model_id=ALEPH_MODEL_ID, body={}, sources=edit.sources, notes=(plan.note(),)
        )
        base: dict[str, Any] = {
            "model_id": ALEPH_MODEL_ID,
            "job_id": None,
            "inputs": edit.inputs,
            "sources": edit.sources,
            "destination": str(options.destination),
            "storage": storage_slug(options.destination_storage),
            "estimated_creative_units": plan.estimated,
            "notes": list(request.notes),
        }
        if options.dry_run:
            logger.info(
                "Dry run: %s would cost about %s creative units for the %d chunks; nothing was submitted",
                name,
                format_units(plan.estimated),
                len(plan.chunks),
            )
            result = ScenarioRunResult(
                **base, status=ESTIMATED, chunks=plan.dry_run_results(), timings=clock.timings()
            )
            return await report_run(request, options, result, clock)
        if suspends:
            jobs, results = await _chunks_in_waves(plan, record, options, settings, clock)
        else:
            async with await _chunk_slots(settings) as slots:
                _log_chunk_jobs(plan, slots.size, slots.name, suspends=False)
                watch = CeilingWatch(limit_name=slots.name, limit_size=slots.size)
                jobs = replace(options.runner(), submit=ceiling_aware_submit(watch), slots=slots)
                with clock.phase("wait"):
                    results = await run_chunks(plan, jobs, retries=settings.chunk_retries)
        error = chunks_failure(results)
        if error is not None:
            result = ScenarioRunResult(**base, status="failure", chunks=results, timings=clock.timings())
            await report_run(request, options, result, clock)
            raise error
        with clock.phase("stitch"):
            stitched = await finish_chunks(results, plan, jobs)
        result = ScenarioRunResult(
            **base,
            status="success",
            creative_units_cost=stitched.creative_units_cost,
            outputs=[stitched.output],
            chunks=results,
            reused=stitched.reused,
            timings=clock.timings(),
        )
        result = await report_run(request, options, result, clock, preview=stitched.preview)
        logger.info(
            "%s finished: %d chunk jobs stitched into %s (%s creative units)",
            name,
            len(results),
            stitched.output.location,
            format_units(result.creative_units_cost),
        )
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@scenario_flow(
    FLOW_NAME,
    run_name=clip_run_name("aleph"),
    description=(
        "Rewrite the look of a video from a prompt with Runway Aleph 2 (motion and structure kept), "
        "optionally guided by reference images, and store the edit with its sha256. A clip over 30 s "
        "or 16 MiB is refused unless you allow splitting it (edited in chunks, stitched back with its "
        "audio) or fitting it (re-encoded). With a seed, the same clip and inputs reuse the earlier "
        "job: nothing is paid twice."
    ),
)
async def aleph_edit(
    video: str,
    prompt: str,
    keyframes: list[KeyframeSpec] | None = None,
    prompt_images: list[PromptImageSpec] | None = None,
    seed: int | None = None,
    destination: str = "scenario-outputs",
    credentials: ScenarioCredentials | str | None = None,
    video_storage: SourceStorage | str | None = None,
    destination_storage: WritableFileSystem | str | None = None,
    max_creative_units: float | None = None,
    refresh: bool = False,
    timeout_seconds: float = 3600,
    dry_run: bool = False,
    allow_split: bool = False,
    fit_to_limits: bool = False,
    max_parallel_chunks: int = DEFAULT_PARALLEL_JOBS,
    chunk_retries: int = DEFAULT_CHUNK_RETRIES,
    concurrency_limit_name: str | None = DEFAULT_LIMIT_NAME,
    wait: WaitMode = "inline",
) -> ScenarioRunResult:
    """Edit a video from a prompt with Runway Aleph 2.

    Args:
        video: The clip (at most 30 s and 16 MiB, unless splitting or fitting is allowed): a local
            path, a path inside the video storage block, or a Scenario asset id (asset_...).
        prompt: The edit, up to 1000 characters (e.g. "turn it into a watercolour painting").
        keyframes: Up to 5 reference images pinned to times of the input clip (seconds, or "at"
            as a fraction 0 to 1); local paths or asset ids. Not together with prompt images.
        prompt_images: Up to 5 reference images placed in the output (timestamp in seconds, or
            position 0 to 1); local paths or asset ids. Not together with keyframes.
        seed: 0 to 4294967295 for a repeatable result. With a seed, a later run with the same
            inputs reuses this run's job; without one, every run is a new generation.
        destination: $destination
        credentials: $credentials
        video_storage: $clip_storage
        destination_storage: $destination_storage
        max_creative_units: $max_creative_units
        refresh: Pay for a new generation even when an earlier run had the same inputs and seed.
        timeout_seconds: How long to wait for the job (each chunk's job). The job goes on past it.
        dry_run: Only check the inputs, upload them (free) and estimate the cost; submit nothing.
            For a clip that is split, every chunk is estimated and the total is shown.
        allow_split: A clip over 30 s (or over 16 MiB, when fitting is off) is cut into chunks
            within the limits, at scene cuts or keyframes where possible; the chunks are edited in
            parallel with the same prompt and seed, each keyframe or prompt image going to the chunk
            holding its time, and stitched back into one video with the source's audio. The budget
            applies to the total. Off: such a clip is refused before anything is uploaded.
        fit_to_limits: A clip over 16 MiB (or over 30 fps) is re-encoded as H.264 at a bitrate
            that fits 16 MiB and at most 30 fps, and edited as one clip; the result says so. Off:
            such a clip is refused (or split, when splitting is allowed).
        max_parallel_chunks: Chunk jobs in flight at once, at most (a split clip only).
        chunk_retries: New jobs for a chunk whose job failed on Scenario's side (not for a refused
            input). The edit is never stitched from a partial set.
        concurrency_limit_name: The Prefect global concurrency limit the batch flows use; chunk
            jobs hold a slot of it too when it exists on the server (it is not created here).
        wait: $wait

    Returns:
        The job, what it cost, the stored edit (path, size, sha256) and the time of each phase.
        For a split clip: ``outputs`` is the stitched video, ``chunks`` lists every chunk's job,
        cost and outputs, ``creative_units_cost`` is their total and ``job_id`` is None.

    Raises:
        InputValidationError: an input is wrong (nothing was uploaded or spent).
        BudgetExceededError: the estimate (for a split clip, the total) is above
            max_creative_units (nothing was spent).
        JobFailedError: the job failed; the error carries Scenario's error and hint. For a split
            clip, ChunksFailedError names the failed chunks (the finished ones stay stored).

    Example:
        ```python
        import asyncio
        from prefect_scenario.flows import aleph_edit
        from prefect_scenario.validation import KeyframeSpec

        result = asyncio.run(aleph_edit("clip.mp4", "a rainy noir night", seed=7,
                                        keyframes=[KeyframeSpec(image="ref.png", seconds=2.5)],
                                        credentials="scenario-prod", destination="out/edit"))
        ```
    """
    clock = Stopwatch()
    wait_mode = check_wait_mode(wait)
    keyframes = list(keyframes or [])
    prompt_images = list(prompt_images or [])
    source_storage = await load_source_storage(video_storage)
    destination_storage = await load_destination_storage(destination_storage)
    clip = ClipSource.of(video, source_storage)
    async with contextlib.AsyncExitStack() as stack:
        with clock.phase("validate"):
            # Fetched once (from a block): the probe, the upload, a fit or a split all read this copy.
            local = await stack.enter_async_context(clip.local_copy())
            probe = await asyncio.to_thread(
                validate_aleph_inputs,
                local,
                prompt,
                keyframes,
                prompt_images,
                seed,
                enforce_clip_limits=False,
            )
            # An asset id cannot be probed here: the API checks its limits at submit, before any job.
            handling: ClipHandling = (
                plan_aleph_clip(probe, allow_split=allow_split, fit_to_limits=fit_to_limits)
                if probe is not None
                else "as_is"
            )
        creds = await resolve_credentials(credentials)
        log_clip_checked(clip, probe, f"; {len(keyframes)} keyframe(s), {len(prompt_images)} prompt image(s)")
        # Without a seed the user asked for a fresh random result: reusing an earlier job would
        # silently hand back the same one. With a seed, the same inputs mean the same edit.
        reuse = seed is not None
        options = options_from(GenerationOptions, locals(), credentials=creds, reuse_across_runs=reuse)
        edit = AlephEdit(
            clip=clip, local=local, prompt=prompt, keyframes=keyframes, prompt_images=prompt_images, seed=seed
        )
        if handling == "split":
            assert probe is not None
            assert local is not None
            settings = options_from(ChunkSettings, locals())
            return await edit_in_chunks(edit, local, probe, options, settings, clock)
        if handling == "fit":
            assert probe is not None
            assert local is not None
            scratch = new_temp_dir()
            stack.callback(shutil.rmtree, scratch, True)
            with clock.phase("prepare"):
                fitted, note = await fit_clip(local, probe, scratch)
            return await _edit_one_clip(edit, options, clock, fitted=fitted, notes=(note,))
        return await _edit_one_clip(edit, options, clock)


async def _edit_one_clip(
    edit: AlephEdit,
    options: GenerationOptions,
    clock: Stopwatch,
    *,
    fitted: Path | None = None,
    notes: tuple[str, ...] = (),
) -> ScenarioRunResult:
    """One clip, one job: upload, then estimate, submit, wait and store (``fitted``: a re-encoded copy)."""
    creds = options.credentials
    with clock.phase("upload"):
        video_file = fitted or edit.local
        asset_id = edit.clip.asset_id or await ensure_uploaded(
            upload_video, str(video_file), credentials=creds
        )
        wire_keyframes, wire_images, sources = await _upload_references(
            edit.keyframes, edit.prompt_images, creds
        )
    body = edit.body(asset_id, wire_keyframes, wire_images)
    request = GenerationRequest(
        flow_slug=FLOW_NAME,
        model_id=ALEPH_MODEL_ID,
        body=body,
        sources={"video": edit.clip.name, **sources},
        source_video=edit.local,
        fitted_to_limits=fitted is not None,
        notes=notes,
    )
    return await run_generation(request, options, clock)
