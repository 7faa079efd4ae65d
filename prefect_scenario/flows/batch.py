"""Batch flows: one model over many clips, within the team's job ceiling and the batch's budget.

``video-to-layers-batch`` (:func:`video_to_layers_batch`) and ``aleph-edit-batch``
(:func:`aleph_edit_batch`) take clips from a list, a local folder, or a folder / key prefix inside a
storage block (a prefect-aws ``S3Bucket``), and run every clip in ONE flow run as plain tasks (no
subflow per clip: a batch of a thousand clips is five thousand small task runs, not a thousand flow
runs). What each clip goes through:

1. **prepare** (a few clips at a time): the local checks, the upload (cached by content), and, when
   a budget is set or for a dry run, the dry-run estimate;
2. **plan** (in the given order): with a budget, every estimate is known before anything is spent;
   clips are admitted while the running total of their estimates stays within the budget, and from
   the first one that would pass it on, every clip is reported ``skipped: budget``;
3. **run** (all admitted clips at once): a slot of the global concurrency limit is held from the
   submit until the job is terminal (what the API counts as "in flight"), then released before the
   download so the next clip can start. A 429 from Scenario's own ceiling is waited out as a task
   retry, never a failure (see :mod:`prefect_scenario.concurrency`).

A failure (a bad clip, a failed job, a lost download) ends only its own clip. The flow run ends with
a table artifact of every clip (status, job, cost, outputs), a summary, and a final state that says
what happened: Completed when no clip failed (its message names clips skipped by the budget), Failed
otherwise. Either way the state's result is the :class:`BatchResult`.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, cast
from uuid import UUID

from prefect import flow
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.blocks.core import Block
from prefect.client.schemas.objects import State
from prefect.filesystems import LocalFileSystem, ReadableFileSystem, WritableFileSystem
from prefect.logging import get_run_logger
from prefect.states import Completed, Failed
from pydantic import BaseModel, ConfigDict, Field

from prefect_scenario.blocks import ScenarioCredentials, resolve_credentials
from prefect_scenario.concurrency import (
    DEFAULT_LIMIT_NAME,
    DEFAULT_PARALLEL_JOBS,
    CeilingWatch,
    SlotPool,
    ensure_global_concurrency_limit,
)
from prefect_scenario.errors import InputValidationError
from prefect_scenario.flows._common import (
    came_from_earlier_run,
    ceiling_aware_submit,
    check_video,
    source_name,
    storage_slug,
)
from prefect_scenario.flows.reporting import artifact_key, model_name
from prefect_scenario.hooks import cancel_remote_jobs
from prefect_scenario.manifest import StoredOutput, SubmittedJob
from prefect_scenario.models import (
    ALEPH_MODEL_ID,
    LAYERS_DEFAULT_LAYERS,
    VIDEO_LAYERS_MODEL_ID,
    AlephInput,
    CostEstimate,
    VideoLayersInput,
)
from prefect_scenario.storage import is_s3_bucket
from prefect_scenario.tasks import download_outputs, estimate_job, upload_video
from prefect_scenario.tasks._runtime import deferred_job_labels, drain_job_labels
from prefect_scenario.tasks.submit import mark_delivered, settle_earlier_run
from prefect_scenario.tasks.upload import ensure_uploaded
from prefect_scenario.tasks.wait import wait_inline
from prefect_scenario.validation import validate_aleph_inputs, validate_layers_inputs

LAYERS_BATCH_FLOW = "video-to-layers-batch"
ALEPH_BATCH_FLOW = "aleph-edit-batch"

# What a folder listing keeps when no pattern is given.
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".webm", ".mkv"})
# Clips checked and uploaded at once. Uploads share the machine's bandwidth and each probe decodes a
# clip: a handful in parallel keeps both busy without drowning either. Jobs are not bounded by this.
PREPARE_CONCURRENCY = 8
# Longest error text kept per clip (the table and the final state message stay readable).
ERROR_CHARS = 300

# Where clips may live. prefect-aws's S3Bucket is a WritableFileSystem only (it reads as well; Prefect's
# classes just do not say so), so both kinds are accepted.
SourceStorage = ReadableFileSystem | WritableFileSystem

ClipStatus = Literal["succeeded", "failed", "skipped: budget", "estimated"]
SUCCEEDED: ClipStatus = "succeeded"
FAILED: ClipStatus = "failed"
SKIPPED_BUDGET: ClipStatus = "skipped: budget"
ESTIMATED: ClipStatus = "estimated"


class ClipResult(BaseModel):
    """What happened to one clip of a batch.

    Attributes:
        video: the clip as given (a path, a path inside the video storage block, or an asset id).
        source: where it came from, as recorded (``s3-bucket:incoming/a.mp4`` for a block).
        status: ``succeeded``, ``failed``, ``skipped: budget``, or ``estimated`` (dry run).
        job_id: the Scenario job, once one exists.
        estimated_creative_units: the dry-run estimate, when one was taken.
        creative_units_cost: what the job cost (None when no job ran).
        reused: True when the job came from an earlier flow run (nothing spent by this batch).
        outputs: the stored outputs, by output index.
        error: why the clip failed or was skipped.
    """

    model_config = ConfigDict(frozen=True)

    video: str
    source: str
    status: ClipStatus
    job_id: str | None = None
    estimated_creative_units: float | None = None
    creative_units_cost: float | None = None
    reused: bool = False
    outputs: list[StoredOutput] = Field(default_factory=list)
    error: str | None = None

    @property
    def stored_in(self) -> str | None:
        """The folder holding the clip's outputs (every output of a job shares one)."""
        if not self.outputs:
            return None
        location = self.outputs[0].location
        cut = max(location.rfind("/"), location.rfind(os.sep))
        return location[:cut] if cut > 0 else location


