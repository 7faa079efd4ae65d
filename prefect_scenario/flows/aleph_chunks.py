"""Clips over Runway Aleph 2's limits (30 s, 16 MiB): re-encoded to fit, or edited in chunks.

Two ways past the limits, both asked for explicitly by the caller (``aleph_edit``'s
``fit_to_limits`` and ``allow_split``), both stated in the result:

* **fit** (:func:`fit_clip`): one clip re-encoded as H.264 at a bitrate that fits 16 MiB, at most
  30 fps; one job, as usual.
* **split** (:func:`edit_in_chunks`): the clip is cut into chunks within both limits, at scene cuts
  or the source's keyframes where there is one near an even split (``video.plan_split``). Then:

  1. every chunk is uploaded (cached by content), and every reference image once;
  2. each keyframe (and prompt image) goes to the chunk holding its time, at the chunk's local time;
  3. every chunk is estimated (dry runs, free) and the **total** is logged and checked against
     ``max_creative_units`` before a single creative unit is spent;
  4. the chunks run in parallel, with the same prompt and seed, at most ``max_parallel_chunks`` at
     once and, when the Prefect server has the global concurrency limit the batches use, inside it;
  5. a chunk whose job failed on the server is submitted again as a new job (``chunk_retries``
     times); a refused request (400) is the input's fault and is not;
  6. only a complete set is stitched (``video.concat_videos``, with the source's audio) and stored
     with its sha256. Otherwise the flow fails naming the failed chunks, and the finished chunks'
     outputs stay stored: they are paid for, and a retry of the flow run reuses their jobs.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.client.schemas.objects import State
from prefect.filesystems import LocalFileSystem
from prefect.logging import get_run_logger

from prefect_scenario import video as media
from prefect_scenario.blocks import ScenarioCredentials
from prefect_scenario.concurrency import (
    DEFAULT_PARALLEL_JOBS,
    CeilingWatch,
    job_slot,
)
from prefect_scenario.errors import BudgetExceededError, ChunksFailedError, JobCanceledError, JobFailedError
from prefect_scenario.flows._common import (
    GenerationOptions,
    GenerationRequest,
    Stopwatch,
    came_from_earlier_run,
    ceiling_aware_submit,
    report_run,
    storage_slug,
)
from prefect_scenario.flows.reporting import PREVIEW_MAX_BYTES, local_copies, model_name
from prefect_scenario.flows.result import ESTIMATED, ChunkResult, ScenarioRunResult
from prefect_scenario.manifest import StoredOutput, SubmittedJob
from prefect_scenario.models import (
    ALEPH_MAX_VIDEO_BYTES,
    ALEPH_MAX_VIDEO_SECONDS,
    ALEPH_MODEL_ID,
    AlephInput,
    CostEstimate,
    Job,
    Keyframe,
    PromptImage,
)
from prefect_scenario.storage import discard, new_temp_dir, sha256_file, store_file
from prefect_scenario.tasks import (
    download_outputs,
    estimate_job,
    upload_image,
    upload_video,
    wait_for_job,
)
from prefect_scenario.tasks.submit import ledger_key, mark_delivered
from prefect_scenario.tasks.upload import ensure_uploaded
from prefect_scenario.validation import ALEPH_FIT_MAX_FPS, KeyframeSpec, PromptImageSpec

# Chunks are planned a second short of the 30 s limit: a container's duration (audio priming,
# timestamp rounding) can come out a little longer than its frames, and the API measures the file.
CHUNK_MAX_SECONDS = ALEPH_MAX_VIDEO_SECONDS - 1.0
DEFAULT_CHUNK_RETRIES = 1
# The artifacts of a split edit are the aleph-edit flow's own (one history per flow in the UI).
FLOW_SLUG = "aleph-edit"
# Chunk files checked and uploaded at once: uploads share the machine's bandwidth.
UPLOAD_CONCURRENCY = 3
_MIB = 1024 * 1024


@dataclass(frozen=True)
class ChunkedEdit:
    """A checked Aleph request whose local clip is over the limits and may be split.

    Attributes:
        video: the clip as the flow was given it (for the record).
        source: a local copy of the clip.
        probe: the clip's probe.
        prompt: the edit, the same for every chunk.
        keyframes: reference images pinned to times of the whole clip.
        prompt_images: reference images placed at times of the whole output.
        seed: the seed, the same for every chunk (None: a fresh draw per run).
        sources: where the inputs came from (``video`` and the reference images).
    """

    video: str
    source: Path
    probe: media.VideoProbe
    prompt: str
    keyframes: list[KeyframeSpec]
    prompt_images: list[PromptImageSpec]
    seed: int | None
    sources: dict[str, str]


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


@dataclass(frozen=True)
class ChunkReferences:
    """The reference images of one chunk, at the chunk's local times (seconds)."""

    keyframes: list[KeyframeSpec]
    prompt_images: list[PromptImageSpec]


