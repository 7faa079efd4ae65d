"""What a batch is given: a model's recipe (how a clip is checked and asked for) and the options.

``flows/batch.py`` builds one recipe per model; ``flows/_batch.py`` runs any of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.filesystems import WritableFileSystem

from prefect_scenario import video as media
from prefect_scenario.blocks import ScenarioCredentials
from prefect_scenario.clip_source import ClipSource, SourceStorage
from prefect_scenario.concurrency import DEFAULT_LIMIT_NAME, DEFAULT_PARALLEL_JOBS
from prefect_scenario.flows._arguments import RunChoices
from prefect_scenario.flows.aleph_chunks import AlephEdit
from prefect_scenario.validation import ClipHandling


def _as_is(probe: media.VideoProbe | None) -> ClipHandling:
    return "as_is"


@dataclass(frozen=True)
class ModelRecipe:
    """How a model's batch checks a clip and builds its request(s).

    Attributes:
        flow_slug: the batch flow's name (artifact keys start with it).
        model_id: the Scenario model.
        check: the local validation of a clip (None for an asset id); raises InputValidationError.
        body: the request body for an uploaded clip (its asset id).
        reuse_across_runs: whether a job from an earlier flow run with the same inputs is reused.
        handling: how a checked clip meets the model's limits: as it is, fitted, or split.
        edit: a split clip's request (Runway Aleph 2), given its source and local copy.
        chunk_retries: new jobs for a chunk whose job failed on the server.
        review_layers: look at each clip's layers (previews, PSNR) once stored.
    """

    flow_slug: str
    model_id: str
    check: Callable[[Path | None], media.VideoProbe | None]
    body: Callable[[str], dict[str, Any]]
    reuse_across_runs: bool
    handling: Callable[[media.VideoProbe | None], ClipHandling] = _as_is
    edit: Callable[[ClipSource, Path | None], AlephEdit] | None = None
    chunk_retries: int = 1
    review_layers: bool = False


@dataclass(frozen=True, kw_only=True)
class BatchOptions(RunChoices):
    """Where the clips come from and go, and what bounds the batch."""

    credentials: ScenarioCredentials | str | None
    videos: list[str] | None = None
    folder: str | None = None
    pattern: str | None = None
    video_storage: SourceStorage | str | None = None
    destination_storage: WritableFileSystem | str | None = None
    budget_creative_units: float | None = None
    concurrency_limit_name: str | None = DEFAULT_LIMIT_NAME
    concurrency_limit: int = DEFAULT_PARALLEL_JOBS
    clips_per_flow_run: int | None = None
    wait: str = "inline"
