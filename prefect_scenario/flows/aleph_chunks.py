"""Clips over Runway Aleph 2's limits (30 s, 16 MiB), edited in chunks and stitched back.

The clip is cut into chunks within both limits, at scene cuts or the source's keyframes where there
is one near an even split (``video.plan_split``). Then:

1. every chunk is uploaded (cached by content), and every reference image once (:func:`plan_chunks`);
2. each keyframe (and prompt image) goes to the chunk holding its time, at the chunk's local time;
3. the chunks are estimated (dry runs, free), so the **total** is checked against a budget before a
   single creative unit is spent (the single flow's ``max_creative_units``, the batch's plan);
4. every chunk job runs through the one paid path (:class:`~prefect_scenario.flows._job.JobRunner`),
   with the same prompt and seed, each holding a slot of the caller's
   :class:`~prefect_scenario.slot_pool.SlotPool` (:func:`run_chunks`);
5. a chunk whose job failed on the server is submitted again as a new job (``chunk_retries``
   times); a refused request (400) is the input's fault and is not;
6. only a complete set is stitched (:func:`finish_chunks`: ``video.concat_videos``, with the
   source's audio) and stored with its sha256; then the chunks' ledger entries are settled.
   Otherwise the chunks' failure is reported (:func:`chunks_failure`) and the finished chunks'
   outputs stay stored: they are paid for, and a rerun reuses their jobs.

``aleph_edit`` (``allow_split``) and ``aleph_edit_batch`` both edit long clips with these functions.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.filesystems import LocalFileSystem, WritableFileSystem
from prefect.logging import get_run_logger

from prefect_scenario import video as media
from prefect_scenario.blocks import ScenarioCredentials
from prefect_scenario.clip_source import ClipSource
from prefect_scenario.errors import ChunksFailedError, JobCanceledError, JobFailedError
from prefect_scenario.flows._job import JobOrder, JobRunner, PaidJob
from prefect_scenario.flows.chunk_references import ChunkReferences, map_references
from prefect_scenario.flows.layers_review import Preview
from prefect_scenario.flows.reporting import PREVIEW_MAX_BYTES, local_copies
from prefect_scenario.flows.result import ESTIMATED, ChunkResult
from prefect_scenario.formatting import format_units, mebibytes
from prefect_scenario.manifest import StoredOutput
from prefect_scenario.models import (
    ALEPH_MAX_VIDEO_BYTES,
    ALEPH_MAX_VIDEO_SECONDS,
    ALEPH_MODEL_ID,
    AlephInput,
    CostEstimate,
    Keyframe,
    PromptImage,
)
from prefect_scenario.storage import discard, sha256_file, store_file
from prefect_scenario.tasks import upload_image, upload_video
from prefect_scenario.tasks.submit import ledger_key, mark_delivered
from prefect_scenario.tasks.upload import ensure_uploaded
from prefect_scenario.validation import KeyframeSpec, PromptImageSpec

# Chunks are planned a second short of the 30 s limit: a container's duration (audio priming,
# timestamp rounding) can come out a little longer than its frames, and the API measures the file.
CHUNK_MAX_SECONDS = ALEPH_MAX_VIDEO_SECONDS - 1.0
DEFAULT_CHUNK_RETRIES = 1
# Chunk files checked and uploaded at once: uploads share the machine's bandwidth.
UPLOAD_CONCURRENCY = 3


@dataclass(frozen=True)
class AlephEdit:
    """A checked Runway Aleph 2 request, before its clip is uploaded.

    Attributes:
        clip: where the clip lives.
        local: its local copy (None for an asset id).
        prompt: the edit, the same for every chunk.
        keyframes: reference images pinned to times of the whole clip.
        prompt_images: reference images placed at times of the whole output.
        seed: the seed, the same for every chunk (None: a fresh draw per run).
    """

    clip: ClipSource
    local: Path | None
    prompt: str
    keyframes: list[KeyframeSpec] = field(default_factory=list)
    prompt_images: list[PromptImageSpec] = field(default_factory=list)
    seed: int | None = None

    @property
    def sources(self) -> dict[str, str]:
        """Where the inputs came from, for the record."""
        return {
            "video": self.clip.name,
            **{f"keyframes[{i}]": k.image for i, k in enumerate(self.keyframes)},
            **{f"promptImage[{i}]": p.image for i, p in enumerate(self.prompt_images)},
        }

    @property
    def inputs(self) -> dict[str, Any]:
        """What every chunk shares, as recorded on a split edit's result."""
        return {"prompt": self.prompt, **({"seed": self.seed} if self.seed is not None else {})}

    def body(self, asset_id: str, keyframes: list[Keyframe], images: list[PromptImage]) -> dict[str, Any]:
        """The wire body of this edit's job for an uploaded clip (or chunk) and uploaded references."""
        return AlephInput(
            prompt=self.prompt,
            video=asset_id,
            keyframes=keyframes or None,
            prompt_image=images or None,
            seed=self.seed,
        ).to_body()