@dataclass
class _Chunk:
    span: media.ChunkSpan
    path: Path
    references: ChunkReferences
    body: dict[str, Any] | None = None
    estimate: CostEstimate | None = None

    @property
    def estimated(self) -> float | None:
        return self.estimate.creative_units_cost if self.estimate is not None else None

    @property
    def where(self) -> str:
        return f"chunk {self.span.index} ({self.span.start_seconds:.2f}-{self.span.end_seconds:.2f} s)"


def _units(value: float | None) -> str:
    if value is None:
        return "an unknown number of"
    return f"{value:.2f}".rstrip("0").rstrip(".")


# ---------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------


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
        f"{probe.size_bytes / _MIB:.1f} MiB, {probe.frame_rate:g} fps, {probe.video_codec} became "
        f"{fitted.size_bytes / _MIB:.1f} MiB, {fitted.frame_rate:g} fps, H.264"
    )
    get_run_logger().info("Clip %s: %s", source.name, note)
    return out, note


# ---------------------------------------------------------------------------------------------
# Mapping reference images to chunks
# ---------------------------------------------------------------------------------------------


def chunk_at(spans: Sequence[media.ChunkSpan], seconds: float) -> int:
    """The index of the chunk holding ``seconds`` of the source (the last one from its end on)."""
    for span in spans:
        if span.start_seconds <= seconds < span.end_seconds:
            return span.index
    return spans[-1].index if seconds >= spans[-1].start_seconds else spans[0].index


def _local(span: media.ChunkSpan, seconds: float) -> float:
    # Millisecond precision; never past the chunk's own end (the API checks times against it).
    return round(min(max(seconds - span.start_seconds, 0.0), span.duration_seconds), 3)


def map_references(
    spans: Sequence[media.ChunkSpan],
    keyframes: Sequence[KeyframeSpec],
    prompt_images: Sequence[PromptImageSpec],
    duration_seconds: float,
) -> list[ChunkReferences]:
    """Give each reference image to the chunk holding its time, at the chunk's local time.

    A keyframe at ``seconds`` (or ``at`` x the clip's duration) of the source goes to the chunk
    containing that time, as ``seconds - chunk start``. A prompt image at an output timestamp (or
    ``position`` x duration) goes the same way, as a local timestamp: Aleph keeps the clip's timing.

    Args:
        spans: the chunks.
        keyframes: keyframes in the source's time.
        prompt_images: prompt images in the (whole) output's time.
        duration_seconds: the source clip's duration (for ``at`` and positions).

    Returns:
        One entry per chunk, in order.
    """
    mapped = [ChunkReferences(keyframes=[], prompt_images=[]) for _ in spans]
    for keyframe in keyframes:
        seconds = (
            keyframe.seconds if keyframe.seconds is not None else (keyframe.at or 0.0) * duration_seconds
        )
        span = spans[chunk_at(spans, seconds)]
        mapped[span.index].keyframes.append(KeyframeSpec(image=keyframe.image, seconds=_local(span, seconds)))
    for image in prompt_images:
        if image.timestamp_seconds is not None:
            seconds = image.timestamp_seconds
        else:
            seconds = (image.position_percentage or 0.0) * duration_seconds
        span = spans[chunk_at(spans, seconds)]
        mapped[span.index].prompt_images.append(
            PromptImageSpec(image=image.image, timestamp_seconds=_local(span, seconds))
        )
    return mapped


