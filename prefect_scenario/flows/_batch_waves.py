"""``wait="suspend"`` for a batch: its clips run in waves (:mod:`prefect_scenario.flows._waves`).

The first attempt prepares and plans every clip exactly as inline mode does (fetch, check, upload,
estimate; the budget plan before anything is spent) and writes the batch's record: every clip as
prepared. A resumed attempt reads it, and neither lists, fetches nor uploads again; a clip whose
review reads the clip itself (layers: the PSNR) is fetched again when its job ended, since the
attempt that uploaded it is gone.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from prefect_scenario.flows._chunk_waves import ChunkEntry, chunk_entries, finish_chunk, restored_chunks
from prefect_scenario.flows._job import JobRunner, PaidJob
from prefect_scenario.flows._waves import WaveEntry, WaveRecord, Waves, load_record, record_key, save_record
from prefect_scenario.flows.aleph_chunks import Chunk
from prefect_scenario.flows.result import ClipResult
from prefect_scenario.slot_leases import SlotLeases

if TYPE_CHECKING:
    from prefect_scenario.flows._batch_clip import BatchClip


class WaveClip(WaveEntry[ClipResult]):
    """One clip of a suspended batch, as its record keeps it between attempts.

    Attributes:
        given: the clip as the batch was given it.
        asset_id: its uploaded asset (None: it failed before).
        notes: what was done to it.
        chunks: a clip split into chunks (Runway Aleph 2 over its limits): its chunks' entries,
            paid and waited for in the same waves; the clip is stitched once they are decided.
        Others: as :class:`~prefect_scenario.flows._waves.WaveEntry` (body, estimate, job, lease).
    """

    given: str
    asset_id: str | None = None
    notes: list[str] = Field(default_factory=list)
    chunks: list[ChunkEntry] | None = None

    @property
    def slot(self) -> str:
        return slot_of(self.given)


BatchRecord = WaveRecord[WaveClip]
# A batch's waves pay for clips and for the chunks of split clips alike.
BatchWaves = Waves["BatchClip | Chunk", BaseModel]


def slot_of(given: str) -> str:
    """The journal slot of a batch clip: short, stable, the same whatever the clip's position."""
    return "clip-" + hashlib.sha256(given.encode()).hexdigest()[:16]


async def load_batch_record(flow_run_id: str) -> BatchRecord | None:
    """The record an earlier wave of this batch wrote (None: start the batch; see ``load_record``)."""
    return await load_record(record_key("batch", flow_run_id), BatchRecord)


def batch_waves(
    jobs: JobRunner,
    model_id: str,
    leases: SlotLeases,
    flow_run_id: str,
    finish: Callable[[BatchClip, PaidJob], Awaitable[ClipResult]],
    tick: Callable[[], Awaitable[None]],
    *,
    fetch_source: bool = False,
) -> BatchWaves:
    """A suspended batch's waves: its clips' (and split clips' chunks') jobs paid, waited for by
    suspending, finished.

    Args:
        jobs: the batch's paid path.
        model_id: the Scenario model.
        leases: the batch's slots of the global concurrency limit.
        flow_run_id: this flow run (the record's key, the leases' holder).
        finish: makes a clip's result from its stored job (the batch's reporting and review).
        tick: counts a clip finished on the batch's progress bar.
        fetch_source: a finished clip's review reads the clip itself: fetch it again.
    """

    async def finished(item: BatchClip | Chunk, paid: PaidJob, entry: WaveEntry[Any]) -> BaseModel:
        if isinstance(item, Chunk):
            return await finish_chunk(item, paid, entry)
        if fetch_source and item.local is None:
            item.local = await item.source.fetch()
        return await finish(item, paid)

    async def decided(item: BatchClip | Chunk) -> None:
        if not isinstance(item, Chunk):
            await tick()

    return Waves(jobs, model_id, leases, record_key("batch", flow_run_id), finished, decided)


async def run_batch_waves(
    waves: BatchWaves,
    clips: list[BatchClip],
    record: BatchRecord,
    stitch: Callable[[BatchClip, list[ChunkEntry]], Awaitable[ClipResult]],
) -> None:
    """Every clip of ``record`` decided: waves until every job ended, then each split clip
    stitched from its chunks (``stitch``: the batch's, as inline)."""
    items: list[BatchClip | Chunk] = []
    entries: list[WaveEntry[Any]] = []
    split: list[tuple[BatchClip, WaveClip]] = []
    for clip, entry in zip(clips, record.clips, strict=True):
        if entry.chunks is None:
            items.append(clip)
            entries.append(entry)
        elif entry.result is None:
            items.extend(restored_chunks(entry.chunks))
            entries.extend(entry.chunks)
            split.append((clip, entry))
    await waves.go(items, record, entries)
    for clip, entry in split:
        assert entry.chunks is not None
        clip.result = entry.result = await stitch(clip, entry.chunks)
        await waves.tick(clip)


def new_record(clips: list[BatchClip], planned: float, chunk_retries: int) -> BatchRecord:
    """The record of a batch about to run its first wave: every clip as prepared and planned (a
    split clip's chunks each retried ``chunk_retries`` times after a failed job)."""
    return BatchRecord(
        started_at=time.time(),
        planned=planned,
        clips=[
            WaveClip(
                given=clip.source.given,
                asset_id=clip.asset_id,
                body=clip.body,
                estimate=clip.estimate,
                notes=list(clip.notes),
                chunks=(
                    chunk_entries(clip.chunks, chunk_retries, slot_of(clip.source.given))
                    if clip.chunks is not None and clip.result is None
                    else None
                ),
                result=clip.result,
            )
            for clip in clips
        ],
    )


__all__ = [
    "BatchRecord",
    "BatchWaves",
    "WaveClip",
    "batch_waves",
    "load_batch_record",
    "new_record",
    "run_batch_waves",
    "save_record",
    "slot_of",
]
