"""The "aleph-edit" flow: rewrite the look of a clip from a prompt with Runway Aleph 2."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.filesystems import ReadableFileSystem, WritableFileSystem
from prefect.logging import get_run_logger

from prefect_scenario.blocks import ScenarioCredentials, resolve_credentials
from prefect_scenario.flows._common import (
    GenerationOptions,
    GenerationRequest,
    Stopwatch,
    check_video,
    local_clip,
    readable,
    run_generation,
    source_name,
)
from prefect_scenario.flows.result import ScenarioRunResult
from prefect_scenario.hooks import cancel_remote_jobs
from prefect_scenario.models import ALEPH_MODEL_ID, AlephInput, Keyframe, PromptImage
from prefect_scenario.tasks import upload_image, upload_video
from prefect_scenario.validation import (
    KeyframeSpec,
    PromptImageSpec,
    validate_aleph_inputs,
)

FLOW_NAME = "aleph-edit"


def _run_name() -> str:
    from prefect.runtime import flow_run

    video = str(flow_run.parameters.get("video", ""))
    return f"aleph-{Path(video).name or video}"[:100]


async def _upload_references(
    keyframes: list[KeyframeSpec], prompt_images: list[PromptImageSpec], credentials: ScenarioCredentials
) -> tuple[list[Keyframe], list[PromptImage], dict[str, str]]:
    """Upload the reference images (once per content) and pin them as the wire models want."""
    sources: dict[str, str] = {}
    wire_keyframes: list[Keyframe] = []
    for index, keyframe in enumerate(keyframes):
        asset_id = await upload_image(keyframe.image, credentials=credentials)
        sources[f"keyframes[{index}]"] = keyframe.image
        wire_keyframes.append(Keyframe(uri=asset_id, seconds=keyframe.seconds, at=keyframe.at))
    wire_images: list[PromptImage] = []
    for index, spec in enumerate(prompt_images):
        asset_id = await upload_image(spec.image, credentials=credentials)
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


@flow(
    name=FLOW_NAME,
    flow_run_name=_run_name,
    description=(
        "Rewrite the look of a video from a prompt with Runway Aleph 2 (motion and structure kept), "
        "optionally guided by reference images, and store the edit with its sha256. With a seed, "
        "the same clip and inputs reuse the earlier job: nothing is paid twice."
    ),
    # Off by default; safe when turned on: the paid submit is persisted, a retry never re-submits.
    retries=0,
    persist_result=True,
    on_cancellation=[cancel_remote_jobs],
    on_crashed=[cancel_remote_jobs],
)
async def aleph_edit(
    video: str,
    prompt: str,
    keyframes: list[KeyframeSpec] | None = None,
    prompt_images: list[PromptImageSpec] | None = None,
    seed: int | None = None,
    destination: str = "scenario-outputs",
    credentials: ScenarioCredentials | str | None = None,
    video_storage: ReadableFileSystem | WritableFileSystem | None = None,
    destination_storage: WritableFileSystem | None = None,
    max_creative_units: float | None = None,
    refresh: bool = False,
    timeout_seconds: float = 3600,
    dry_run: bool = False,
) -> ScenarioRunResult:
    """Edit a video from a prompt with Runway Aleph 2.

    Args:
        video: The clip (at most 30 s and 16 MiB): a local path, a path inside the video storage
            block, or a Scenario asset id (asset_...).
        prompt: The edit, up to 1000 characters (e.g. "turn it into a watercolour painting").
        keyframes: Up to 5 reference images pinned to times of the input clip (seconds, or "at"
            as a fraction 0 to 1); local paths or asset ids. Not together with prompt images.
        prompt_images: Up to 5 reference images placed in the output (timestamp in seconds, or
            position 0 to 1); local paths or asset ids. Not together with keyframes.
        seed: 0 to 4294967295 for a repeatable result. With a seed, a later run with the same
            inputs reuses this run's job; without one, every run is a new generation.
        destination: Where the edit goes: a local directory, or a folder inside the destination
            storage block. Each job gets its own sub-folder.
        credentials: A saved Scenario Credentials block (or its name). Empty: the
            SCENARIO_SDK_API_KEY / SCENARIO_SDK_API_SECRET environment variables of the run.
        video_storage: A storage block (S3 bucket, local file system) holding the clip.
        destination_storage: A storage block (S3 bucket, ...) for the edit instead of the local disk.
        max_creative_units: Refuse, before spending, when the estimate is above this many creative units.
        refresh: Pay for a new generation even when an earlier run had the same inputs and seed.
        timeout_seconds: How long to wait for the job. The job itself goes on past it.
        dry_run: Only check the inputs, upload them (free) and estimate the cost; submit nothing.

    Returns:
        The job, what it cost, the stored edit (path, size, sha256) and the time of each phase.

    Raises:
        InputValidationError: an input is wrong (nothing was uploaded or spent).
        BudgetExceededError: the estimate is above max_creative_units (nothing was spent).
        JobFailedError: the job failed; the error carries Scenario's error and hint.
    """
    clock = Stopwatch()
    logger = get_run_logger()
    keyframes = list(keyframes or [])
    prompt_images = list(prompt_images or [])
    with clock.phase("validate"):
        probe = await check_video(
            video,
            video_storage,
            lambda local: validate_aleph_inputs(local, prompt, keyframes, prompt_images, seed),
        )
    creds = await resolve_credentials(credentials)
    if probe is not None:
        logger.info(
            "Clip %s checked: %.1f s, %dx%d, %s bytes; %d keyframe(s), %d prompt image(s)",
            Path(video).name,
            probe.duration_seconds,
            probe.width,
            probe.height,
            probe.size_bytes,
            len(keyframes),
            len(prompt_images),
        )
    with clock.phase("upload"):
        asset_id = await upload_video(video, credentials=creds, storage=readable(video_storage))
        wire_keyframes, wire_images, sources = await _upload_references(keyframes, prompt_images, creds)
    body = AlephInput(
        prompt=prompt,
        video=asset_id,
        keyframes=wire_keyframes or None,
        prompt_image=wire_images or None,
        seed=seed,
    ).to_body()
    request = GenerationRequest(
        flow_slug=FLOW_NAME,
        model_id=ALEPH_MODEL_ID,
        body=body,
        sources={"video": source_name(video, video_storage), **sources},
        source_video=local_clip(video, video_storage),
    )
    options = GenerationOptions(
        credentials=creds,
        destination=destination,
        destination_storage=destination_storage,
        max_creative_units=max_creative_units,
        # Without a seed the user asked for a fresh random result: reusing an earlier job would
        # silently hand back the same one. With a seed, the same inputs mean the same edit.
        reuse_across_runs=seed is not None,
        refresh=refresh,
        timeout_seconds=timeout_seconds,
        dry_run=dry_run,
    )
    return await run_generation(request, options, clock)