# ---------------------------------------------------------------------------------------------
# Splitting, stitching
# ---------------------------------------------------------------------------------------------


def _split(source: Path, out_dir: Path) -> list[tuple[media.ChunkSpan, Path]]:
    """Plan and cut the chunks (one worker thread: it decodes the whole clip twice)."""
    spans = media.plan_split(source, max_seconds=CHUNK_MAX_SECONDS, max_bytes=ALEPH_MAX_VIDEO_BYTES)
    parts = media.split_video(
        source, out_dir, max_seconds=CHUNK_MAX_SECONDS, max_bytes=ALEPH_MAX_VIDEO_BYTES, spans=spans
    )
    for part in parts:
        probe = media.probe_video(part)
        # The split is planned within the limits; a chunk the API would refuse must fail here, free.
        if probe.duration_seconds > ALEPH_MAX_VIDEO_SECONDS or probe.size_bytes > ALEPH_MAX_VIDEO_BYTES:
            raise media.MediaError(
                f"chunk {part.name} came out at {probe.duration_seconds:.2f} s and "
                f"{probe.size_bytes / _MIB:.1f} MiB, over Runway Aleph 2's limits: re-export the clip "
                "(H.264 MP4) and try again",
                field="video",
            )
    return list(zip(spans, parts, strict=True))


def _stitch(parts: list[Path], source: Path, out: Path, sheet: Path) -> tuple[media.VideoProbe, Path | None]:
    """Join the edited chunks with the source's audio; draw the before/after first frames."""
    probe = media.concat_videos(parts, out, audio_from=source)
    try:
        picture: Path | None = media.first_frames_sheet([source, out], sheet, max_bytes=PREVIEW_MAX_BYTES)
    except media.MediaError:
        picture = None
    return probe, picture


def stitch_folder(job_ids: Sequence[str]) -> str:
    """The folder of a stitched edit: named by its chunk jobs, so a retry writes the same place."""
    digest = hashlib.sha256("|".join(job_ids).encode()).hexdigest()[:12]
    return f"aleph-stitched-{digest}"


# ---------------------------------------------------------------------------------------------
# Running the chunks
# ---------------------------------------------------------------------------------------------


async def _existing_limit(name: str | None) -> int | None:
    """The size of the global concurrency limit ``name`` when it exists and is active, else None.

    A single edit never creates the limit (that is the batches' call, sized to the team's ceiling);
    it only joins it, so split edits and batches share one count of jobs in flight.
    """
    if not name:
        return None
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            limit = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return None
    return int(limit.limit) if limit.active else None