class BatchResult(BaseModel):
    """The outcome of a batch flow run: every clip, what was planned and spent, how it was bounded.

    Attributes:
        model_id: the Scenario model.
        clips: one entry per clip, in the order they were given.
        budget_creative_units: the batch's budget (None: no budget).
        planned_creative_units: the estimates of the clips admitted to run.
        creative_units_cost: what this batch spent (reused jobs count zero).
        concurrency_limit_name: the global concurrency limit used (None: off).
        concurrency_limit: its size on the server.
        ceiling_refusals: submits Scenario refused with a 429 and that were waited out.
        destination: where outputs went (a directory, or a folder inside ``storage``).
        storage: the destination block's type slug (None for the local disk).
        duration_seconds: wall-clock time of the batch.
        dry_run: True when nothing was submitted.
    """

    model_config = ConfigDict(frozen=True)

    model_id: str
    clips: list[ClipResult] = Field(default_factory=list)
    budget_creative_units: float | None = None
    planned_creative_units: float = 0.0
    creative_units_cost: float = 0.0
    concurrency_limit_name: str | None = None
    concurrency_limit: int | None = None
    ceiling_refusals: int = 0
    destination: str = "scenario-outputs"
    storage: str | None = None
    duration_seconds: float = 0.0
    dry_run: bool = False

    def with_status(self, status: ClipStatus) -> list[ClipResult]:
        """The clips that ended with ``status``."""
        return [clip for clip in self.clips if clip.status == status]

    @property
    def succeeded(self) -> list[ClipResult]:
        """Clips whose outputs are stored."""
        return self.with_status(SUCCEEDED)

    @property
    def failed(self) -> list[ClipResult]:
        """Clips that failed (each on its own)."""
        return self.with_status(FAILED)

    @property
    def skipped(self) -> list[ClipResult]:
        """Clips not submitted because the budget would have been passed."""
        return self.with_status(SKIPPED_BUDGET)

    def message(self) -> str:
        """One line for the flow run's final state."""
        total = len(self.clips)
        if total == 0:
            return "No clips found: nothing was submitted"
        if self.dry_run:
            estimated = self.with_status(ESTIMATED)
            text = (
                f"Dry run: {len(estimated)} of {total} clip(s) would run for about "
                f"{_units(self.planned_creative_units)}; nothing was submitted"
            )
        else:
            spent = _units(self.creative_units_cost)
            text = f"{len(self.succeeded)} of {total} clip(s) succeeded, {spent} spent"
        if self.skipped:
            text += (
                f"; {len(self.skipped)} skipped: budget ({_units(self.planned_creative_units)} planned of "
                f"{_units(self.budget_creative_units)})"
            )
        if self.failed:
            shown = "; ".join(f"{_short_name(c)}: {c.error}" for c in self.failed[:3])
            more = f"; and {len(self.failed) - 3} more" if len(self.failed) > 3 else ""
            text += f"; {len(self.failed)} failed ({shown}{more})"
        return text[:2000]


def _units(value: float | None) -> str:
    if value is None:
        return "no limit"
    return f"{value:.2f}".rstrip("0").rstrip(".") + " CU"


