"""Prefect events about Scenario jobs, for automations and for the record.

Events (all with the job as the resource, ``scenario.job.<job id>``):

* ``scenario.job.submitted``: a paid job exists (payload: estimate and cost in creative units).
* ``scenario.job.completed`` / ``scenario.job.failed``: the job reached a terminal status.
* ``scenario.outputs.stored``: every output is stored intact; ``payload.video`` is the location of the
  first video output, so an automation can pass it on as a flow parameter
  (``"{{ event.payload.video }}"``).

Related resources: the model (``scenario.model.<id>``, role ``model``) and each output asset
(``scenario.asset.<id>``, role ``output``). Inside a flow or task run Prefect adds the flow run, task
run, flow and deployment itself. Payloads hold ids, statuses, numbers, locations and hashes: never
credentials.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from prefect.events import Event, emit_event

from prefect_scenario.manifest import StoredOutput, SubmittedJob
from prefect_scenario.models import Job

JOB_SUBMITTED = "scenario.job.submitted"
JOB_COMPLETED = "scenario.job.completed"
JOB_FAILED = "scenario.job.failed"
OUTPUTS_STORED = "scenario.outputs.stored"


def job_resource(job_id: str, model_id: str | None) -> dict[str, str]:
    """The resource of a job event."""
    resource = {"prefect.resource.id": f"scenario.job.{job_id}", "prefect.resource.name": job_id}
    if model_id:
        resource["scenario.model_id"] = model_id
    return resource


def related_resources(model_id: str | None, asset_ids: Iterable[str] = ()) -> list[dict[str, str]]:
    """The model and the output assets of a job, as related resources."""
    related: list[dict[str, str]] = []
    if model_id:
        related.append(
            {
                "prefect.resource.id": f"scenario.model.{model_id}",
                "prefect.resource.role": "model",
                "prefect.resource.name": model_id,
            }
        )
    for asset_id in asset_ids:
        related.append(
            {
                "prefect.resource.id": f"scenario.asset.{asset_id}",
                "prefect.resource.role": "output",
                "prefect.resource.name": asset_id,
            }
        )
    return related


def _job_cost(job: Job) -> float | None:
    return job.billing.cu_cost if job.billing is not None else None


def emit_job_submitted(submitted: SubmittedJob) -> Event | None:
    """Emit ``scenario.job.submitted``."""
    return emit_event(
        JOB_SUBMITTED,
        resource=job_resource(submitted.job_id, submitted.model_id),
        related=related_resources(submitted.model_id),
        payload={
            "job_id": submitted.job_id,
            "model_id": submitted.model_id,
            "status": "submitted",
            "estimated_creative_units": submitted.estimated_creative_units,
            "creative_units": submitted.creative_units_cost,
            "reconciled": submitted.reconciled,
        },
    )


def emit_job_finished(job: Job) -> Event | None:
    """Emit ``scenario.job.completed`` for a successful job, ``scenario.job.failed`` otherwise."""
    succeeded = job.status.value == "success"
    payload: dict[str, Any] = {
        "job_id": job.job_id,
        "model_id": job.model_id,
        "status": job.status.value,
        "creative_units": _job_cost(job),
        "asset_ids": list(job.metadata.asset_ids),
    }
    if not succeeded:
        payload["error"] = job.metadata.error
        payload["hint"] = job.metadata.hint
    return emit_event(
        JOB_COMPLETED if succeeded else JOB_FAILED,
        resource=job_resource(job.job_id, job.model_id),
        related=related_resources(job.model_id, job.metadata.asset_ids if succeeded else ()),
        payload=payload,
    )


def first_video(outputs: Sequence[StoredOutput]) -> StoredOutput | None:
    """The first video among stored outputs (by output index), if any."""
    videos = sorted((o for o in outputs if o.is_video), key=lambda o: o.output_index)
    return videos[0] if videos else None


def emit_outputs_stored(job: Job, outputs: Sequence[StoredOutput]) -> Event | None:
    """Emit ``scenario.outputs.stored`` with every output and the first video's location."""
    video = first_video(outputs)
    return emit_event(
        OUTPUTS_STORED,
        resource=job_resource(job.job_id, job.model_id),
        related=related_resources(job.model_id, [o.asset_id for o in outputs]),
        payload={
            "job_id": job.job_id,
            "model_id": job.model_id,
            "status": job.status.value,
            "creative_units": _job_cost(job),
            "outputs": [
                {
                    "asset_id": o.asset_id,
                    "location": o.location,
                    "sha256": o.sha256,
                    "size": o.size,
                    "mime_type": o.mime_type,
                    "output_index": o.output_index,
                }
                for o in outputs
            ],
            "video": video.location if video else None,
        },
    )