@dataclass
class _ChunkRunner:
    """What every chunk of one split edit shares while its jobs run."""

    credentials: ScenarioCredentials
    options: GenerationOptions
    settings: ChunkSettings
    limit_name: str | None
    gate: asyncio.Semaphore
    submit: Any
    resubmit: Any
    reuse_across_runs: bool

    def _failed(
        self, chunk: _Chunk, error: BaseException, job_id: str | None, failed_jobs: list[str]
    ) -> ChunkResult:
        text = " ".join(str(error).split()) or type(error).__name__
        get_run_logger().error("Aleph %s failed: %s", chunk.where, text)
        return ChunkResult(
            index=chunk.span.index,
            start_seconds=chunk.span.start_seconds,
            end_seconds=chunk.span.end_seconds,
            status="failure" if isinstance(error, JobFailedError) else "failed",
            job_id=job_id,
            inputs=dict(chunk.body or {}),
            estimated_creative_units=chunk.estimated,
            failed_job_ids=failed_jobs,
            error=text,
        )

    async def run(self, chunk: _Chunk) -> ChunkResult:
        """Submit, wait and store one chunk, retrying a server-side job failure as a new job."""
        logger = get_run_logger()
        assert chunk.body is not None
        failed_jobs: list[str] = []
        job_id: str | None = None
        attempt = 0
        while True:
            try:
                # The slot is held from the submit until the job ends: what the API counts in flight.
                async with self.gate, job_slot(self.limit_name):
                    submit = self.submit if attempt == 0 else self.resubmit
                    state: State[SubmittedJob] = await submit(
                        ALEPH_MODEL_ID,
                        chunk.body,
                        credentials=self.credentials,
                        estimate=chunk.estimate,
                        reuse_across_runs=self.reuse_across_runs and attempt == 0,
                        return_state=True,
                    )
                    submitted: SubmittedJob = await state.aresult()
                    job_id = submitted.job_id
                    reused = came_from_earlier_run(state, submitted)
                    job: Job = await wait_for_job(
                        job_id, credentials=self.credentials, timeout_seconds=self.options.timeout_seconds
                    )
            except JobCanceledError as exc:
                # Someone canceled it: running it again would go against them.
                return self._failed(chunk, exc, job_id, failed_jobs)
            except JobFailedError as exc:
                failed_jobs.append(exc.job_id)
                if attempt < self.settings.chunk_retries:
                    attempt += 1
                    logger.warning(
                        "Aleph %s: Scenario job %s failed on the server (%s); submitting the chunk again "
                        "as a new job (retry %d of %d)",
                        chunk.where,
                        exc.job_id,
                        exc.error or "no reason given",
                        attempt,
                        self.settings.chunk_retries,
                    )
                    continue
                return self._failed(chunk, exc, exc.job_id, failed_jobs[:-1])
            except Exception as exc:
                # A refused request (400: the input's fault), a lost connection, a wait that timed
                # out: another job would not help, or might be a second paid one.
                return self._failed(chunk, exc, job_id, failed_jobs)
            break
        try:
            outputs = await download_outputs(
                job,
                credentials=self.credentials,
                destination=self.options.destination,
                storage=self.options.destination_storage,
            )
        except Exception as exc:
            return self._failed(chunk, exc, job.job_id, failed_jobs)
        billed = job.billing.cu_cost if job.billing is not None else submitted.creative_units_cost
        logger.info(
            "Aleph %s done: Scenario job %s, %s creative units%s",
            chunk.where,
            job.job_id,
            _units(billed),
            " (reused: nothing spent)" if reused else "",
        )
        return ChunkResult(
            index=chunk.span.index,
            start_seconds=chunk.span.start_seconds,
            end_seconds=chunk.span.end_seconds,
            status=job.status.value,
            job_id=job.job_id,
            inputs=dict(chunk.body),
            estimated_creative_units=chunk.estimated,
            creative_units_cost=billed,
            outputs=sorted(outputs, key=lambda o: o.output_index),
            failed_job_ids=failed_jobs,
            reused=reused,
        )


async def _upload_references(chunks: list[_Chunk], credentials: ScenarioCredentials) -> dict[str, str]:
    """Every reference image as an asset id, uploaded once per content."""
    images = {k.image for chunk in chunks for k in chunk.references.keyframes} | {
        p.image for chunk in chunks for p in chunk.references.prompt_images
    }
    ids: dict[str, str] = {}
    for image in sorted(images):
        ids[image] = await ensure_uploaded(upload_image, image, credentials=credentials)
    return ids


