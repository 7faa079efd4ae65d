"""What a batch shows in the UI: the progress bar while it runs, the clips table and the summary after.

The table has one row per clip in batch order (status, job or chunk jobs, cost, outputs, the layers'
PSNR for Video to Layers, what was done to the clip); the summary counts clips, creative units and
how fan-out was bounded. Artifact keys are per flow, so the Artifacts page keeps a history.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact, aupdate_progress_artifact
from prefect.logging import get_run_logger

from prefect_scenario.flows.reporting import artifact_key, model_name
from prefect_scenario.flows.result import BatchResult, ClipResult
from prefect_scenario.formatting import format_units
from prefect_scenario.models import VIDEO_LAYERS_MODEL_ID


def _cu(value: float | None) -> str:
    return format_units(value, unit=True, missing="no limit")


# The progress bar is written at most this often (plus once at the end): a PATCH per clip was a
# quarter of a busy batch's Prefect API calls, and the UI polls more slowly than this anyway.
PROGRESS_MIN_INTERVAL_SECONDS = 2.0


@dataclass
class BatchProgress:
    """The batch's progress artifact: clips finished (whatever the outcome) over clips in the batch.

    ``tick`` never waits for the API: the write happens in the background, at most once every
    :data:`PROGRESS_MIN_INTERVAL_SECONDS`, and ``flush`` writes the last figure before the run ends.
    """

    total: int
    artifact_id: UUID | None = None
    done: int = 0
    shown: int = -1
    _written_at: float = field(default=-math.inf, repr=False)
    _writer: asyncio.Task[None] | None = field(default=None, repr=False)

    def _percent(self) -> int:
        # Whole percents only: a thousand clips make at most a hundred updates.
        return int(100 * self.done / self.total) if self.total else 100

    async def tick(self, count: int = 1) -> None:
        self.done += count
        if self.artifact_id is not None and (self._writer is None or self._writer.done()):
            self._writer = asyncio.create_task(self._write(throttled=True))

    async def flush(self) -> None:
        """Write the current figure now (the run is about to end or suspend)."""
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self.artifact_id is not None:
            await self._write(throttled=False)

    async def _write(self, *, throttled: bool) -> None:
        while self.artifact_id is not None and self._percent() != self.shown:
            if throttled:
                await asyncio.sleep(self._written_at + PROGRESS_MIN_INTERVAL_SECONDS - time.monotonic())
            percent, self._written_at = self._percent(), time.monotonic()
            try:
                await aupdate_progress_artifact(artifact_id=self.artifact_id, progress=float(percent))
            except Exception as exc:
                get_run_logger().debug("batch progress not updated: %s", exc)
                return  # the next tick or the flush tries again
            self.shown = percent


def clips_table(result: BatchResult) -> list[dict[str, Any]]:
    """One row per clip, in batch order, for the table artifact."""
    layers = result.model_id == VIDEO_LAYERS_MODEL_ID
    rows: list[dict[str, Any]] = []
    for clip in result.clips:
        row: dict[str, Any] = {
            "clip": clip.source,
            "status": clip.status,
            "job_id": clip.job_id or _chunk_jobs(clip),
            "estimate_cu": clip.estimated_creative_units,
            "cost_cu": clip.creative_units_cost,
            "reused": clip.reused,
            "outputs": len(clip.outputs),
        }
        if layers:
            row["psnr_db"] = clip.composite_psnr_db
        row["stored_in"] = clip.stored_in or ""
        row["notes"] = "; ".join(clip.notes)
        row["error"] = clip.error or ""
        rows.append(row)
    return rows


def _chunk_jobs(clip: ClipResult) -> str:
    if not clip.chunk_job_ids:
        return ""
    return f"{len(clip.chunk_job_ids)} chunk jobs: " + ", ".join(clip.chunk_job_ids)


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
        f"| Budget | {_cu(result.budget_creative_units)} |",
        f"| Planned (estimates) | {_cu(result.planned_creative_units)} |",
        f"| Spent by this run | {_cu(result.creative_units_cost)} |",
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


__all__ = ["BatchProgress", "clips_table", "publish_batch_artifacts", "summary_markdown"]
