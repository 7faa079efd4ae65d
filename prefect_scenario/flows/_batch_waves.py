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
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import Field

from prefect_scenario.flows._job import JobRunner, PaidJob
from prefect_scenario.flows._waves import WaveEntry, WaveRecord, Waves, load_record, save_record
from prefect_scenario.flows.result import ClipResult
from prefect_scenario.slot_leases import SlotLeases

if TYPE_CHECKING:
    from prefect_scenario.flows._batch_clip import BatchClip

RECORD_PREFIX = "scenario-batch-waves"


class WaveClip(WaveEntry[ClipResult]):
    """One clip of a suspended batch, as its record keeps it between attempts.

    Attributes:
        given: the clip as the batch was given it.
        asset_id: its uploaded asset (None: it failed before).
        notes: what was done to it.
        Others: as :class:`~prefect_scenario.flows._waves.WaveEntry` (body, estimate, job, lease).
    """

    given: str
    asset_id: str | None = None
    notes: list[str] = Field(default_factory=list)

    @property
    def slot(self) -> str:
        return slot_of(self.given)


BatchRecord = WaveRecord[WaveClip]


def slot_of(given: str) -> str:
    """The journal slot of a batch clip: short, stable, the same whatever the clip's position."""
    return "clip-" + hashlib.sha256(given.encode()).hexdigest()[:16]


def record_key(flow_run_id: str) -> str:
    return f"{RECORD_PREFIX}-{flow_run_id}"


async def load_batch_record(flow_run_id: str) -> BatchRecord | None:
    """The record an earlier wave of this batch wrote (None: start the batch; see ``load_record``)."""
    return await load_record(record_key(flow_run_id), BatchRecord)


@dataclass
class BatchWaves:
    """A suspended batch's waves: its clips' jobs paid, waited for by suspending, finished.

    Attributes:
        jobs: the batch's paid path.
        model_id: the Scenario model.
        leases: the batch's slots of the global concurrency limit.
        flow_run_id: this flow run (the record's key, the leases' holder).
        finish: makes a clip's result from its stored job (the batch's reporting and review).
        tick: counts a clip finished on the batch's progress bar.
        fetch_source: a finished clip's review reads the clip itself: fetch it again.
    """

    jobs: JobRunner
    model_id: str
    leases: SlotLeases
    flow_run_id: str
    finish: Callable[[BatchClip, PaidJob], Awaitable[ClipResult]]
    tick: Callable[[], Awaitable[None]]
    fetch_source: bool = False

    async def _finish(self, clip: BatchClip, paid: PaidJob) -> ClipResult:
        if self.fetch_source and clip.local is None:
            clip.local = await clip.source.fetch()
        return await self.finish(clip, paid)

    async def go(self, clips: list[BatchClip], record: BatchRecord) -> None:
        """Run waves until every clip is decided; suspends (the process exits) while jobs run."""
        waves: Waves[BatchClip, ClipResult] = Waves(
            jobs=self.jobs,
            model_id=self.model_id,
            leases=self.leases,
            record_key=record_key(self.flow_run_id),
            finish=self._finish,
            tick=self.tick,
        )
        await waves.go(clips, record)


def new_record(clips: list[BatchClip], planned: float) -> BatchRecord:
    """The record of a batch about to run its first wave: every clip as prepared and planned."""
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
                result=clip.result,
            )
            for clip in clips
        ],
    )


__all__ = [
    "BatchRecord",
    "BatchWaves",
    "WaveClip",
    "load_batch_record",
    "new_record",
    "save_record",
    "slot_of",
]
