"""Wire models of the Scenario API and the input models of the two video models.

Response models allow extra fields (the API grows; a new field must never break a running flow).
Request models forbid them (a typo fails locally, before any money is spent). Field names are
snake_case in Python and camelCase on the wire; ``model_dump(by_alias=True)`` gives the wire form.

This module is a leaf: it imports pydantic only.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

VIDEO_LAYERS_MODEL_ID = "model_scenario-video-layers-extractor"
ALEPH_MODEL_ID = "model_runway-aleph-2"
DEFAULT_BASE_URL = "https://api.cloud.scenario.com/v1"

# Limits of the two models (scenario-api.md section 7). One place, so the local validator, the
# emulator and the docs cannot disagree.
ALEPH_MAX_PROMPT_CHARS = 1000
ALEPH_MAX_VIDEO_BYTES = 16 * 1024 * 1024
ALEPH_MAX_VIDEO_SECONDS = 30.0
ALEPH_MAX_REFERENCES = 5
ALEPH_MAX_SEED = 4_294_967_295
LAYERS_MIN_LAYERS = 1
LAYERS_MAX_LAYERS = 10
LAYERS_DEFAULT_LAYERS = 6

ASSET_ID_PREFIX = "asset_"


def sniff_media_type(head: bytes) -> str | None:
    """The MIME type of an image or video from its first bytes (64 are enough), or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:12] == b"qt  " else "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        # The EBML header names its DocType within the first bytes.
        return "video/webm" if b"webm" in head else "video/x-matroska"
    return None


def is_asset_id(value: object) -> bool:
    """True for a Scenario asset id (``asset_…``): a clip or image already on Scenario, no upload needed.

    The one test of the package: a path such as ``asset_2025/clip.mp4`` (a folder named like an
    asset) is a file, not an asset id.
    """
    return (
        isinstance(value, str)
        and value.startswith(ASSET_ID_PREFIX)
        and len(value) > len(ASSET_ID_PREFIX)
        and "/" not in value
        and "\\" not in value
    )


