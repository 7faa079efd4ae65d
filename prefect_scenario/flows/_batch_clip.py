"""One clip on its way through a batch: where it comes from, what was prepared, its outcome."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect_scenario.clip_source import ClipSource, SourceStorage
from prefect_scenario.flows.aleph_chunks import ChunkPlan
from prefect_scenario.flows.result import FAILED, ClipResult
from prefect_scenario.models import CostEstimate
from prefect_scenario.storage import discard

if TYPE_CHECKING:
    from prefect_scenario.flows._batch_waves import WaveClip

# Longest error text kept per clip (the table and the final state message stay readable).
ERROR_CHARS = 300


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


@dataclass
class BatchClip:
    """One clip on its way through the batch; ``result`` is set once its fate is known."""

    source: ClipSource
    local: Path | None = None
    body: dict[str, Any] | None = None
    asset_id: str | None = None
    estimate: CostEstimate | None = None
    chunks: ChunkPlan | None = None
    scratch: Path | None = None
    notes: list[str] = field(default_factory=list)
    result: ClipResult | None = None

    @property
    def estimated(self) -> float | None:
        if self.chunks is not None:
            return self.chunks.estimated if all(c.estimate for c in self.chunks.chunks) else None
        return self.estimate.creative_units_cost if self.estimate is not None else None

    @classmethod
    def restored(cls, entry: WaveClip, storage: SourceStorage | None) -> BatchClip:
        """A clip as a suspended batch's record kept it (prepared, maybe decided)."""
        return cls(
            source=ClipSource.of(entry.given, storage),
            body=entry.body,
            asset_id=entry.asset_id,
            estimate=entry.estimate,
            notes=list(entry.notes),
            result=entry.result,
        )

    def report(self, **values: Any) -> ClipResult:
        values.setdefault("estimated_creative_units", self.estimated)
        return ClipResult(video=self.source.given, source=self.source.name, notes=list(self.notes), **values)

    @property
    def label(self) -> str:
        """The clip as logs name it."""
        return f"Clip {self.source.name}"

    def failed(
        self, exc: BaseException, job_id: str | None = None, failed_job_ids: Sequence[str] = ()
    ) -> ClipResult:
        """Its result when ``exc`` ended it (a batch clip is never bought again: no failed jobs)."""
        return self.report(status=FAILED, job_id=job_id, error=describe(exc))

    def release(self) -> None:
        """Remove what this clip fetched or made locally (its outputs are stored by then)."""
        if self.local is not None and self.source.kind == "block":
            discard(self.local)
        self.local = None
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


__all__ = ["ERROR_CHARS", "BatchClip", "describe"]