def _short_name(clip: ClipResult) -> str:
    return PurePosixPath(clip.video.replace(os.sep, "/")).name or clip.video


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Finding the clips
# ---------------------------------------------------------------------------------------------


async def load_storage(value: Block | str | None, *, field: str) -> Block | None:
    """A storage block given as a block, or as the name of a saved one (``s3-bucket/incoming``).

    A name keeps a deployment's parameters free of secrets: ``prefect.yaml`` can say
    ``video_storage: s3-bucket/incoming`` where templating the block in would copy its credentials.

    Raises:
        InputValidationError: the name is not ``<block type slug>/<block name>`` of a saved
            storage block.
    """
    if value is None or isinstance(value, Block):
        block = value
    else:
        if value.count("/") != 1:
            raise InputValidationError(
                f"{field} {value!r}: name a saved block as '<block type slug>/<block name>', "
                "e.g. 's3-bucket/incoming-videos'",
                field=field,
            )
        try:
            block = await Block.aload(value)
        except Exception as exc:
            raise InputValidationError(
                f"{field} {value!r}: no such saved block ({type(exc).__name__}: {exc}); create it in the "
                "UI (Blocks) or with prefect-aws, then pass '<block type slug>/<block name>'",
                field=field,
            ) from None
    if block is not None and not isinstance(block, ReadableFileSystem | WritableFileSystem):
        raise InputValidationError(
            f"{field}: a {block.get_block_type_slug()} block is not a storage block; use an S3 bucket "
            "(prefect-aws S3Bucket) or a local file system block",
            field=field,
        )
    return block


def _wanted(name: str, pattern: str | None) -> bool:
    if name.startswith("."):
        return False
    if pattern:
        return fnmatch.fnmatch(name, pattern)
    return PurePosixPath(name).suffix.lower() in VIDEO_SUFFIXES


async def find_videos(
    videos: Sequence[str] | None,
    folder: str | None,
    pattern: str | None,
    storage: SourceStorage | None,
) -> list[str]:
    """The clips of a batch: ``videos`` first, then the folder's clips by name, without repeats.

    A folder is listed one level deep (sub-folders are not entered, so outputs written under it are
    not picked up again by the next run). Inside an ``S3Bucket`` the folder is a key prefix, with or
    without a trailing slash (``incoming/`` or ``incoming/2025-06-``).

    Args:
        videos: clips given one by one (paths, paths inside ``storage``, or asset ids).
        folder: a local directory, or a folder / key prefix inside ``storage``.
        pattern: a glob on file names (``take-*.mov``); default: .mp4, .mov, .m4v, .webm, .mkv.
        storage: the block holding the clips (``S3Bucket``, ``LocalFileSystem``), if any.

    Returns:
        The clips, in batch order.

    Raises:
        InputValidationError: neither videos nor folder, a folder that does not exist, or a block
            that cannot be listed.
    """
    if not videos and folder is None:
        raise InputValidationError("give the clips: a list of videos, or a folder (or S3 prefix) to list")
    found: list[str] = []
    seen: set[str] = set()
    listed = await _list_folder(folder, pattern, storage) if folder is not None else []
    for video in [*(videos or []), *listed]:
        if video not in seen:
            seen.add(video)
            found.append(video)
    return found


async def _list_folder(folder: str, pattern: str | None, storage: SourceStorage | None) -> list[str]:
    if storage is None:
        return await asyncio.to_thread(_list_local, Path(folder), folder, pattern, absolute=True)
    if isinstance(storage, LocalFileSystem):
        base = storage._resolve_path(folder)
        return await asyncio.to_thread(_list_local, Path(base), folder, pattern, absolute=False)
    if is_s3_bucket(storage):
        return await _list_s3(storage, folder, pattern)
    raise InputValidationError(
        f"cannot list a folder inside a {storage.get_block_type_slug()} block: use an S3Bucket or a "
        "LocalFileSystem block, or give the clips as a list of videos",
        field="folder",
    )


def _list_local(directory: Path, folder: str, pattern: str | None, *, absolute: bool) -> list[str]:
    directory = directory.expanduser()
    if not directory.is_dir():
        raise InputValidationError(f"folder {folder!r} is not a directory ({directory})", field="folder")
    names = sorted(e.name for e in directory.iterdir() if e.is_file() and _wanted(e.name, pattern))
    if absolute:
        return [str(directory.resolve() / name) for name in names]
    # Inside a LocalFileSystem block, paths stay relative to the block's base path.
    return [str(PurePosixPath(folder) / name) if folder else name for name in names]