@dataclass
class Chunk:
    """One chunk of a split clip: its span, its file, its request and its estimate.

    ``path`` is None for a chunk a resumed attempt restored from its record (cut and uploaded by
    the first attempt); ``result`` is set once the chunk's fate is known.
    """

    span: media.ChunkSpan
    path: Path | None
    references: ChunkReferences
    body: dict[str, Any] = field(default_factory=dict)
    estimate: CostEstimate | None = None
    result: ChunkResult | None = None

    @property
    def estimated(self) -> float | None:
        """The chunk's dry-run estimate, once taken."""
        return self.estimate.creative_units_cost if self.estimate is not None else None

    @property
    def where(self) -> str:
        """The chunk as logs name it."""
        return f"chunk {self.span.index} ({self.span.start_seconds:.2f}-{self.span.end_seconds:.2f} s)"

    @property
    def label(self) -> str:
        """The chunk as a log line starts with it."""
        return f"Aleph {self.where}"

    def report(self, **values: Any) -> ChunkResult:
        """This chunk's result with ``values`` (status, job, cost, outputs...)."""
        return ChunkResult(
            index=self.span.index,
            start_seconds=self.span.start_seconds,
            end_seconds=self.span.end_seconds,
            inputs=dict(self.body),
            estimated_creative_units=self.estimated,
            **values,
        )

    def succeeded(self, paid: PaidJob, failed_job_ids: Sequence[str] = ()) -> ChunkResult:
        """Its result once its job succeeded and its outputs are stored (logged)."""
        get_run_logger().info(
            "%s done: Scenario job %s, %s creative units%s",
            self.label,
            paid.job.job_id,
            format_units(paid.billed),
            " (reused: nothing spent)" if paid.reused else "",
        )
        return self.report(
            status=paid.job.status.value,
            job_id=paid.job.job_id,
            creative_units_cost=paid.billed,
            outputs=paid.outputs,
            failed_job_ids=list(failed_job_ids),
            reused=paid.reused,
        )

    def failed(
        self, error: BaseException, job_id: str | None = None, failed_job_ids: Sequence[str] = ()
    ) -> ChunkResult:
        """Its result when ``error`` ended it (``failed_job_ids``: its earlier jobs, bought again)."""
        text = " ".join(str(error).split()) or type(error).__name__
        get_run_logger().error("%s failed: %s", self.label, text)
        return self.report(
            status="failure" if isinstance(error, JobFailedError) else "failed",
            job_id=job_id,
            failed_job_ids=list(failed_job_ids),
            error=text,
        )

    def release(self) -> None:
        """Nothing to remove: the chunk files live in the plan's scratch directory."""


@dataclass(frozen=True)
class ChunkPlan:
    """A clip split into chunks, uploaded and priced: what runs, and what the stitch needs.

    Attributes:
        edit: the request.
        source: the clip's local copy (the stitch takes its audio).
        probe: the clip's probe.
        chunks: the chunks, in order.
        scratch: the directory holding the chunk files (the caller removes it).
    """

    edit: AlephEdit
    source: Path
    probe: media.VideoProbe
    chunks: list[Chunk]
    scratch: Path

    @property
    def estimated(self) -> float:
        """The total of the chunks' estimates."""
        return sum(chunk.estimated or 0.0 for chunk in self.chunks)

    def estimates_line(self) -> str:
        """Each chunk's estimate, for logs and messages (``12 + 12 + 8``)."""
        return " + ".join(format_units(chunk.estimated) for chunk in self.chunks)

    def note(self) -> str:
        """What was done to the clip, in words, for the result and the summary."""
        return f"the clip was edited in {len(self.chunks)} chunks and stitched back (allow_split)"

    def dry_run_results(self) -> list[ChunkResult]:
        """Every chunk as a dry run reports it."""
        return [chunk.report(status=ESTIMATED) for chunk in self.chunks]


# -- mapping reference images to chunks --------------------------------------------------------


# -- splitting, uploading, pricing -------------------------------------------------------------


def split_clip(source: Path, out_dir: Path) -> list[tuple[media.ChunkSpan, Path]]:
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
                f"{mebibytes(probe.size_bytes)}, over Runway Aleph 2's limits: re-export the clip "
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


async def _upload_references(chunks: list[Chunk], credentials: ScenarioCredentials) -> dict[str, str]:
    """Every reference image as an asset id, uploaded once per content."""
    images = {k.image for chunk in chunks for k in chunk.references.keyframes} | {
        p.image for chunk in chunks for p in chunk.references.prompt_images
    }
    ids: dict[str, str] = {}
    for image in sorted(images):
        ids[image] = await ensure_uploaded(upload_image, image, credentials=credentials)
    return ids