class WireModel(BaseModel):
    """Base of every response model: camelCase on the wire, extra fields kept."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready wire form (camelCase, unset optional fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class RequestModel(BaseModel):
    """Base of every request model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def to_body(self) -> dict[str, Any]:
        """The JSON body sent to the API (camelCase, unset optional fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# ---------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------


class JobStatus(str, enum.Enum):
    """Status of a Scenario job (the API's enum, plus the spellings docs prose sometimes uses)."""

    PENDING = "pending"
    QUEUED = "queued"
    WARMING_UP = "warming-up"
    IN_PROGRESS = "in-progress"
    FINALIZING = "finalizing"
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        """True when the job will not change any more."""
        return self in _TERMINAL

    @classmethod
    def _missing_(cls, value: object) -> JobStatus | None:
        # Docs prose writes "failed", "cancelled", "processing"; the enum is the contract, but a
        # tolerant reader must not crash a flow on a synonym.
        synonyms = {
            "failed": cls.FAILURE,
            "cancelled": cls.CANCELED,
            "processing": cls.IN_PROGRESS,
            "in_progress": cls.IN_PROGRESS,
            "warming_up": cls.WARMING_UP,
        }
        return synonyms.get(str(value).lower())


_TERMINAL = frozenset({JobStatus.SUCCESS, JobStatus.FAILURE, JobStatus.CANCELED})


class StatusChange(WireModel):
    """One entry of ``job.statusHistory``."""

    status: JobStatus
    date: str


class JobBilling(WireModel):
    """What a job cost, in creative units."""

    cu_cost: float
    cu_discount: float = 0.0
    cu_cost_details: dict[str, float] | None = None
    disable_refund: bool | None = None


class JobMetadata(WireModel):
    """``job.metadata``: inputs used, outputs produced, error and hint on failure."""

    asset_ids: list[str] = Field(default_factory=list)
    error: str | None = None
    hint: str | None = None
    input: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    workflow_id: str | None = None
    workflow_job_id: str | None = None


class Job(WireModel):
    """A Scenario job."""

    job_id: str
    job_type: str
    status: JobStatus
    progress: float = 0.0
    status_history: list[StatusChange] = Field(default_factory=list)
    metadata: JobMetadata = Field(default_factory=JobMetadata)
    created_at: str
    updated_at: str
    author_id: str | None = None
    owner_id: str | None = None
    billing: JobBilling | None = None

    @property
    def model_id(self) -> str | None:
        """The model this job ran, from ``metadata.input.modelId``."""
        value = (self.metadata.input or {}).get("modelId")
        return value if isinstance(value, str) else None


class JobEnvelope(WireModel):
    """``{"job": Job}``: the answer of ``GET /jobs/{id}`` and ``POST /jobs/{id}/action``."""

    job: Job


class JobPage(WireModel):
    """One page of ``GET /jobs``. A page may be short, even empty, while a token remains."""

    jobs: list[Job] = Field(default_factory=list)
    next_pagination_token: str | None = None


class CostEstimate(WireModel):
    """The 269 answer of a dry run: what a generation would cost, no job created."""

    creative_units_cost: float
    creative_units_discount: float = 0.0
    cost_details: dict[str, float] = Field(default_factory=dict)


class GenerateResponse(CostEstimate):
    """The 200 answer of ``POST /generate/custom/{modelId}``: the new job and what it cost."""

    job: Job
    creative_units_cost: float = 0.0


# ---------------------------------------------------------------------------------------------
# Uploads and assets
# ---------------------------------------------------------------------------------------------

AssetKind = Literal["3d", "audio", "document", "image", "image-hdr", "json", "text", "video"]
UploadKind = Literal["3d", "asset", "audio", "avatar", "image", "model", "text", "video"]


class UploadStatus(str, enum.Enum):
    """Status of an upload."""

    PENDING = "pending"
    VALIDATING = "validating"
    VALIDATED = "validated"
    IMPORTED = "imported"
    COMPLETE = "complete"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        """True once the upload became an asset or failed."""
        return self in (UploadStatus.IMPORTED, UploadStatus.FAILED)


class UploadPart(WireModel):
    """A presigned part URL of a multipart upload."""

    number: int
    url: str
    expires: str


class Upload(WireModel):
    """A Scenario upload (multipart or URL import)."""

    id: str
    author_id: str
    owner_id: str
    file_name: str
    kind: str
    source: str
    status: UploadStatus
    created_at: str
    updated_at: str
    parts: list[UploadPart] | None = None
    parts_count: int | None = None
    content_type: str | None = None
    file_size: int | None = None
    original_file_name: str | None = None
    entity_id: str | None = None
    job_id: str | None = None
    error_message: str | None = None


class UploadEnvelope(WireModel):
    """``{"upload": Upload}``."""

    upload: Upload


class CreateUploadRequest(RequestModel):
    """Body of ``POST /uploads`` for a multipart upload."""

    file_name: str
    content_type: str
    file_size: int = Field(ge=0)
    kind: UploadKind
    parts: int = Field(ge=1, le=10_000)


class AssetProperties(WireModel):
    """``asset.properties``: size always, media fields when known."""

    size: int
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    frame_rate: float | None = None
    nb_frames: int | None = None
    bitrate: float | None = None
    codec_name: str | None = None
    format: str | None = None


class AssetMetadata(WireModel):
    """``asset.metadata``."""

    kind: str
    type: str
    parent_job_id: str | None = None
    model_id: str | None = None
    output_index: int | None = None
    name: str | None = None
    file_name: str | None = None


class ScenarioAsset(WireModel):
    """A Scenario asset. ``url`` is signed and expires: re-GET the asset for a fresh one."""

    id: str
    url: str
    mime_type: str
    kind: str
    status: str
    properties: AssetProperties
    metadata: AssetMetadata
    output_index: int | None = None
    source: str | None = None
    owner_id: str | None = None
    author_id: str | None = None
    privacy: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


class AssetEnvelope(WireModel):
    """``{"asset": ScenarioAsset}``."""

    asset: ScenarioAsset
    job: Job | None = None


class CreateImageAssetRequest(RequestModel):
    """Body of ``POST /assets``: a small image as base64 or a data URL."""

    name: str = Field(min_length=1)
    image: str = Field(min_length=1)
    hide: bool | None = None


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


class ModelInput(WireModel):
    """One input descriptor of ``model.inputs``."""

    name: str
    type: str
    required: dict[str, Any] | None = None
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    allowed_values: list[Any] | None = None
    kind: str | None = None
    max_size: int | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    inputs: list[ModelInput] | None = None
    cost_impact: bool | None = None
    label: str | None = None
    description: str | None = None

    @property
    def is_required(self) -> bool:
        """True when the input is always required."""
        return bool((self.required or {}).get("always"))


class ModelInfo(WireModel):
    """A Scenario model (only the fields live captures always carry are required)."""

    id: str
    name: str | None = None
    short_description: str | None = None
    type: str | None = None
    privacy: str | None = None
    capabilities: list[str] = Field(default_factory=list)
    status: str | None = None
    tags: list[str] = Field(default_factory=list)
    inputs: list[ModelInput] = Field(default_factory=list)

    def input(self, name: str) -> ModelInput | None:
        """The descriptor of input ``name``, if the model has it."""
        return next((item for item in self.inputs if item.name == name), None)


class ModelEnvelope(WireModel):
    """``{"model": ModelInfo}``."""

    model: ModelInfo


class ApiErrorBody(WireModel):
    """An error body. No schema exists; ``reason`` first, then ``message``, ``error``, ``detail``."""

    reason: str | None = None
    message: str | None = None
    error: str | None = None
    detail: Any = None
    trace_id: str | None = Field(default=None, validation_alias=AliasChoices("traceId", "trace_id"))
    details: dict[str, Any] | None = None
    remaining_seconds: float | None = None

    @property
    def text(self) -> str | None:
        """The human message, whichever field carried it."""
        for candidate in (self.reason, self.message, self.error, self.detail):
            if isinstance(candidate, str) and candidate:
                return candidate
        return None


# ---------------------------------------------------------------------------------------------
# Inputs of the two models (request side: unknown fields refused)
# ---------------------------------------------------------------------------------------------

AssetId = Annotated[str, Field(min_length=1, pattern=r"^asset_\S+$")]


class Keyframe(RequestModel):
    """A reference image pinned to a time of the *input* video: ``seconds`` or ``at`` (0..1)."""

    uri: AssetId
    seconds: float | None = Field(default=None, ge=0)
    at: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _one_position(self) -> Keyframe:
        if (self.seconds is None) == (self.at is None):
            raise ValueError("a keyframe takes exactly one of 'seconds' or 'at' (a fraction 0..1)")
        return self


class PromptImage(RequestModel):
    """A reference image placed in the *output* video, by timestamp or by position (0..1)."""

    uri: AssetId
    position_type: Literal["timestamp", "position"] = "position"
    timestamp_seconds: float | None = Field(default=None, ge=0)
    position_percentage: float | None = Field(default=None, ge=0, le=1)


class VideoLayersInput(RequestModel):
    """Inputs of "Video to Layers" (``model_scenario-video-layers-extractor``)."""

    video: AssetId
    separation_instruction: str = Field(min_length=1)
    max_layers: int = Field(default=LAYERS_DEFAULT_LAYERS, ge=LAYERS_MIN_LAYERS, le=LAYERS_MAX_LAYERS)

    @field_validator("separation_instruction")
    @classmethod
    def _says_something(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("separationInstruction is blank: say how to split, e.g. 'each person apart'")
        return value


class AlephInput(RequestModel):
    """Inputs of "Runway Aleph 2" (``model_runway-aleph-2``)."""

    prompt: str = Field(min_length=1, max_length=ALEPH_MAX_PROMPT_CHARS)
    video: AssetId
    keyframes: list[Keyframe] | None = Field(default=None, max_length=ALEPH_MAX_REFERENCES)
    prompt_image: list[PromptImage] | None = Field(default=None, max_length=ALEPH_MAX_REFERENCES)
    seed: int | None = Field(default=None, ge=0, le=ALEPH_MAX_SEED)

    @model_validator(mode="after")
    def _not_both_reference_kinds(self) -> AlephInput:
        if self.keyframes and self.prompt_image:
            raise ValueError("keyframes and promptImage cannot be used together: keep one of them")
        return self


def model_input_body(model_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """What the API records as ``job.metadata.input``: the request body plus ``modelId``."""
    return {**dict(body), "modelId": model_id}


ModelInput.model_rebuild()


# Every webhook event name of the SDK's enum (scenario-api.md 8.1), "*" (all) included: what an
# endpoint's ``enabledEvents`` takes. The client and the emulator both read it from here.
WEBHOOK_EVENT_TYPES: tuple[str, ...] = (
    "*",
    "asset.download.completed",
    "asset.download.created",
    "asset.download.failed",
    "generation.completed",
    "generation.created",
    "generation.failed",
    "inference.cancelled",
    "inference.completed",
    "inference.created",
    "inference.failed",
    "model.download.completed",
    "model.download.created",
    "model.download.failed",
    "model.training.cancelled",
    "model.training.completed",
    "model.training.failed",
    "model.training.started",
    "team.credit.threshold.crossed",
)