async def _list_s3(storage: Any, prefix: str, pattern: str | None) -> list[str]:
    objects: list[dict[str, Any]] = await storage.alist_objects(folder=prefix)
    # Keys come back with the block's bucket_folder in front; the block adds it again when reading.
    base = str(getattr(storage, "bucket_folder", "") or "").strip("/")
    full_prefix = storage._join_bucket_folder(prefix) if prefix else (base + "/" if base else "")
    keys: list[str] = []
    for item in objects:
        key = str(item.get("Key", ""))
        rest = key[len(full_prefix) :].lstrip("/") if key.startswith(full_prefix) else None
        # One level only: a key with a "/" past the prefix lives in a sub-folder.
        if not rest or "/" in rest or not _wanted(rest, pattern):
            continue
        keys.append(key[len(base) + 1 :] if base and key.startswith(base + "/") else key)
    return sorted(keys)


# ---------------------------------------------------------------------------------------------
# The batch itself
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRecipe:
    """How a model's batch checks a clip and builds its request, once the clip is an asset.

    Attributes:
        flow_slug: the batch flow's name (artifact keys start with it).
        model_id: the Scenario model.
        check: the local validation of a clip (None for an asset id); raises InputValidationError.
        body: the request body for an uploaded clip (its asset id).
        reuse_across_runs: whether a job from an earlier flow run with the same inputs is reused.
    """

    flow_slug: str
    model_id: str
    check: Callable[[Path | None], object]
    body: Callable[[str], dict[str, Any]]
    reuse_across_runs: bool


@dataclass(frozen=True)
class BatchOptions:
    """Where the clips come from and go, and what bounds the batch."""

    credentials: ScenarioCredentials | str | None
    videos: list[str] | None = None
    folder: str | None = None
    pattern: str | None = None
    video_storage: SourceStorage | str | None = None
    destination: str = "scenario-outputs"
    destination_storage: WritableFileSystem | str | None = None
    budget_creative_units: float | None = None
    concurrency_limit_name: str | None = DEFAULT_LIMIT_NAME
    concurrency_limit: int = DEFAULT_PARALLEL_JOBS
    refresh: bool = False
    timeout_seconds: float = 3600
    dry_run: bool = False


@dataclass
class _Clip:
    """One clip on its way through the batch; ``result`` is set once its fate is known."""

    video: str
    source: str
    asset_id: str | None = None
    body: dict[str, Any] | None = None
    estimate: CostEstimate | None = None
    result: ClipResult | None = None

    def failed(self, exc: BaseException, job_id: str | None = None) -> ClipResult:
        return ClipResult(
            video=self.video,
            source=self.source,
            status=FAILED,
            job_id=job_id,
            estimated_creative_units=self.estimated,
            error=_describe(exc),
        )

    @property
    def estimated(self) -> float | None:
        return self.estimate.creative_units_cost if self.estimate is not None else None


@dataclass
class _Progress:
    """The batch's progress artifact: clips finished (whatever the outcome) over clips in the batch."""

    total: int
    artifact_id: UUID | None = None
    done: int = 0
    shown: int = -1
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def tick(self, count: int = 1) -> None:
        async with self.lock:
            self.done += count
            percent = int(100 * self.done / self.total) if self.total else 100
            # Whole percents only: a thousand clips make at most a hundred updates.
            if self.artifact_id is None or percent == self.shown:
                return
            self.shown = percent
            try:
                await aupdate_progress_artifact(artifact_id=self.artifact_id, progress=float(percent))
            except Exception as exc:
                get_run_logger().debug("batch progress not updated: %s", exc)


