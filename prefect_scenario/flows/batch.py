"""Batch flows: one model over many clips, within the team's job ceiling and the batch's budget.

``video-to-layers-batch`` (:func:`video_to_layers_batch`) and ``aleph-edit-batch``
(:func:`aleph_edit_batch`) take clips from a list, a local folder, or a folder / key prefix inside a
storage block (a prefect-aws ``S3Bucket``), and run them through the batch engine
(:mod:`prefect_scenario.flows._batch`): prepare (fetch once, check, upload or split, estimate), plan
within the budget, run every job through the one paid path. Each Video to Layers clip is reviewed
(composite preview, contact sheet, PSNR); an Aleph clip over 30 s is edited in chunks and stitched
back with its audio, exactly as ``aleph_edit`` does with ``allow_split``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from prefect.client.schemas.objects import State
from prefect.filesystems import WritableFileSystem

from prefect_scenario import video as media
from prefect_scenario.blocks import ScenarioCredentials
from prefect_scenario.clip_source import ClipSource, SourceStorage
from prefect_scenario.concurrency import DEFAULT_LIMIT_NAME, DEFAULT_PARALLEL_JOBS
from prefect_scenario.flows._arguments import options_from
from prefect_scenario.flows._batch import run_batch
from prefect_scenario.flows._batch_recipe import BatchOptions, ModelRecipe
from prefect_scenario.flows._flow import scenario_flow
from prefect_scenario.flows.aleph_chunks import DEFAULT_CHUNK_RETRIES, AlephEdit
from prefect_scenario.flows.result import BatchResult, ClipResult
from prefect_scenario.models import (
    ALEPH_MODEL_ID,
    LAYERS_DEFAULT_LAYERS,
    VIDEO_LAYERS_MODEL_ID,
    AlephInput,
    VideoLayersInput,
)
from prefect_scenario.storage import find_videos
from prefect_scenario.validation import (
    ClipHandling,
    plan_aleph_clip,
    validate_aleph_inputs,
    validate_layers_inputs,
)

LAYERS_BATCH_FLOW = "video-to-layers-batch"
ALEPH_BATCH_FLOW = "aleph-edit-batch"


def _batch_run_name(prefix: str) -> Callable[[], str]:
    def name() -> str:
        from prefect.runtime import flow_run

        parameters = flow_run.parameters
        folder = parameters.get("folder")
        videos = parameters.get("videos") or []
        if folder:
            what = PurePosixPath(str(folder).replace(os.sep, "/").rstrip("/")).name or str(folder)
        else:
            what = f"{len(videos)}-clips"
        return f"{prefix}-{what}"[:100]

    return name


# ---------------------------------------------------------------------------------------------
# The flows
# ---------------------------------------------------------------------------------------------


@scenario_flow(
    LAYERS_BATCH_FLOW,
    run_name=_batch_run_name("layers-batch"),
    description=(
        "Split many videos into transparent layers with Scenario's Video to Layers: a list of clips, "
        "a folder, or an S3 prefix. At most the global concurrency limit's jobs run at once; a budget "
        "in creative units stops new submissions before it would be passed; one failed clip fails "
        "only itself. Ends with a table of every clip."
    ),
)
async def video_to_layers_batch(
    separation_instruction: str,
    videos: list[str] | None = None,
    folder: str | None = None,
    pattern: str | None = None,
    max_layers: int = LAYERS_DEFAULT_LAYERS,
    destination: str = "scenario-outputs",
    credentials: ScenarioCredentials | str | None = None,
    video_storage: SourceStorage | str | None = None,
    destination_storage: WritableFileSystem | str | None = None,
    budget_creative_units: float | None = None,
    concurrency_limit_name: str | None = DEFAULT_LIMIT_NAME,
    concurrency_limit: int = DEFAULT_PARALLEL_JOBS,
    refresh: bool = False,
    timeout_seconds: float = 3600,
    dry_run: bool = False,
    review: bool = True,
    clips_per_flow_run: int | None = None,
    wait: str = "inline",
) -> State[BatchResult]:
    """Split every clip of a batch into layers with transparency.

    Args:
        separation_instruction: How to split each clip: name the objects or the rule, not the scene
            (e.g. "each moving object apart from the background").
        videos: $videos
        folder: $folder
        pattern: $pattern
        max_layers: At most this many layers per clip, 1 to 10, the background included. More
            layers cost more.
        destination: $destination
        credentials: $credentials
        video_storage: $clips_storage
        destination_storage: $destination_storage
        budget_creative_units: $budget_creative_units
        concurrency_limit_name: $concurrency_limit_name
        concurrency_limit: $concurrency_limit
        refresh: Pay for new generations even when an earlier run had the same clip and inputs.
        timeout_seconds: $batch_timeout_seconds
        dry_run: $batch_dry_run
        review: Look at each clip's layers once stored: a composite preview video and a contact
            sheet beside them, and how closely they add back up to the clip (PSNR, in the table).
            Video work on the worker (in the overhead benchmark it took the batch's CPU from 13 s
            to 29 s for 50 short clips): turn it off for throughput.
        clips_per_flow_run: $clips_per_flow_run
        wait: $batch_wait

    Returns:
        Completed when no clip failed, Failed otherwise; the state's result is the BatchResult.

    Example:
        ```python
        import asyncio
        from prefect_scenario.flows.batch import video_to_layers_batch

        result = asyncio.run(video_to_layers_batch("each moving object apart", folder="incoming/",
                                                   budget_creative_units=500, credentials="scenario-prod"))
        print(result.message())
        ```
    """
    recipe = ModelRecipe(
        flow_slug=LAYERS_BATCH_FLOW,
        model_id=VIDEO_LAYERS_MODEL_ID,
        check=lambda local: validate_layers_inputs(local, separation_instruction, max_layers),
        body=lambda asset_id: VideoLayersInput(
            video=asset_id, separation_instruction=separation_instruction, max_layers=max_layers
        ).to_body(),
        # The same clip and instruction give the same layers: a clip seen before costs nothing.
        reuse_across_runs=True,
        review_layers=review,
    )
    options = options_from(BatchOptions, locals())
    return await run_batch(recipe, options)


@scenario_flow(
    ALEPH_BATCH_FLOW,
    run_name=_batch_run_name("aleph-batch"),
    description=(
        "Edit many videos from one prompt with Runway Aleph 2: a list of clips, a folder, or an S3 "
        "prefix. At most the global concurrency limit's jobs run at once; a budget in creative units "
        "stops new submissions before it would be passed; one failed clip fails only itself. Ends with "
        "a table of every clip."
    ),
)
async def aleph_edit_batch(
    prompt: str,
    videos: list[str] | None = None,
    folder: str | None = None,
    pattern: str | None = None,
    seed: int | None = None,
    destination: str = "scenario-outputs",
    credentials: ScenarioCredentials | str | None = None,
    video_storage: SourceStorage | str | None = None,
    destination_storage: WritableFileSystem | str | None = None,
    budget_creative_units: float | None = None,
    concurrency_limit_name: str | None = DEFAULT_LIMIT_NAME,
    concurrency_limit: int = DEFAULT_PARALLEL_JOBS,
    refresh: bool = False,
    timeout_seconds: float = 3600,
    dry_run: bool = False,
    allow_split: bool = True,
    fit_to_limits: bool = False,
    chunk_retries: int = DEFAULT_CHUNK_RETRIES,
    clips_per_flow_run: int | None = None,
    wait: str = "inline",
) -> State[BatchResult]:
    """Edit every clip of a batch from one prompt with Runway Aleph 2.

    Args:
        prompt: The edit, up to 1000 characters (e.g. "turn it into a watercolour painting").
        videos: Clips one by one: local paths, paths inside the video storage block, or asset ids.
            A clip over 30 s is edited in chunks (see allow_split).
        folder: $folder
        pattern: $pattern
        seed: 0 to 4294967295 for repeatable edits. With a seed, a clip edited before with the same
            inputs reuses that job; without one, every clip is a new generation.
        destination: $destination
        credentials: $credentials
        video_storage: $clips_storage
        destination_storage: $destination_storage
        budget_creative_units: $budget_creative_units
        concurrency_limit_name: $concurrency_limit_name
        concurrency_limit: $concurrency_limit
        refresh: Pay for new generations even when an earlier run had the same inputs and seed.
        timeout_seconds: $batch_timeout_seconds
        dry_run: $batch_dry_run
        allow_split: A clip over 30 s (or over 16 MiB, when fitting is off) is cut into chunks within
            the limits, edited with the same prompt and seed, and stitched back into one video with
            its audio, as aleph-edit does; its estimate for the budget is the chunks' total. Off: such
            a clip fails on its own, before anything is uploaded.
        fit_to_limits: A clip over 16 MiB (or over 30 fps) is re-encoded as H.264 to fit and edited
            as one clip. Off: such a clip is split (or fails, when splitting is off too).
        chunk_retries: New jobs for a chunk whose job failed on Scenario's side. A split clip is
            never stitched from a partial set.
        clips_per_flow_run: $clips_per_flow_run
        wait: $batch_wait

    Returns:
        Completed when no clip failed, Failed otherwise; the state's result is the BatchResult.

    Example:
        ```python
        import asyncio
        from prefect_scenario.flows.batch import aleph_edit_batch

        result = asyncio.run(aleph_edit_batch("a rainy noir night", video_storage="s3-bucket/footage",
                                              folder="incoming/", seed=7, credentials="scenario-prod"))
        ```
    """

    def handling(probe: media.VideoProbe | None) -> ClipHandling:
        if probe is None:
            return "as_is"
        return plan_aleph_clip(probe, allow_split=allow_split, fit_to_limits=fit_to_limits)

    def edit(clip: ClipSource, local: Path | None) -> AlephEdit:
        return AlephEdit(clip=clip, local=local, prompt=prompt, seed=seed)

    recipe = ModelRecipe(
        flow_slug=ALEPH_BATCH_FLOW,
        model_id=ALEPH_MODEL_ID,
        check=lambda local: validate_aleph_inputs(local, prompt, seed=seed, enforce_clip_limits=False),
        body=lambda asset_id: AlephInput(prompt=prompt, video=asset_id, seed=seed).to_body(),
        # Without a seed each edit is meant to be a new draw; with one, the same inputs mean the same edit.
        reuse_across_runs=seed is not None,
        handling=handling,
        edit=edit,
        chunk_retries=chunk_retries,
    )
    options = options_from(BatchOptions, locals())
    return await run_batch(recipe, options)


__all__ = [
    "ALEPH_BATCH_FLOW",
    "LAYERS_BATCH_FLOW",
    "BatchOptions",
    "BatchResult",
    "ClipResult",
    "ModelRecipe",
    "aleph_edit_batch",
    "find_videos",
    "run_batch",
    "video_to_layers_batch",
]
