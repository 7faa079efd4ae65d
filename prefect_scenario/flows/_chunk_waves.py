"""``wait="suspend"`` for a split edit: its chunk jobs run in waves (:mod:`prefect_scenario.flows._waves`).

The first attempt splits the clip, uploads and prices every chunk and checks the total against the
budget exactly as inline mode does, then writes the edit's record: every chunk's span, request and
estimate. Each attempt submits chunks up to ``max_parallel_chunks`` (and the free slots of the
batches' global concurrency limit, as leases that outlive the process), suspends until ANY of
them ends, and finishes what ended; a chunk whose job failed on the server is submitted again as
a new job (``chunk_retries`` times). A resumed attempt neither splits, uploads nor prices again.
Once every chunk is decided, the edit is stitched (only from a complete set) as inline.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect_scenario import video as media
from prefect_scenario.flows._job import JobRunner, PaidJob
from prefect_scenario.flows._waves import WaveEntry, WaveRecord, Waves, load_record, record_key
from prefect_scenario.flows.aleph_chunks import AlephEdit, Chunk, ChunkPlan
from prefect_scenario.flows.chunk_references import ChunkReferences
from prefect_scenario.flows.result import ChunkResult
from prefect_scenario.models import ALEPH_MODEL_ID
from prefect_scenario.slot_leases import SlotLeases


class ChunkEntry(WaveEntry[ChunkResult]):
    """One chunk of a suspended split edit, as its record keeps it between attempts.

    Attributes:
        span: where the chunk lies in the source.
        slot_prefix: its journal slot's prefix (a batch clip's chunks: the clip's own slot).
        Others: as :class:`~prefect_scenario.flows._waves.WaveEntry` (request, estimate, job, lease,
            the jobs that failed before).
    """

    span: media.ChunkSpan

    slot_prefix: str = "chunk"

    @property
    def slot(self) -> str:
        return f"{self.slot_prefix}-{self.span.index}"

    @property
    def delivers(self) -> bool:
        # Settled once the stitched edit is stored: until then a rerun must find the chunk's job.
        return False


ChunkRecord = WaveRecord[ChunkEntry]


async def load_chunk_record(flow_run_id: str) -> ChunkRecord | None:
    """The record an earlier wave of this edit wrote (None: split the clip; see ``load_record``)."""
    return await load_record(record_key("chunk", flow_run_id), ChunkRecord)


def chunk_entries(plan: ChunkPlan, retries: int, slot_prefix: str = "chunk") -> list[ChunkEntry]:
    """Every chunk of ``plan`` as its record keeps it, before its first wave."""
    return [
        ChunkEntry(
            span=chunk.span,
            body=chunk.body,
            estimate=chunk.estimate,
            retries=retries,
            slot_prefix=slot_prefix,
        )
        for chunk in plan.chunks
    ]


def new_chunk_record(plan: ChunkPlan, retries: int) -> ChunkRecord:
    """The record of a split edit about to run its first wave: every chunk as planned."""
    return ChunkRecord(started_at=time.time(), planned=plan.estimated, clips=chunk_entries(plan, retries))


def restored_chunks(entries: list[ChunkEntry]) -> list[Chunk]:
    """The chunks as the first attempt planned them: their requests, without their files (uploaded)."""
    return [
        Chunk(
            span=entry.span,
            path=None,
            references=ChunkReferences(keyframes=[], prompt_images=[]),
            body=dict(entry.body or {}),
            estimate=entry.estimate,
            result=entry.result,
        )
        for entry in entries
    ]


def restored_plan(
    entries: list[ChunkEntry], edit: AlephEdit, source: Path, probe: media.VideoProbe, scratch: Path
) -> ChunkPlan:
    """The plan as the first attempt made it: the chunks' requests, without their files (uploaded)."""
    return ChunkPlan(edit=edit, source=source, probe=probe, chunks=restored_chunks(entries), scratch=scratch)


async def finish_chunk(chunk: Chunk, paid: PaidJob, entry: WaveEntry[Any]) -> ChunkResult:
    """A chunk's result once its job succeeded and its outputs are stored."""
    return chunk.succeeded(paid, entry.failed_job_ids)


async def run_chunk_waves(
    plan: ChunkPlan,
    record: ChunkRecord,
    jobs: JobRunner,
    *,
    leases: SlotLeases,
    flow_run_id: str,
    max_parallel: int,
) -> list[ChunkResult]:
    """Every chunk's job, in waves that suspend; one result per chunk once all are decided.

    Not delivered here: the chunks' jobs are settled once the stitched edit is stored.
    """

    async def tick(chunk: Chunk) -> None:
        return None

    waves: Waves[Chunk, ChunkResult] = Waves(
        jobs,
        ALEPH_MODEL_ID,
        leases,
        record_key("chunk", flow_run_id),
        finish_chunk,
        tick,
        max_in_flight=max(1, max_parallel),
    )
    await waves.go(plan.chunks, record)
    return [entry.result for entry in record.clips if entry.result is not None]


__all__ = [
    "ChunkEntry",
    "ChunkRecord",
    "chunk_entries",
    "finish_chunk",
    "load_chunk_record",
    "new_chunk_record",
    "restored_chunks",
    "restored_plan",
    "run_chunk_waves",
]