@dataclass
class _Run:
    """What every clip of one batch shares."""

    recipe: ModelRecipe
    options: BatchOptions
    credentials: ScenarioCredentials
    submit: Any
    progress: _Progress
    prepare_gate: asyncio.Semaphore
    needs_estimates: bool
    slots: SlotPool
    video_storage: SourceStorage | None
    destination_storage: WritableFileSystem | None

    @property
    def readable(self) -> ReadableFileSystem | None:
        """The clips' block, as the upload side types it (every block accepted here can read)."""
        return cast(ReadableFileSystem | None, self.video_storage)

    async def prepare(self, clip: _Clip) -> None:
        """Check, upload and (when needed) price one clip; a failure is recorded on the clip."""
        async with self.prepare_gate:
            try:
                await check_video(clip.video, self.readable, self.recipe.check)
                clip.asset_id = await ensure_uploaded(
                    upload_video, clip.video, credentials=self.credentials, storage=self.readable
                )
                clip.body = self.recipe.body(clip.asset_id)
                if self.needs_estimates:
                    clip.estimate = await estimate_job(
                        self.recipe.model_id, clip.body, credentials=self.credentials
                    )
            except Exception as exc:
                clip.result = clip.failed(exc)
                get_run_logger().error("Clip %s failed before submit: %s", clip.source, _describe(exc))

    async def run(self, clip: _Clip) -> None:
        """Submit, wait and store one admitted clip; a failure ends this clip only."""
        logger = get_run_logger()
        assert clip.body is not None
        job_id: str | None = None
        try:
            async with self.slots.slot():
                state = await self.submit(
                    self.recipe.model_id,
                    clip.body,
                    credentials=self.credentials,
                    estimate=clip.estimate,
                    reuse_across_runs=self.recipe.reuse_across_runs and not self.options.refresh,
                    return_state=True,
                )
                submitted: SubmittedJob = await state.aresult()
                job_id = submitted.job_id
                reused = came_from_earlier_run(state, submitted)
                if reused:
                    await settle_earlier_run(submitted)
                # Inline, not a task run: the batch's log, progress bar and table show every job.
                job = await wait_inline(
                    submitted.job_id,
                    credentials=self.credentials,
                    timeout_seconds=self.options.timeout_seconds,
                )
            # The slot is free again: the next clip's job runs while this one's outputs download.
            outputs = await download_outputs(
                job,
                credentials=self.credentials,
                destination=self.options.destination,
                storage=self.destination_storage,
            )
            await mark_delivered(submitted.job_id, submitted.ledger_key)
        except Exception as exc:
            clip.result = clip.failed(exc, job_id)
            where = f" (job {job_id})" if job_id else ""
            logger.error("Clip %s failed%s: %s", clip.source, where, _describe(exc))
        else:
            billed = job.billing.cu_cost if job.billing is not None else submitted.creative_units_cost
            clip.result = ClipResult(
                video=clip.video,
                source=clip.source,
                status=SUCCEEDED,
                job_id=job.job_id,
                estimated_creative_units=submitted.estimated_creative_units,
                creative_units_cost=billed,
                reused=reused,
                outputs=sorted(outputs, key=lambda o: o.output_index),
            )
            logger.info(
                "Clip %s succeeded: Scenario job %s, %d output(s)%s",
                clip.source,
                job.job_id,
                len(outputs),
                " (reused: nothing spent)" if reused else "",
            )
        await self.progress.tick()


def _plan(clips: list[_Clip], budget: float | None) -> tuple[list[_Clip], float, str | None]:
    """Admit clips in order while the running total of estimates stays within the budget.

    Returns:
        The admitted clips, their planned total, and why the rest was skipped (None: nothing was).
    """
    admitted: list[_Clip] = []
    planned = 0.0
    stop: str | None = None
    for clip in clips:
        if clip.result is not None:
            continue
        cost = clip.estimated or 0.0
        if stop is None and budget is not None and planned + cost > budget + 1e-9:
            stop = (
                f"budget: {_units(planned + cost)} with this clip would pass the budget of {_units(budget)} "
                f"({_units(planned)} already planned)"
            )
        if stop is not None:
            clip.result = ClipResult(
                video=clip.video,
                source=clip.source,
                status=SKIPPED_BUDGET,
                estimated_creative_units=clip.estimated,
                error=stop,
            )
            continue
        planned += cost
        admitted.append(clip)
    return admitted, planned, stop


async def _run_clips(run: _Run, clips: list[_Clip]) -> float:
    """Prepare, plan and run the clips; returns the creative units planned (0 without a budget)."""
    logger = get_run_logger()
    options, progress, needs_estimates = run.options, run.progress, run.needs_estimates
    preparing = [asyncio.ensure_future(run.prepare(clip)) for clip in clips]
    running: list[asyncio.Future[None]] = []
    if needs_estimates:
        # The whole plan is known (and logged) before a single creative unit is spent.
        await asyncio.gather(*preparing)
        admitted, planned, stop = _plan(clips, options.budget_creative_units)
        logger.info(
            "Plan: %d clip(s) estimated at %s in all; %d admitted (%s)%s",
            sum(1 for c in clips if c.estimate is not None),
            _units(sum(c.estimated or 0.0 for c in clips)),
            len(admitted),
            _units(planned),
            f"; the rest is skipped, {stop}" if stop else "",
        )
        await progress.tick(sum(1 for c in clips if c.result is not None))
        if options.dry_run:
            for clip in admitted:
                clip.result = ClipResult(
                    video=clip.video,
                    source=clip.source,
                    status=ESTIMATED,
                    estimated_creative_units=clip.estimated,
                )
            await progress.tick(len(admitted))
        else:
            running = [asyncio.ensure_future(run.run(clip)) for clip in admitted]
    else:
        # No budget: nothing to plan, so each clip is submitted as soon as it is uploaded.
        planned = 0.0
        for clip, preparation in zip(clips, preparing, strict=True):
            await preparation
            if clip.result is not None:
                await progress.tick()
                continue
            running.append(asyncio.ensure_future(run.run(clip)))
    await asyncio.gather(*running)
    return planned


