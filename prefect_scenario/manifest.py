"""What the Prefect tasks hand to each other and keep as results: a submitted job, a stored output.

These are the records that get persisted (pickled into Prefect's result storage) and cached, so they
hold ids, numbers, paths and hashes only: never a client, a block or a secret.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SubmittedJob(BaseModel):
    """A Scenario job that was paid for: what was asked, what it was expected to cost, what it cost.

    Attributes:
        job_id: the Scenario job id (``job_…``).
        model_id: the model that runs the job.
        inputs: the request body sent (the model's inputs, camelCase as on the wire).
        estimated_creative_units: the dry-run estimate taken before submitting, when one was taken.
        creative_units_cost: what the API said the request cost.
        reconciled: True when the job was found rather than created by this submit: an ambiguous
            submit reconciled by listing jobs, or a job this flow run had already started (a retry).
            Nothing was sent twice.
        submitted_at: when the job was submitted (UTC).
        ledger_key: the key of the job's submission-ledger entry (see :mod:`prefect_scenario.ledger`).
        adopted_from: when the job was bought by another run that never delivered it (a crashed
            run), that run in words; this submit adopted the job and spent nothing.
    """

    model_config = ConfigDict(frozen=True)

    job_id: str
    model_id: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    estimated_creative_units: float | None = None
    creative_units_cost: float | None = None
    reconciled: bool = False
    submitted_at: datetime = Field(default_factory=_utcnow)
    ledger_key: str | None = None
    adopted_from: str | None = None


class StoredOutput(BaseModel):
    """One output of a job, stored intact at its destination.

    Attributes:
        asset_id: the Scenario asset id of the output.
        path: where it is, relative to the destination directory (or to ``destination`` inside the
            storage block), e.g. ``job_x/00-asset_y.mp4``.
        location: the absolute location: a local absolute path, or ``s3://bucket/key`` for S3.
        mime_type: the asset's MIME type as the API reported it.
        size: bytes stored.
        sha256: hex sha256 of the bytes stored.
        output_index: the asset's ``outputIndex`` (its place among the job's outputs).
        kind: the asset kind (``video``, ``image``, ...).
    """

    model_config = ConfigDict(frozen=True)

    asset_id: str
    path: str
    location: str
    mime_type: str
    size: int
    sha256: str
    output_index: int
    kind: str

    @property
    def is_video(self) -> bool:
        """True when the output is a video."""
        return self.kind == "video" or self.mime_type.startswith("video/")
