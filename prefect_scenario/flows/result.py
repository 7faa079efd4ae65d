"""What the flows return: the job, what it cost, where its outputs are, how long each phase took.

:class:`ScenarioRunResult` for the single flows, :class:`BatchResult` (one :class:`ClipResult` per
clip) for the batch flows.

The result is persisted by Prefect (the flows run with ``persist_result=True``), so it holds ids,
numbers, paths and hashes only: never a client, a block or a secret.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from prefect_scenario.formatting import format_units
from prefect_scenario.manifest import StoredOutput

# The status of a dry run (nothing was submitted); every other status is the job's own.
ESTIMATED = "estimated"


class PhaseTimings(BaseModel):
    """Wall-clock seconds of each phase of a flow run (0 for a phase that did not run).

    Attributes:
        validate_seconds: local checks of the inputs (probing the clip, the images).
        prepare_seconds: local media work before upload: fitting the clip to the limits, or
            splitting it into chunks.
        upload_seconds: making the clip and the reference images Scenario assets.
        submit_seconds: the estimate and the paid submit (or finding the earlier job).
        wait_seconds: waiting for the job to end (for chunks: the jobs, downloads included).
        download_seconds: storing the outputs.
        stitch_seconds: joining the edited chunks into one video and storing it.
        report_seconds: the preview picture and the artifacts.
        total_seconds: the whole flow run attempt.
    """

    model_config = ConfigDict(frozen=True)

    validate_seconds: float = 0.0
    prepare_seconds: float = 0.0
    upload_seconds: float = 0.0
    submit_seconds: float = 0.0
    wait_seconds: float = 0.0
    download_seconds: float = 0.0
    stitch_seconds: float = 0.0
    report_seconds: float = 0.0
    total_seconds: float = 0.0


class ChunkResult(BaseModel):
    """One chunk of a clip edited in chunks (Runway Aleph 2 over its 30 s / 16 MiB limits).

    Attributes:
        index: the chunk's place in the clip, from 0.
        start_seconds: where the chunk starts in the source clip.
        end_seconds: where it ends in the source clip.
        status: the chunk job's final status (``success``, ``failure``), ``estimated`` for a dry
            run, or ``failed`` when it failed before its job ended (a refused submit, a lost download).
        job_id: the chunk's last job (None for a dry run, or when no job was created).
        inputs: the chunk job's inputs as sent (its own video asset, keyframes at chunk-local times).
        estimated_creative_units: the dry-run estimate of the chunk.
        creative_units_cost: what the chunk's successful job cost.
        outputs: the chunk job's stored outputs.
        failed_job_ids: earlier jobs of the chunk that failed on the server and were retried.
        reused: True when the job came from an earlier flow run (nothing spent by this run).
        error: why the chunk failed, when it did.
    """

    model_config = ConfigDict(frozen=True)

    index: int
    start_seconds: float
    end_seconds: float
    status: str
    job_id: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    estimated_creative_units: float | None = None
    creative_units_cost: float | None = None
    outputs: list[StoredOutput] = Field(default_factory=list)
    failed_job_ids: list[str] = Field(default_factory=list)
    reused: bool = False
    error: str | None = None


class ScenarioRunResult(BaseModel):
    """The outcome of one generation flow run.

    Attributes:
        model_id: the Scenario model that ran.
        job_id: the Scenario job (None for a dry run, where no job exists).
        status: the job's final status (``success``), or ``estimated`` for a dry run.
        inputs: the model's inputs as sent (camelCase, asset ids), without secrets.
        sources: where each uploaded input came from (``video``, ``keyframes[0]``, ... to a path).
        estimated_creative_units: the dry-run estimate taken before submitting.
        creative_units_cost: what the job cost (None for a dry run).
        outputs: the stored outputs, by output index.
        destination: where the outputs went: a local directory, or a folder in ``storage``.
        storage: the storage block's type slug (e.g. ``s3-bucket``), None for the local disk.
        preview: the location of the preview picture (contact sheet or first frames), if one was made.
        reused: True when the job came from an earlier flow run (nothing was spent by this run).
        timings: seconds per phase.
        chunks: for a clip edited in chunks, every chunk's job, cost and outputs; ``outputs`` then
            holds the stitched video (made here, so its ``asset_id`` is empty) and ``job_id`` is None.
        fitted_to_limits: True when the clip was re-encoded to fit the model's limits before upload.
        previews: pictures made here beside the outputs (``kind`` ``preview``): for layers, the
            composite preview video and the contact sheet.
        composite_psnr_db: how closely the layers composite back to the source (PSNR, dB; 100 is
            identical, under 30 flags a bad separation); None when it could not be measured.
        notes: what was done to the inputs or left out, in words (fitting, splitting, a skipped check).
    """

    model_config = ConfigDict(frozen=True)

    model_id: str
    job_id: str | None
    status: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    sources: dict[str, str] = Field(default_factory=dict)
    estimated_creative_units: float | None = None
    creative_units_cost: float | None = None
    outputs: list[StoredOutput] = Field(default_factory=list)
    destination: str = "scenario-outputs"
    storage: str | None = None
    preview: str | None = None
    reused: bool = False
    timings: PhaseTimings = Field(default_factory=PhaseTimings)
    chunks: list[ChunkResult] = Field(default_factory=list)
    fitted_to_limits: bool = False
    previews: list[StoredOutput] = Field(default_factory=list)
    composite_psnr_db: float | None = None
    notes: list[str] = Field(default_factory=list)

    @property
    def is_dry_run(self) -> bool:
        """True when nothing was submitted (``status == "estimated"``)."""
        return self.status == ESTIMATED

    @property
    def all_outputs(self) -> list[StoredOutput]:
        """The outputs, then every chunk's outputs (a clip edited in chunks)."""
        return [*self.outputs, *(output for chunk in self.chunks for output in chunk.outputs)]

    @property
    def stored_locations(self) -> list[str]:
        """Where every file this run stored is: outputs, chunk outputs, previews, preview picture."""
        pictures = [self.preview] if self.preview else []
        return [*(o.location for o in self.all_outputs), *(p.location for p in self.previews), *pictures]

    def output_path(self, output: StoredOutput, relative_to: str | Path | None = None) -> str:
        """Where an output is, relative to ``relative_to`` (default: the destination directory).

        Output paths are kept relative to the destination; a different base (a parent of the
        destination, say) gets the path rebased with POSIX separators, as a manifest wants.
        """
        if relative_to is None or self.storage is not None:
            return output.path
        return _relative(Path(self.destination).expanduser().resolve() / output.path, relative_to)

    def preview_path(self, relative_to: str | Path | None = None) -> str | None:
        """The preview picture: relative to ``relative_to`` on the local disk, else its location."""
        if self.preview is None or self.storage is not None:
            return self.preview
        return _relative(Path(self.preview), relative_to if relative_to is not None else self.destination)

    def to_manifest(self, relative_to: str | Path | None = None) -> dict[str, Any]:
        """The manifest of the run: what ran, what it cost, each output with its checksum.

        The first keys are exactly ``model_id, job_id, status, inputs, creative_units_cost, outputs``
        (each output: ``asset_id, path, mime_type, size, sha256, output_index``); the keys after
        them add detail and may grow.

        Args:
            relative_to: the directory output paths are relative to (default: the destination).

        Returns:
            A JSON-ready dict.
        """
        manifest: dict[str, Any] = {
            "model_id": self.model_id,
            "job_id": self.job_id,
            "status": self.status,
            "inputs": dict(self.inputs),
            "creative_units_cost": self.creative_units_cost,
            "outputs": [self._output_entry(output, relative_to) for output in self.outputs],
            "estimated_creative_units": self.estimated_creative_units,
            "reused": self.reused,
            "sources": dict(self.sources),
            "locations": [output.location for output in self.outputs],
            "preview": self.preview_path(relative_to),
            "timings": self.timings.model_dump(),
        }
        # Keys that only some runs have stay out of the others' manifests.
        if self.chunks:
            manifest["chunks"] = [
                {
                    "index": chunk.index,
                    "start_seconds": chunk.start_seconds,
                    "end_seconds": chunk.end_seconds,
                    "job_id": chunk.job_id,
                    "creative_units_cost": chunk.creative_units_cost,
                    "outputs": [self._output_entry(output, relative_to) for output in chunk.outputs],
                    "status": chunk.status,
                    "estimated_creative_units": chunk.estimated_creative_units,
                    "inputs": dict(chunk.inputs),
                    "failed_job_ids": list(chunk.failed_job_ids),
                    "reused": chunk.reused,
                }
                for chunk in self.chunks
            ]
        if self.fitted_to_limits:
            manifest["fitted_to_limits"] = True
        if self.previews:
            manifest["previews"] = [self._output_entry(output, relative_to) for output in self.previews]
        if self.composite_psnr_db is not None:
            manifest["composite_psnr_db"] = self.composite_psnr_db
        if self.notes:
            manifest["notes"] = list(self.notes)
        return manifest

    def _output_entry(self, output: StoredOutput, relative_to: str | Path | None) -> dict[str, Any]:
        return {
            "asset_id": output.asset_id,
            "path": self.output_path(output, relative_to),
            "mime_type": output.mime_type,
            "size": output.size,
            "sha256": output.sha256,
            "output_index": output.output_index,
        }