async def run_batch(recipe: ModelRecipe, options: BatchOptions) -> State[BatchResult]:
    """Run one model over every clip of a batch (the body of both batch flows).

    Args:
        recipe: how the model checks a clip and builds its request.
        options: the clips, destination, budget and concurrency limit.

    Returns:
        The final state: Completed when no clip failed, Failed otherwise; its data is the BatchResult.
    """
    logger = get_run_logger()
    started = time.monotonic()
    name = model_name(recipe.model_id)
    credentials = await resolve_credentials(options.credentials)
    video_storage = cast(
        SourceStorage | None, await load_storage(options.video_storage, field="video_storage")
    )
    destination_storage = cast(
        WritableFileSystem | None,
        await load_storage(options.destination_storage, field="destination_storage"),
    )
    videos = await find_videos(options.videos, options.folder, options.pattern, video_storage)
    clips = [
        _Clip(video=video, source=source_name(video, cast(ReadableFileSystem | None, video_storage)))
        for video in videos
    ]
    limit_name = options.concurrency_limit_name or None
    limit_size = None
    if limit_name is not None and not options.dry_run:
        limit_size = await ensure_global_concurrency_limit(limit_name, options.concurrency_limit)
    watch = CeilingWatch(limit_name=limit_name, limit_size=limit_size)
    submit = ceiling_aware_submit(watch)
    if options.refresh:
        submit = submit.with_options(refresh_cache=True)
    logger.info(
        "%s batch: %d clip(s); budget %s; at most %s job(s) in flight (%s)",
        name,
        len(clips),
        _units(options.budget_creative_units),
        limit_size if limit_size is not None else "any number of",
        f"global concurrency limit {limit_name!r}" if limit_name else "no global concurrency limit",
    )
    progress = _Progress(total=len(clips))
    if clips:
        progress.artifact_id = await acreate_progress_artifact(
            progress=0.0,
            key=artifact_key(recipe.flow_slug, "progress"),
            description=f"{name} batch: clips finished out of {len(clips)}",
        )
    needs_estimates = options.budget_creative_units is not None or options.dry_run
    run = _Run(
        recipe=recipe,
        options=options,
        credentials=credentials,
        submit=submit,
        progress=progress,
        prepare_gate=asyncio.Semaphore(PREPARE_CONCURRENCY),
        needs_estimates=needs_estimates,
        slots=SlotPool(limit_name, limit_size),
        video_storage=video_storage,
        destination_storage=destination_storage,
    )
    # Job ids go onto the run's labels in the background: no slot waits on a label write.
    with deferred_job_labels():
        try:
            planned = await _run_clips(run, clips)
        finally:
            await run.slots.aclose()  # every slot back to the limit
            await drain_job_labels()

    results = [clip.result for clip in clips if clip.result is not None]
    if not needs_estimates:
        # Each submit priced its own job: the plan is what the submitted clips were estimated at.
        planned = sum(r.estimated_creative_units or 0.0 for r in results if r.job_id is not None)
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
        storage=storage_slug(destination_storage),
        duration_seconds=round(time.monotonic() - started, 3),
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


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def clips_table(result: BatchResult) -> list[dict[str, Any]]:
    """One row per clip, in batch order, for the table artifact."""
    return [
        {
            "clip": clip.source,
            "status": clip.status,
            "job_id": clip.job_id or "",
            "estimate_cu": clip.estimated_creative_units,
            "cost_cu": clip.creative_units_cost,
            "reused": clip.reused,
            "outputs": len(clip.outputs),
            "stored_in": clip.stored_in or "",
            "error": clip.error or "",
        }
        for clip in result.clips
    ]


