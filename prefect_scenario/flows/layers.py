"""The "video-to-layers" flow: split a clip into transparent layers with Scenario's Video to Layers."""

from __future__ import annotations

import asyncio
import contextlib

from prefect.filesystems import WritableFileSystem

from prefect_scenario.blocks import ScenarioCredentials, resolve_credentials
from prefect_scenario.clip_source import ClipSource, SourceStorage
from prefect_scenario.flows._arguments import options_from
from prefect_scenario.flows._common import (
    GenerationOptions,
    GenerationRequest,
    log_clip_checked,
    run_generation,
)
from prefect_scenario.flows._flow import clip_run_name, scenario_flow
from prefect_scenario.flows._stopwatch import Stopwatch
from prefect_scenario.flows._suspend import check_wait_mode
from prefect_scenario.flows.layers_review import Preview, review_layers
from prefect_scenario.flows.result import ScenarioRunResult
from prefect_scenario.models import LAYERS_DEFAULT_LAYERS, VIDEO_LAYERS_MODEL_ID, VideoLayersInput
from prefect_scenario.storage import load_destination_storage, load_source_storage
from prefect_scenario.tasks import upload_video
from prefect_scenario.tasks.upload import ensure_uploaded
from prefect_scenario.validation import validate_layers_inputs
from prefect_scenario.waiting import WaitMode

FLOW_NAME = "video-to-layers"


@scenario_flow(
    FLOW_NAME,
    run_name=clip_run_name("layers"),
    description=(
        "Split a video into transparent layers (the moving foreground objects and the background) "
        "with Scenario's Video to Layers model, and store every layer with its sha256, beside a "
        "composite preview video, a contact sheet and how closely the layers add back up to the "
        "source (PSNR). The same clip and inputs reuse the earlier job: nothing is paid twice."
    ),
)
async def video_to_layers(
    video: str,
    separation_instruction: str,
    max_layers: int = LAYERS_DEFAULT_LAYERS,
    destination: str = "scenario-outputs",
    credentials: ScenarioCredentials | str | None = None,
    video_storage: SourceStorage | str | None = None,
    destination_storage: WritableFileSystem | str | None = None,
    max_creative_units: float | None = None,
    refresh: bool = False,
    timeout_seconds: float = 3600,
    dry_run: bool = False,
    wait: WaitMode = "inline",
) -> ScenarioRunResult:
    """Split a video into layers with transparency, one output per layer.

    Args:
        video: The clip: a local path, a path inside the video storage block, or a Scenario asset
            id (asset_...).
        separation_instruction: How to split the clip: name the objects or the rule, not the scene
            (e.g. "each moving object apart from the background").
        max_layers: At most this many layers, 1 to 10, the background included. The model may
            stop sooner; more layers cost more.
        destination: $destination
        credentials: $credentials
        video_storage: $clip_storage
        destination_storage: $destination_storage
        max_creative_units: $max_creative_units
        refresh: Pay for a new generation even when an earlier run had the same clip and inputs.
        timeout_seconds: How long to wait for the job. The job itself goes on past it.
        dry_run: Only check the inputs, upload them (free) and estimate the cost; submit nothing.
        wait: $wait

    Returns:
        The job, what it cost, the stored layers (paths, sizes, sha256), the previews stored
        beside them (a composite over a checkerboard as MP4, a contact sheet as JPEG), the layers'
        PSNR against the source (``composite_psnr_db``; a warning under 30 dB) and the time of
        each phase.

    Raises:
        InputValidationError: an input is wrong (nothing was uploaded or spent).
        BudgetExceededError: the estimate is above max_creative_units (nothing was spent).
        JobFailedError: the job failed; the error carries Scenario's error and hint.

    Example:
        ```python
        import asyncio
        from prefect_scenario.flows import video_to_layers

        result = asyncio.run(video_to_layers("clip.mp4", "each dancer apart from the stage", max_layers=4,
                                             credentials="scenario-prod", destination="out/layers"))
        print(result.job_id, [output.location for output in result.outputs])
        ```
    """
    clock = Stopwatch()
    wait_mode = check_wait_mode(wait)
    source_storage = await load_source_storage(video_storage)
    destination_storage = await load_destination_storage(destination_storage)
    clip = ClipSource.of(video, source_storage)
    async with contextlib.AsyncExitStack() as stack:
        with clock.phase("validate"):
            # Fetched once (from a block) and used for the probe, the upload and the PSNR review.
            local = await stack.enter_async_context(clip.local_copy())
            probe = await asyncio.to_thread(validate_layers_inputs, local, separation_instruction, max_layers)
        creds = await resolve_credentials(credentials)
        log_clip_checked(clip, probe)
        with clock.phase("upload"):
            asset_id = clip.asset_id or await ensure_uploaded(upload_video, str(local), credentials=creds)
        body = VideoLayersInput(
            video=asset_id, separation_instruction=separation_instruction, max_layers=max_layers
        ).to_body()
        request = GenerationRequest(
            flow_slug=FLOW_NAME,
            model_id=VIDEO_LAYERS_MODEL_ID,
            body=body,
            sources={"video": clip.name},
            source_video=local,
        )
        # The same clip and instruction give the same layers: reuse is what the user wants.
        options = options_from(GenerationOptions, locals(), credentials=creds, reuse_across_runs=True)

        async def review(result: ScenarioRunResult) -> tuple[ScenarioRunResult, Preview | None]:
            return await review_layers(result, source=local, destination_storage=destination_storage)

        return await run_generation(request, options, clock, review=review)