def _relative(target: Path, base: str | Path) -> str:
    """``target`` relative to ``base``, with POSIX separators (a manifest is read on any OS)."""
    root = Path(base).expanduser().resolve()
    return PurePosixPath(posixpath.relpath(target.resolve().as_posix(), root.as_posix())).as_posix()


# -- batches ----------------------------------------------------------------------------------------

ClipStatus = Literal["succeeded", "failed", "skipped: budget", "estimated"]
SUCCEEDED: ClipStatus = "succeeded"
FAILED: ClipStatus = "failed"
SKIPPED_BUDGET: ClipStatus = "skipped: budget"
CLIP_ESTIMATED: ClipStatus = "estimated"


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
        outputs: the stored outputs, by output index (a split clip: the stitched edit).
        error: why the clip failed or was skipped.
        chunk_job_ids: a clip edited in chunks: every chunk's job, in order (``job_id`` is None).
        previews: what the review stored beside the outputs (layers: composite preview, contact sheet).
        composite_psnr_db: layers: how closely they add back up to the source (None: not measured).
        notes: what was done to the clip (split, fitted) or why something was skipped, in words.
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
    chunk_job_ids: list[str] = Field(default_factory=list)
    previews: list[StoredOutput] = Field(default_factory=list)
    composite_psnr_db: float | None = None
    notes: list[str] = Field(default_factory=list)

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
            estimated = self.with_status(CLIP_ESTIMATED)
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
    return format_units(value, unit=True, missing="no limit")


def _short_name(clip: ClipResult) -> str:
    return PurePosixPath(clip.video.replace(os.sep, "/")).name or clip.video