def summary_markdown(result: BatchResult) -> str:
    """The batch's summary: counts, creative units, how fan-out was bounded."""
    name = model_name(result.model_id)
    limit = (
        f"`{result.concurrency_limit_name}` ({result.concurrency_limit} slot(s))"
        if result.concurrency_limit_name and result.concurrency_limit is not None
        else "none"
    )
    lines = [
        f"# {name} batch{' (dry run)' if result.dry_run else ''}",
        "",
        result.message(),
        "",
        "| | |",
        "|---|---|",
        f"| Clips | {len(result.clips)} |",
        f"| Succeeded | {len(result.succeeded)} |",
        f"| Failed | {len(result.failed)} |",
        f"| Skipped: budget | {len(result.skipped)} |",
        f"| Budget | {_units(result.budget_creative_units)} |",
        f"| Planned (estimates) | {_units(result.planned_creative_units)} |",
        f"| Spent by this run | {_units(result.creative_units_cost)} |",
        f"| Global concurrency limit | {limit} |",
        f"| Submits refused by Scenario's ceiling (waited) | {result.ceiling_refusals} |",
        f"| Outputs | `{result.destination}`{f' ({result.storage})' if result.storage else ''} |",
        f"| Duration | {result.duration_seconds:.1f} s |",
    ]
    return "\n".join(lines) + "\n"


async def publish_batch_artifacts(flow_slug: str, result: BatchResult) -> None:
    """The clips table and the summary of a batch (keyed per flow, versioned on the Artifacts page)."""
    if result.clips:
        await acreate_table_artifact(
            clips_table(result),
            key=artifact_key(flow_slug, "clips"),
            description=f"{model_name(result.model_id)} batch: each clip's status, job, cost and outputs",
        )
    await acreate_markdown_artifact(
        summary_markdown(result),
        key=artifact_key(flow_slug, "summary"),
        description=f"{model_name(result.model_id)} batch: counts, creative units, concurrency",
    )


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


