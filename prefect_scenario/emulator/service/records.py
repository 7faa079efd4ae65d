"""What the emulator stores about jobs, assets and uploads (plain records, no wire form), and the
validated generation body the service prices and runs.

The wire form is built from these by :mod:`prefect_scenario.emulator.api.wire`; keeping the two
apart lets the lifecycle and the routes work on typed fields instead of nested dicts.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TERMINAL_STATUSES = frozenset({"success", "failure", "canceled"})


@dataclass
class AssetRecord:
    """A stored file and what the API says about it."""

    id: str
    path: Path
    mime_type: str
    kind: str
    source: str
    properties: dict[str, Any]
    created_at: float
    name: str | None = None
    output_index: int | None = None
    parent_job_id: str | None = None
    model_id: str | None = None
    status: str = "success"


@dataclass(frozen=True)
class CheckedBody:
    """A body that passed validation, with the facts pricing and the fake models need."""

    model_id: str
    body: dict[str, Any]
    video_asset_id: str
    video_seconds: float


@dataclass
class WorkResult:
    """What a fake model left behind: output asset ids, or an error and a hint."""

    asset_ids: list[str] = field(default_factory=list)
    error: str | None = None
    hint: str | None = None


@dataclass
class JobRecord:
    """A job. Custom jobs derive their status from the clock; upload jobs are moved explicitly."""

    id: str
    job_type: str
    created_at: float
    history: list[tuple[str, float]]
    input: dict[str, Any] | None = None
    cu_cost: float | None = None
    cu_discount: float = 0.0
    job_seconds: float = 0.0
    queue_seconds: float = 0.0
    route: str | None = None
    # Set when the fake model's thread is done (emulator clock), with what it produced.
    work_done_at: float | None = None
    result: WorkResult | None = None
    output: dict[str, Any] | None = None
    future: Future[Any] | None = None
    # Creation order: breaks ties between jobs created in the same millisecond.
    seq: int = 0
    # The ``projectId`` it was created under (None: the emulator's own, ``config.owner_id``): whose
    # webhook endpoints hear of it.
    project_id: str | None = None

    @property
    def status(self) -> str:
        """The latest status recorded in the history."""
        return self.history[-1][0]

    @property
    def is_terminal(self) -> bool:
        """True once the job will not change any more."""
        return self.status in TERMINAL_STATUSES

    @property
    def updated_at(self) -> float:
        """When the last transition happened."""
        return self.history[-1][1]

    def has_been(self, status: str) -> bool:
        """True when ``status`` is already in the history."""
        return any(entry == status for entry, _ in self.history)


@dataclass
class UploadRecord:
    """A multipart upload: parts land in ``directory`` until the complete action assembles them."""

    id: str
    file_name: str
    content_type: str
    file_size: int
    kind: str
    parts_count: int
    directory: Path
    created_at: float
    updated_at: float
    parts_expire_at: float
    job_id: str
    status: str = "pending"
    entity_id: str | None = None
    error_message: str | None = None

    def part_path(self, number: int) -> Path:
        """Where part ``number`` (1-based) is stored."""
        return self.directory / f"part-{number:05d}"