def _body(chunk: Chunk, asset_id: str, image_ids: dict[str, str], edit: AlephEdit) -> dict[str, Any]:
    keyframes = [Keyframe(uri=image_ids[k.image], seconds=k.seconds) for k in chunk.references.keyframes]
    images = [
        PromptImage(uri=image_ids[p.image], position_type="timestamp", timestamp_seconds=p.timestamp_seconds)
        for p in chunk.references.prompt_images
    ]
    return edit.body(asset_id, keyframes, images)


async def plan_chunks(
    edit: AlephEdit,
    source: Path,
    probe: media.VideoProbe,
    scratch: Path,
    jobs: JobRunner,
    *,
    estimate: bool = True,
) -> ChunkPlan:
    """Split the clip, upload every chunk and reference image, build each chunk's request, price them.

    Args:
        edit: the checked request.
        source: the clip's local copy.
        probe: its probe.
        scratch: a directory for the chunk files (the caller removes it).
        jobs: the paid path (its credentials upload; its estimate prices).
        estimate: take every chunk's dry-run estimate (False: the submits price them, no budget).

    Returns:
        The plan, every chunk with its request (and estimate).

    Raises:
        MediaError: the clip could not be split within the limits.
    """
    logger = get_run_logger()
    split = await asyncio.to_thread(split_clip, source, scratch / "chunks")
    spans = [span for span, _ in split]
    references = map_references(spans, edit.keyframes, edit.prompt_images, probe.duration_seconds)
    chunks = [
        Chunk(span=span, path=path, references=refs)
        for (span, path), refs in zip(split, references, strict=True)
    ]
    logger.info(
        "Clip %s (%.2f s, %s) is over Runway Aleph 2's limits (%.0f s, %s): edited as %d chunks: %s",
        edit.clip.file_name,
        probe.duration_seconds,
        mebibytes(probe.size_bytes),
        ALEPH_MAX_VIDEO_SECONDS,
        mebibytes(ALEPH_MAX_VIDEO_BYTES),
        len(chunks),
        "; ".join(
            f"{c.span.start_seconds:.2f}-{c.span.end_seconds:.2f} s (cut: {c.span.cut}, "
            f"{len(c.references.keyframes) + len(c.references.prompt_images)} reference(s))"
            for c in chunks
        ),
    )
    image_ids = await _upload_references(chunks, jobs.credentials)
    gate = asyncio.Semaphore(UPLOAD_CONCURRENCY)

    async def upload(chunk: Chunk) -> None:
        async with gate:
            assert chunk.path is not None
            asset_id = await ensure_uploaded(upload_video, str(chunk.path), credentials=jobs.credentials)
        chunk.body = _body(chunk, asset_id, image_ids, edit)
        if estimate:
            chunk.estimate = await jobs.estimate(ALEPH_MODEL_ID, chunk.body)

    await asyncio.gather(*(upload(chunk) for chunk in chunks))
    plan = ChunkPlan(edit=edit, source=source, probe=probe, chunks=chunks, scratch=scratch)
    if estimate:
        logger.info(
            "Estimate for the whole clip %s: %s creative units for %d chunks (%s); nothing is spent yet",
            edit.clip.file_name,
            format_units(plan.estimated),
            len(chunks),
            plan.estimates_line(),
        )
    return plan


# -- running the chunks -----------------------------------------------------------------------------


async def _run_chunk(chunk: Chunk, jobs: JobRunner, retries: int) -> ChunkResult:
    """One chunk through the paid path, a server-side job failure retried as a new job."""
    logger = get_run_logger()
    failed_jobs: list[str] = []
    seen: list[str] = []
    attempt = 0
    while True:
        try:
            # Not delivered here: the chunks' jobs are settled once the stitched edit is stored.
            paid = await jobs.run(
                JobOrder(ALEPH_MODEL_ID, chunk.body, estimate=chunk.estimate, fresh=attempt > 0),
                deliver=False,
                on_submitted=lambda submitted: seen.append(submitted.job_id),
            )
        except JobCanceledError as exc:
            # Someone canceled it: running it again would go against them.
            return chunk.failed(exc, exc.job_id, failed_jobs)
        except JobFailedError as exc:
            failed_jobs.append(exc.job_id)
            if attempt < retries:
                attempt += 1
                logger.warning(
                    "Aleph %s: Scenario job %s failed on the server (%s); submitting the chunk again as a "
                    "new job (retry %d of %d)",
                    chunk.where,
                    exc.job_id,
                    exc.error or "no reason given",
                    attempt,
                    retries,
                )
                continue
            return chunk.failed(exc, exc.job_id, failed_jobs[:-1])
        except Exception as exc:
            # A refused request (400: the input's fault), a lost connection, a wait that timed out,
            # a lost download: another job would not help, or might be a second paid one.
            return chunk.failed(exc, seen[-1] if seen else None, failed_jobs)
        return chunk.succeeded(paid, failed_jobs)


