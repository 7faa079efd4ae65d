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

from prefect_scenario import video as media
from prefect_scenario.flows._job import JobRunner, PaidJob
from prefect_scenario.flows._waves import WaveEntry, WaveRecord, Waves, load_record
from prefect_scenario.flows.aleph_chunks import AlephEdit, Chunk, ChunkPlan, ChunkReferences
from prefect_scenario.flows.result import ChunkResult
from prefect_scenario.models import ALEPH_MODEL_ID
from prefect_scenario.slot_leases import SlotLeases

RECORD_PREFIX = "scenario-chunk-waves"


class ChunkEntry(WaveEntry[ChunkResult]):
    """One chunk of a suspended split edit, as its record keeps it between attempts.

    Attributes:
        span: where the chunk lies in the source.
        Others: as :class:`~prefect_scenario.flows._waves.WaveEntry` (request, estimate, job, lease,
            the jobs that failed before).
    """

    span: media.ChunkSpan

    @property
    def slot(self) -> str:
        return f"chunk-{self.span.index}"


ChunkRecord = WaveRecord[ChunkEntry]


def record_key(flow_run_id: str) -> str:
    return f"{RECORD_PREFIX}-{flow_run_id}"


async def load_chunk_record(flow_run_id: str) -> ChunkRecord | None:
    """The record an earlier wave of this edit wrote (None: split the clip; see ``load_record``)."""
    return await load_record(record_key(flow_run_id), ChunkRecord)


def new_chunk_record(plan: ChunkPlan) -> ChunkRecord:
    """The record of a split edit about to run its first wave: every chunk as planned."""
    return ChunkRecord(
        started_at=time.time(),
        planned=plan.estimated,
        clips=[
            ChunkEntry(span=chunk.span, body=chunk.body, estimate=chunk.estimate) for chunk in plan.chunks
        ],
    )


def restored_plan(
    record: ChunkRecord, edit: AlephEdit, source: Path, probe: media.VideoProbe, scratch: Path
) -> ChunkPlan:
    """The plan as the first attempt made it: the chunks' requests, without their files (uploaded)."""
    chunks = [
        Chunk(
            span=entry.span,
            path=None,
            references=ChunkReferences(keyframes=[], prompt_images=[]),
            body=dict(entry.body or {}),
            estimate=entry.estimate,
            result=entry.result,
        )
        for entry in record.clips
    ]
    return ChunkPlan(edit=edit, source=source, probe=probe, chunks=chunks, scratch=scratch)


async def run_chunk_waves(
    plan: ChunkPlan,
    record: ChunkRecord,
    jobs: JobRunner,
    *,
    leases: SlotLeases,
    flow_run_id: str,
    max_parallel: int,
    retries: int,
) -> list[ChunkResult]:
    """Every chunk's job, in waves that suspend; one result per chunk once all are decided.

    Not delivered here: the chunks' jobs are settled once the stitched edit is stored.
    """

    async def finish(chunk: Chunk, paid: PaidJob) -> ChunkResult:
        return chunk.succeeded(paid, record.clips[chunk.span.index].failed_job_ids)

    async def tick() -> None:
        return None

    waves: Waves[Chunk, ChunkResult] = Waves(
        jobs=jobs,
        model_id=ALEPH_MODEL_ID,
        leases=leases,
        record_key=record_key(flow_run_id),
        finish=finish,
        tick=tick,
        max_in_flight=max(1, max_parallel),
        retries=retries,
        deliver=False,
    )
    await waves.go(plan.chunks, record)
    return [entry.result for entry in record.clips if entry.result is not None]


__all__ = [
    "ChunkEntry",
    "ChunkRecord",
    "load_chunk_record",
    "new_chunk_record",
    "restored_plan",
    "run_chunk_waves",
]
