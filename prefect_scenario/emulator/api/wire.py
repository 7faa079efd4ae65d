"""The wire form of jobs, assets and uploads, built with the package's own wire models.

Building through :mod:`prefect_scenario.models` means the emulator cannot drift from what our
client parses; the fields the SDK requires but our models do not name (``collectionIds``,
``editCapabilities``, ``tags``) ride along as extra fields.
"""

from __future__ import annotations

from typing import Any

from prefect_scenario.emulator.service import lifecycle
from prefect_scenario.emulator.service.clock import iso_utc
from prefect_scenario.emulator.service.config import EmulatorConfig
from prefect_scenario.emulator.service.records import AssetRecord, JobRecord, UploadRecord
from prefect_scenario.models import (
    AssetMetadata,
    AssetProperties,
    Job,
    JobBilling,
    JobMetadata,
    ScenarioAsset,
    StatusChange,
    Upload,
    UploadPart,
)


def job_model(job: JobRecord, now: float, config: EmulatorConfig) -> Job:
    """The :class:`Job` a client sees at ``now`` (call ``lifecycle.advance`` first)."""
    result = job.result if job.is_terminal else None
    metadata = JobMetadata(
        input=job.input,
        output=job.output,
        asset_ids=list(result.asset_ids) if result and job.status == "success" else [],
        error=result.error if result and job.status == "failure" else None,
        hint=result.hint if result and job.status == "failure" else None,
    )
    billing = None
    if job.cu_cost is not None:
        # Failed jobs are refunded: the cost is still reported, as the API does.
        billing = JobBilling(cu_cost=job.cu_cost, cu_discount=job.cu_discount)
    return Job(
        job_id=job.id,
        job_type=job.job_type,
        status=job.status,  # validated into JobStatus
        progress=lifecycle.progress(job, now),
        status_history=[StatusChange(status=s, date=iso_utc(at)) for s, at in job.history],
        metadata=metadata,
        created_at=iso_utc(job.created_at),
        updated_at=iso_utc(job.updated_at),
        author_id=config.author_id,
        owner_id=config.owner_id,
        billing=billing,
    )


def job_wire(job: JobRecord, now: float, config: EmulatorConfig) -> dict[str, Any]:
    """The JSON of a job."""
    return job_model(job, now, config).to_wire()


def asset_wire(asset: AssetRecord, url: str, config: EmulatorConfig) -> dict[str, Any]:
    """The JSON of an asset, ``url`` being its freshly signed file URL."""
    metadata = AssetMetadata(
        kind=asset.kind,
        type=asset.source,
        parent_job_id=asset.parent_job_id,
        model_id=asset.model_id,
        output_index=asset.output_index,
        name=asset.name,
    )
    model = ScenarioAsset(
        id=asset.id,
        url=url,
        mime_type=asset.mime_type,
        kind=asset.kind,
        status=asset.status,
        properties=AssetProperties.model_validate(asset.properties),
        metadata=metadata,
        output_index=asset.output_index,
        source=asset.source,
        owner_id=config.owner_id,
        author_id=config.author_id,
        privacy="private",
        created_at=iso_utc(asset.created_at),
        updated_at=iso_utc(asset.created_at),
        collectionIds=[],
        editCapabilities=[],
        tags=[],
        isHidden=False,
    )
    return model.to_wire()


def upload_wire(upload: UploadRecord, part_urls: list[str], config: EmulatorConfig) -> dict[str, Any]:
    """The JSON of an upload; ``part_urls`` are its presigned part URLs (empty once completed)."""
    expires = iso_utc(upload.parts_expire_at)
    model = Upload(
        id=upload.id,
        author_id=config.author_id,
        owner_id=config.owner_id,
        file_name=upload.file_name,
        kind=upload.kind,
        source="multipart",
        status=upload.status,  # validated into UploadStatus
        created_at=iso_utc(upload.created_at),
        updated_at=iso_utc(upload.updated_at),
        parts=[UploadPart(number=n, url=url, expires=expires) for n, url in enumerate(part_urls, 1)] or None,
        parts_count=upload.parts_count,
        content_type=upload.content_type,
        file_size=upload.file_size,
        original_file_name=upload.file_name,
        entity_id=upload.entity_id,
        job_id=upload.job_id,
        error_message=upload.error_message,
    )
    return model.to_wire()