def _body(chunk: _Chunk, asset_id: str, image_ids: dict[str, str], edit: ChunkedEdit) -> dict[str, Any]:
    keyframes = [Keyframe(uri=image_ids[k.image], seconds=k.seconds) for k in chunk.references.keyframes]
    images = [
        PromptImage(uri=image_ids[p.image], position_type="timestamp", timestamp_seconds=p.timestamp_seconds)
        for p in chunk.references.prompt_images
    ]
    return AlephInput(
        prompt=edit.prompt,
        video=asset_id,
        keyframes=keyframes or None,
        prompt_image=images or None,
        seed=edit.seed,
    ).to_body()


def _check_total(chunks: list[_Chunk], budget: float | None) -> float:
    total = sum(chunk.estimated or 0.0 for chunk in chunks)
    if budget is not None and total > budget + 1e-9:
        each = " + ".join(_units(chunk.estimated) for chunk in chunks)
        raise BudgetExceededError(
            f"Runway Aleph 2 on the whole clip ({len(chunks)} chunks) would cost {_units(total)} creative "
            f"units ({each}), over the budget of {_units(budget)} (max_creative_units); nothing was "
            f"submitted or spent. Raise max_creative_units to at least {_units(total)}, or use a shorter "
            "clip.",
            estimate=total,
            budget=budget,
        )
    return total