async def run_chunks(plan: ChunkPlan, jobs: JobRunner, *, retries: int) -> list[ChunkResult]:
    """Every chunk's job at once, each holding a slot of ``jobs.slots``; one result per chunk."""
    return list(await asyncio.gather(*(_run_chunk(chunk, jobs, retries) for chunk in plan.chunks)))


@dataclass(frozen=True)
class StitchedEdit:
    """A split clip's edit, stitched back, stored, and its chunks' jobs settled."""

    output: StoredOutput
    preview: Preview | None
    creative_units_cost: float | None  # None when any chunk's cost is unknown
    reused: bool  # every chunk came from an earlier run: nothing was spent


def chunks_failure(results: list[ChunkResult]) -> ChunksFailedError | None:
    """The error to report when any chunk failed (a split clip is never stitched from a partial set)."""
    failed = [c for c in results if c.status != "success"]
    return chunks_failed(failed, results) if failed else None


async def finish_chunks(results: list[ChunkResult], plan: ChunkPlan, jobs: JobRunner) -> StitchedEdit:
    """Stitch every chunk's edit with the source's audio, store it, then settle the chunks' ledger entries.

    Settling comes last: until the stitched edit is stored, a rerun must find the chunks' jobs again.
    """
    stitched, preview = await stitch_chunks(
        results, plan, destination=jobs.destination, storage=jobs.destination_storage
    )
    for chunk in results:
        if chunk.job_id is not None:
            await mark_delivered(chunk.job_id, ledger_key(ALEPH_MODEL_ID, chunk.inputs, jobs.credentials))
    billed = [chunk.creative_units_cost for chunk in results]
    cost = None if any(b is None for b in billed) else sum(b or 0.0 for b in billed)
    return StitchedEdit(stitched, preview, cost, reused=all(c.reused for c in results))


# -- stitching ------------------------------------------------------------------------------------


async def stitch_chunks(
    results: list[ChunkResult],
    plan: ChunkPlan,
    *,
    destination: str,
    storage: WritableFileSystem | None,
) -> tuple[StoredOutput, Preview | None]:
    """Join the chunks' edits with the source's audio, store the result and its preview picture.

    Args:
        results: every chunk's result, all successful, in order.
        plan: the split clip (its local source, for the audio and the before/after picture).
        destination: where the outputs go.
        storage: the destination block (None: the local disk).

    Returns:
        The stitched video as stored (with its sha256), and the first-frames picture.
    """
    logger = get_run_logger()
    scratch = plan.scratch
    # local_copies fetches from any block but a local file system; those copies are temporary.
    fetched = storage is not None and not isinstance(storage, LocalFileSystem)
    parts: list[Path] = []
    for chunk in results:
        copies = await local_copies(chunk.outputs, destination, storage)
        if not copies:
            raise media.MediaError(f"chunk {chunk.index} (job {chunk.job_id}) has no video output to stitch")
        parts.append(copies[0])
        if fetched:
            for extra in copies[1:]:
                discard(extra)
    out = scratch / f"{plan.source.stem}-aleph.mp4"
    sheet = scratch / "first-frames.jpg"
    try:
        probe, picture = await asyncio.to_thread(_stitch, parts, plan.source, out, sheet)
    finally:
        if fetched:
            for part in parts:
                discard(part)
    frame = 1.0 / probe.frame_rate if probe.frame_rate else 0.0
    drift = probe.duration_seconds - plan.probe.duration_seconds
    if abs(drift) > frame + 1e-6:
        logger.warning(
            "The stitched edit lasts %.3f s, the source %.3f s (%.3f s apart, more than one frame)",
            probe.duration_seconds,
            plan.probe.duration_seconds,
            drift,
        )
    folder = stitch_folder([c.job_id or "" for c in results])
    relative = f"{folder}/{plan.source.stem}-aleph.mp4"
    digest = await asyncio.to_thread(sha256_file, out)
    location = await store_file(out, relative, destination, storage, content_type="video/mp4", digest=digest)
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
        plan.probe.duration_seconds,
        "with the source's" if probe.has_audio else "no",
        digest.sha256[:12],
    )
    preview: tuple[str, bytes] | None = None
    if picture is not None:
        jpeg = await asyncio.to_thread(picture.read_bytes)
        where = await store_file(
            picture, f"{folder}/first-frames.jpg", destination, storage, content_type="image/jpeg"
        )
        preview = (where, jpeg if len(jpeg) <= PREVIEW_MAX_BYTES else b"")
    return stitched, preview


def chunks_failed(failed: list[ChunkResult], results: list[ChunkResult]) -> ChunksFailedError:
    """The error of a split edit some of whose chunks failed: which ones, why, what is kept."""
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