@flow(
    name=LAYERS_BATCH_FLOW,
    flow_run_name=_batch_run_name("layers-batch"),
    description=(
        "Split many videos into transparent layers with Scenario's Video to Layers: a list of clips, "
        "a folder, or an S3 prefix. At most the global concurrency limit's jobs run at once; a budget "
        "in creative units stops new submissions before it would be passed; one failed clip fails "
        "only itself. Ends with a table of every clip."
    ),
    retries=0,
    persist_result=True,
    on_cancellation=[cancel_remote_jobs],
    on_crashed=[cancel_remote_jobs],
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
) -> State[BatchResult]:
    """Split every clip of a batch into layers with transparency.

    Args:
        separation_instruction: How to split each clip: name the objects or the rule, not the scene
            (e.g. "each moving object apart from the background").
        videos: Clips one by one: local paths, paths inside the video storage block, or asset ids.
        folder: A local folder, or a folder / key prefix inside the video storage block (e.g. an
            S3 prefix "incoming/"). Listed one level deep, by name.
        pattern: Which files of the folder to take, as a glob on the name (e.g. "take-*.mov").
            Empty: every .mp4, .mov, .m4v, .webm and .mkv file.
        max_layers: At most this many layers per clip, 1 to 10, the background included. More
            layers cost more.
        destination: Where the layers go: a local directory, or a folder inside the destination
            storage block. Each job gets its own sub-folder.
        credentials: A saved Scenario Credentials block (or its name). Empty: the
            SCENARIO_SDK_API_KEY / SCENARIO_SDK_API_SECRET environment variables of the run.
        video_storage: A storage block holding the clips: an S3 bucket (prefect-aws S3Bucket) or a
            local file system, or the name of a saved one ("s3-bucket/incoming-videos").
        destination_storage: A storage block (S3 bucket, ...) for the layers instead of the local disk,
            or the name of a saved one ("s3-bucket/scenario-outputs").
        budget_creative_units: Stop submitting before the estimates would pass this many creative
            units; the remaining clips are reported "skipped: budget". Empty: no budget.
        concurrency_limit_name: The Prefect global concurrency limit that bounds jobs in flight,
            shared with every flow run. Created when missing. Empty: no limit (Scenario's own
            ceiling is then waited on when it answers 429).
        concurrency_limit: Slots of the limit when this flow creates it: your team's parallel
            custom-job ceiling. An existing limit keeps its size.
        refresh: Pay for new generations even when an earlier run had the same clip and inputs.
        timeout_seconds: How long to wait for each job. The job itself goes on past it.
        dry_run: Only check, upload (free) and estimate every clip, with the budget's plan; submit nothing.

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
    )
    options = BatchOptions(
        credentials=credentials,
        videos=videos,
        folder=folder,
        pattern=pattern,
        video_storage=video_storage,
        destination=destination,
        destination_storage=destination_storage,
        budget_creative_units=budget_creative_units,
        concurrency_limit_name=concurrency_limit_name,
        concurrency_limit=concurrency_limit,
        refresh=refresh,
        timeout_seconds=timeout_seconds,
        dry_run=dry_run,
    )
    return await run_batch(recipe, options)


@flow(
    name=ALEPH_BATCH_FLOW,
    flow_run_name=_batch_run_name("aleph-batch"),
    description=(
        "Edit many videos from one prompt with Runway Aleph 2: a list of clips, a folder, or an S3 "
        "prefix. At most the global concurrency limit's jobs run at once; a budget in creative units "
        "stops new submissions before it would be passed; one failed clip fails only itself. Ends with "
        "a table of every clip."
    ),
    retries=0,
    persist_result=True,
    on_cancellation=[cancel_remote_jobs],
    on_crashed=[cancel_remote_jobs],
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
) -> State[BatchResult]:
    """Edit every clip of a batch from one prompt with Runway Aleph 2.

    Args:
        prompt: The edit, up to 1000 characters (e.g. "turn it into a watercolour painting").
        videos: Clips one by one (each at most 30 s and 16 MiB): local paths, paths inside the video
            storage block, or asset ids.
        folder: A local folder, or a folder / key prefix inside the video storage block (e.g. an
            S3 prefix "incoming/"). Listed one level deep, by name.
        pattern: Which files of the folder to take, as a glob on the name (e.g. "take-*.mov").
            Empty: every .mp4, .mov, .m4v, .webm and .mkv file.
        seed: 0 to 4294967295 for repeatable edits. With a seed, a clip edited before with the same
            inputs reuses that job; without one, every clip is a new generation.
        destination: Where the edits go: a local directory, or a folder inside the destination
            storage block. Each job gets its own sub-folder.
        credentials: A saved Scenario Credentials block (or its name). Empty: the
            SCENARIO_SDK_API_KEY / SCENARIO_SDK_API_SECRET environment variables of the run.
        video_storage: A storage block holding the clips: an S3 bucket (prefect-aws S3Bucket) or a
            local file system, or the name of a saved one ("s3-bucket/incoming-videos").
        destination_storage: A storage block (S3 bucket, ...) for the edits instead of the local disk,
            or the name of a saved one ("s3-bucket/scenario-outputs").
        budget_creative_units: Stop submitting before the estimates would pass this many creative
            units; the remaining clips are reported "skipped: budget". Empty: no budget.
        concurrency_limit_name: The Prefect global concurrency limit that bounds jobs in flight,
            shared with every flow run. Created when missing. Empty: no limit (Scenario's own
            ceiling is then waited on when it answers 429).
        concurrency_limit: Slots of the limit when this flow creates it: your team's parallel
            custom-job ceiling. An existing limit keeps its size.
        refresh: Pay for new generations even when an earlier run had the same inputs and seed.
        timeout_seconds: How long to wait for each job. The job itself goes on past it.
        dry_run: Only check, upload (free) and estimate every clip, with the budget's plan; submit nothing.

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
    recipe = ModelRecipe(
        flow_slug=ALEPH_BATCH_FLOW,
        model_id=ALEPH_MODEL_ID,
        check=lambda local: validate_aleph_inputs(local, prompt, seed=seed),
        body=lambda asset_id: AlephInput(prompt=prompt, video=asset_id, seed=seed).to_body(),
        # Without a seed each edit is meant to be a new draw; with one, the same inputs mean the same edit.
        reuse_across_runs=seed is not None,
    )
    options = BatchOptions(
        credentials=credentials,
        videos=videos,
        folder=folder,
        pattern=pattern,
        video_storage=video_storage,
        destination=destination,
        destination_storage=destination_storage,
        budget_creative_units=budget_creative_units,
        concurrency_limit_name=concurrency_limit_name,
        concurrency_limit=concurrency_limit,
        refresh=refresh,
        timeout_seconds=timeout_seconds,
        dry_run=dry_run,
    )
    return await run_batch(recipe, options)


__all__ = [
    "ALEPH_BATCH_FLOW",
    "LAYERS_BATCH_FLOW",
    "BatchResult",
    "ClipResult",
    "aleph_edit_batch",
    "find_videos",
    "run_batch",
    "video_to_layers_batch",
]