async def edit_in_chunks(
    edit: ChunkedEdit,
    options: GenerationOptions,
    settings: ChunkSettings,
    clock: Stopwatch,
) -> ScenarioRunResult:
    """Edit a clip over Runway Aleph 2's limits in chunks and stitch them back (see the module doc).

    Args:
        edit: the checked request, with a local copy of the clip.
        options: credentials, destination, budget (for the whole clip), reuse, deadline, dry run.
        settings: parallel chunks, retries, the concurrency limit.
        clock: the flow's stopwatch.

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
    try:
        with clock.phase("prepare"):
            split = await asyncio.to_thread(_split, edit.source, scratch / "chunks")
        spans = [span for span, _ in split]
        references = map_references(spans, edit.keyframes, edit.prompt_images, edit.probe.duration_seconds)
        chunks = [
            _Chunk(span=span, path=path, references=refs)
            for (span, path), refs in zip(split, references, strict=True)
        ]
        logger.info(
            "Clip %s (%.2f s, %.1f MiB) is over Runway Aleph 2's limits (%.0f s, %.0f MiB): edited as %d "
            "chunks: %s",
            edit.source.name,
            edit.probe.duration_seconds,
            edit.probe.size_bytes / _MIB,
            ALEPH_MAX_VIDEO_SECONDS,
            ALEPH_MAX_VIDEO_BYTES / _MIB,
            len(chunks),
            "; ".join(
                f"{c.span.start_seconds:.2f}-{c.span.end_seconds:.2f} s (cut: {c.span.cut}, "
                f"{len(c.references.keyframes) + len(c.references.prompt_images)} reference(s))"
                for c in chunks
            ),
        )
        with clock.phase("upload"):
            image_ids = await _upload_references(chunks, options.credentials)
            gate = asyncio.Semaphore(UPLOAD_CONCURRENCY)

            async def upload(chunk: _Chunk) -> str:
                async with gate:
                    asset_id = await ensure_uploaded(
                        upload_video, str(chunk.path), credentials=options.credentials
                    )
                    return asset_id

            asset_ids = await asyncio.gather(*(upload(chunk) for chunk in chunks))
        for chunk, asset_id in zip(chunks, asset_ids, strict=True):
            chunk.body = _body(chunk, asset_id, image_ids, edit)
        with clock.phase("submit"):
            estimates = await asyncio.gather(
                *(estimate_job(ALEPH_MODEL_ID, c.body or {}, credentials=options.credentials) for c in chunks)
            )
            for chunk, estimate in zip(chunks, estimates, strict=True):
                chunk.estimate = estimate
            total = sum(chunk.estimated or 0.0 for chunk in chunks)
            logger.info(
                "Estimate for the whole clip: %s creative units for %d chunks (%s); nothing is spent yet",
                _units(total),
                len(chunks),
                " + ".join(_units(chunk.estimated) for chunk in chunks),
            )
            _check_total(chunks, options.max_creative_units)
        request = GenerationRequest(
            flow_slug=FLOW_SLUG,
            model_id=ALEPH_MODEL_ID,
            body={},
            sources=edit.sources,
            notes=(f"the clip was edited in {len(chunks)} chunks and stitched back (allow_split)",),
        )
        base: dict[str, Any] = {
            "model_id": ALEPH_MODEL_ID,
            "job_id": None,
            "inputs": {"prompt": edit.prompt, **({"seed": edit.seed} if edit.seed is not None else {})},
            "sources": edit.sources,
            "destination": str(options.destination),
            "storage": storage_slug(options.destination_storage),
            "estimated_creative_units": total,
            "notes": list(request.notes),
        }
        if options.dry_run:
            result = ScenarioRunResult(
                **base,
                status=ESTIMATED,
                chunks=[
                    ChunkResult(
                        index=c.span.index,
                        start_seconds=c.span.start_seconds,
                        end_seconds=c.span.end_seconds,
                        status=ESTIMATED,
                        inputs=dict(c.body or {}),
                        estimated_creative_units=c.estimated,
                    )
                    for c in chunks
                ],
                timings=clock.timings(),
            )
            logger.info(
                "Dry run: %s would cost about %s creative units for the %d chunks; nothing was submitted",
                name,
                _units(total),
                len(chunks),
            )
            return await report_run(request, options, result, clock)
        results = await _run_chunks(chunks, options, settings, clock)
        failed = [c for c in results if c.status != "success"]
        if failed:
            result = ScenarioRunResult(**base, status="failure", chunks=results, timings=clock.timings())
            await report_run(request, options, result, clock)
            raise _chunks_failed(failed, results)
        with clock.phase("stitch"):
            stitched, preview = await _stitch_and_store(results, edit, options, scratch)
        for chunk_result in results:
            if chunk_result.job_id is not None:
                key = ledger_key(ALEPH_MODEL_ID, chunk_result.inputs, options.credentials)
                await mark_delivered(chunk_result.job_id, key)
        billed = [c.creative_units_cost for c in results]
        result = ScenarioRunResult(
            **base,
            status="success",
            creative_units_cost=None if any(b is None for b in billed) else sum(b or 0.0 for b in billed),
            outputs=[stitched],
            chunks=results,
            reused=all(c.reused for c in results),
            timings=clock.timings(),
        )
        result = await report_run(request, options, result, clock, preview=preview)
        logger.info(
            "%s finished: %d chunk jobs stitched into %s (%s creative units)",
            name,
            len(results),
            stitched.location,
            _units(result.creative_units_cost),
        )
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


async def _run_chunks(
    chunks: list[_Chunk], options: GenerationOptions, settings: ChunkSettings, clock: Stopwatch
) -> list[ChunkResult]:
    logger = get_run_logger()
    limit_size = await _existing_limit(settings.concurrency_limit_name)
    limit_name = settings.concurrency_limit_name if limit_size is not None else None
    watch = CeilingWatch(limit_name=limit_name, limit_size=limit_size)
    submit = ceiling_aware_submit(watch)
    resubmit = submit.with_options(refresh_cache=True)
    runner = _ChunkRunner(
        credentials=options.credentials,
        options=options,
        settings=settings,
        limit_name=limit_name,
        gate=asyncio.Semaphore(max(1, settings.max_parallel_chunks)),
        submit=resubmit if options.refresh else submit,
        resubmit=resubmit,
        reuse_across_runs=options.reuse_across_runs and not options.refresh,
    )
    logger.info(
        "Running %d chunk jobs, at most %d at once%s",
        len(chunks),
        max(1, settings.max_parallel_chunks),
        f", inside the global concurrency limit {limit_name!r} ({limit_size} slot(s))" if limit_name else "",
    )
    with clock.phase("wait"):
        return list(await asyncio.gather(*(runner.run(chunk) for chunk in chunks)))


def _chunks_failed(failed: list[ChunkResult], results: list[ChunkResult]) -> ChunksFailedError:
    done = [c for c in results if c.status == "success"]
    reasons = "; ".join(
        f"chunk {c.index} ({c.start_seconds:.2f}-{c.end_seconds:.2f} s"
        f"{f', job {c.job_id}' if c.job_id else ''}): {c.error}"
        for c in failed
    )
    kept = (
        "The finished chunks are stored (they are paid for): "
        + ", ".join(f"chunk {c.index} in {c.outputs[0].location}" for c in done if c.outputs)
        + ". Retry this flow run to reuse their jobs and run only the failed chunks again."
        if done
        else "No chunk finished."
    )
    first = failed[0]
    return ChunksFailedError(
        f"Runway Aleph 2 failed on {len(failed)} of {len(results)} chunks, so the edit was not stitched "
        f"(never from a partial set): {reasons}. {kept}",
        failed_chunks=[c.index for c in failed],
        job_id=first.job_id or "",
        error=first.error,
    )


async def _stitch_and_store(
    results: list[ChunkResult], edit: ChunkedEdit, options: GenerationOptions, scratch: Path
) -> tuple[StoredOutput, tuple[str, bytes] | None]:
    """Join the chunks' edits with the source's audio, store the result and its preview picture."""
    logger = get_run_logger()
    storage = options.destination_storage
    # local_copies fetches from any block but a local file system; those copies are temporary.
    fetched = storage is not None and not isinstance(storage, LocalFileSystem)
    parts: list[Path] = []
    for chunk in results:
        copies = await local_copies(chunk.outputs, options.destination, storage)
        if not copies:
            raise media.MediaError(f"chunk {chunk.index} (job {chunk.job_id}) has no video output to stitch")
        parts.append(copies[0])
        if fetched:
            for extra in copies[1:]:
                discard(extra)
    out = scratch / f"{edit.source.stem}-aleph.mp4"
    sheet = scratch / "first-frames.jpg"
    try:
        probe, picture = await asyncio.to_thread(_stitch, parts, edit.source, out, sheet)
    finally:
        if fetched:
            for part in parts:
                discard(part)
    frame = 1.0 / probe.frame_rate if probe.frame_rate else 0.0
    drift = probe.duration_seconds - edit.probe.duration_seconds
    if abs(drift) > frame + 1e-6:
        logger.warning(
            "The stitched edit lasts %.3f s, the source %.3f s (%.3f s apart, more than one frame)",
            probe.duration_seconds,
            edit.probe.duration_seconds,
            drift,
        )
    folder = stitch_folder([c.job_id or "" for c in results])
    relative = f"{folder}/{edit.source.stem}-aleph.mp4"
    digest = await asyncio.to_thread(sha256_file, out)
    location = await store_file(
        out, relative, options.destination, storage, content_type="video/mp4", digest=digest
    )
    stitched = StoredOutput(
        asset_id="",
        path=relative,
        location=location,
        mime_type="video/mp4",
        size=digest.size,
        sha256=digest.sha256,
        output_index=0,
        kind="video",
    )
    logger.info(
        "Stitched %d edited chunks into %s (%.3f s, source %.3f s; %s audio; sha256 %s...)",
        len(parts),
        location,
        probe.duration_seconds,
        edit.probe.duration_seconds,
        "with the source's" if probe.has_audio else "no",
        digest.sha256[:12],
    )
    preview: tuple[str, bytes] | None = None
    if picture is not None:
        jpeg = await asyncio.to_thread(picture.read_bytes)
        where = await store_file(
            picture, f"{folder}/first-frames.jpg", options.destination, storage, content_type="image/jpeg"
        )
        preview = (where, jpeg if len(jpeg) <= PREVIEW_MAX_BYTES else b"")
    return stitched, preview
