"""Download task: a finished job's outputs, stored intact, in output order, never paid for twice.

A failed download is retried by fetching the asset again (the client re-reads the asset for a fresh
signed URL and resumes with ``Range``), never by generating again. Outputs already stored intact by
an earlier attempt or run are kept, not fetched again.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.client.schemas.objects import State, TaskRun
from prefect.filesystems import LocalFileSystem, WritableFileSystem
from prefect.tasks import exponential_backoff

from prefect_scenario.blocks import ScenarioCredentials, resolve_credentials
from prefect_scenario.caching import DownloadPolicy
from prefect_scenario.errors import (
    AuthenticationError,
    BadRequestError,
    DownloadError,
    JobFailedError,
    NotFoundError,
    ScenarioConfigError,
)
from prefect_scenario.events import emit_outputs_stored
from prefect_scenario.formatting import human_size
from prefect_scenario.manifest import StoredOutput
from prefect_scenario.models import Job, JobStatus, ScenarioAsset
from prefect_scenario.run_context import run_logger
from prefect_scenario.storage import (
    FileDigest,
    discard,
    extension_for,
    is_s3_bucket,
    local_target,
    new_temp_dir,
    s3_location,
    store_file,
    stored_object_info,
)
from prefect_scenario.tasks._runtime import state_exception
from prefect_scenario.tasks.wait import outcome_for

# Downloads cost nothing but time; an entry older than this is simply checked again.
DOWNLOAD_CACHE_EXPIRATION = timedelta(days=7)
# Outputs fetched at once (Video to Layers returns up to 11 assets).
DOWNLOAD_CONCURRENCY = 3

_PERMANENT = (ScenarioConfigError, AuthenticationError, BadRequestError, NotFoundError, JobFailedError)


async def retry_download(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry a download unless another attempt cannot help (no such asset, bad credentials, failed job)."""
    error = await state_exception(state)
    return error is not None and not isinstance(error, _PERMANENT)


def output_relative_path(job_id: str, output_index: int, asset: ScenarioAsset) -> str:
    """``<job_id>/<output_index:02d>-<asset_id>.<ext>``, the extension from the MIME type."""
    return f"{job_id}/{output_index:02d}-{asset.id}.{extension_for(asset.mime_type)}"


def _ordered(assets: list[ScenarioAsset]) -> list[tuple[int, ScenarioAsset]]:
    """Assets by ``outputIndex`` (the order of ``assetIds`` is not meaningful), with their index."""
    indexed = []
    for position, asset in enumerate(assets):
        index = asset.output_index if asset.output_index is not None else asset.metadata.output_index
        indexed.append((index if index is not None else position, position, asset))
    indexed.sort(key=lambda item: (item[0], item[1]))
    used: set[int] = set()
    ordered = []
    for index, _, asset in indexed:
        while index in used:  # two assets claiming one index must not share a file name
            index += 1
        used.add(index)
        ordered.append((index, asset))
    return ordered


async def _all(coroutines: Any) -> list[Any]:
    """Run coroutines together; when one fails, let the others finish (an output stored intact is
    kept for the retry) and raise the first error."""
    results = await asyncio.gather(*coroutines, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return list(results)


def _location(relative: str, destination: str | Path, storage: WritableFileSystem | None) -> str:
    if storage is None:
        return str(local_target(relative, destination))
    if isinstance(storage, LocalFileSystem):
        return str(local_target(relative, storage._resolve_path(str(destination))))
    if is_s3_bucket(storage):
        return s3_location(storage, relative, destination)
    return relative


async def _store_one(
    client: Any,
    job: Job,
    index: int,
    asset: ScenarioAsset,
    destination: str | Path,
    storage: WritableFileSystem | None,
) -> StoredOutput:
    logger = run_logger()
    relative = output_relative_path(job.job_id, index, asset)
    expected_size = asset.properties.size if asset.properties else None
    existing = await stored_object_info(relative, destination, storage)
    if existing is not None and existing.sha256 and (expected_size is None or existing.size == expected_size):
        logger.info("Output %s of Scenario job %s is already stored: kept", asset.id, job.job_id)
        return _stored(asset, index, relative, destination, storage, existing.size, existing.sha256)
    local_destination = storage is None or isinstance(storage, LocalFileSystem)
    if local_destination:
        # The client writes beside the target and renames it into place when whole.
        base = (
            storage._resolve_path(str(destination))
            if isinstance(storage, LocalFileSystem)
            else Path(destination)
        )
        scratch = local_target(relative, base)
    else:
        scratch = new_temp_dir() / Path(relative).name
    try:
        downloaded = await client.assets.download(asset, scratch)  # fetched a moment ago: its URL is fresh
        if expected_size is not None and downloaded.size != expected_size:
            scratch.unlink(missing_ok=True)
            raise DownloadError(
                f"output {asset.id} of Scenario job {job.job_id} arrived with {downloaded.size} bytes, "
                f"the API says {expected_size}",
                asset_id=asset.id,
            )
        if not local_destination:
            await store_file(
                scratch,
                relative,
                destination,
                storage,
                content_type=asset.mime_type,
                digest=FileDigest(size=downloaded.size, sha256=downloaded.sha256),
            )
    finally:
        if not local_destination:
            discard(scratch)
    logger.info(
        "Stored output %d of Scenario job %s (%s, %s) at %s",
        index,
        job.job_id,
        asset.id,
        human_size(downloaded.size),
        _location(relative, destination, storage),
    )
    return _stored(asset, index, relative, destination, storage, downloaded.size, downloaded.sha256)


def _stored(
    asset: ScenarioAsset,
    index: int,
    relative: str,
    destination: str | Path,
    storage: WritableFileSystem | None,
    size: int,
    sha256: str,
) -> StoredOutput:
    return StoredOutput(
        asset_id=asset.id,
        path=relative,
        location=_location(relative, destination, storage),
        mime_type=asset.mime_type,
        size=size,
        sha256=sha256,
        output_index=index,
        kind=asset.kind,
    )


@task(
    name="download_outputs",
    task_run_name="download-outputs",
    cache_policy=DownloadPolicy(),
    cache_expiration=DOWNLOAD_CACHE_EXPIRATION,
    persist_result=True,
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=5),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_download,
)
async def download_outputs(
    job: Job,
    *,
    credentials: ScenarioCredentials,
    destination: str | Path = "scenario-outputs",
    storage: WritableFileSystem | None = None,
) -> list[StoredOutput]:
    """Store every output of a successful job, in output order, checked for size and sha256.

    Files are named ``<job_id>/<output_index:02d>-<asset_id>.<ext>`` under ``destination``: a local
    directory (written to a temporary name, then renamed), or a folder inside ``storage``
    (``S3Bucket``: streamed through a temporary file and uploaded by boto3 in parts, with the sha256
    as object metadata; other blocks: ``write_path``).

    Args:
        job: the successful job (from :func:`wait_for_job`).
        credentials: Scenario credentials.
        destination: a local directory, or a folder inside ``storage`` (``""`` for its root).
        storage: a Prefect ``WritableFileSystem`` block; None for the local disk.

    Returns:
        The stored outputs, by output index.

    Retried 3 times with backoff; a retry fetches a fresh signed URL, never a new generation.
    Cached per (outputs, destination) for a week; a local cache entry is ignored when a file is gone.

    Example:
        ```python
        from prefect_aws import S3Bucket

        outputs = await download_outputs(
            job, credentials=credentials, destination="edits", storage=await S3Bucket.aload("renders")
        )
        print([output.location for output in outputs])
        ```
    """
    logger = run_logger()
    outcome = outcome_for(job)
    if outcome.error is not None:
        raise outcome.error
    if job.status is not JobStatus.SUCCESS:
        raise DownloadError(
            f"Scenario job {job.job_id} is still {job.status.value}: wait for it (wait_for_job) first",
            asset_id="",
        )
    if not job.metadata.asset_ids:
        logger.warning("Scenario job %s succeeded without outputs: nothing to store", job.job_id)
        return []
    creds = await resolve_credentials(credentials)
    limiter = asyncio.Semaphore(DOWNLOAD_CONCURRENCY)
    async with creds.get_client() as client:

        async def get(asset_id: str) -> ScenarioAsset:
            async with limiter:
                asset: ScenarioAsset = await client.assets.get(asset_id)
                return asset

        assets = await _all(get(asset_id) for asset_id in job.metadata.asset_ids)

        async def store(index: int, asset: ScenarioAsset) -> StoredOutput:
            async with limiter:
                return await _store_one(client, job, index, asset, destination, storage)

        outputs = await _all(store(i, a) for i, a in _ordered(assets))
    outputs.sort(key=lambda o: o.output_index)
    where = _location("", destination, storage) if storage is None or is_s3_bucket(storage) else destination
    logger.info(
        "Stored %d output(s) of Scenario job %s (%s) under %s",
        len(outputs),
        job.job_id,
        human_size(sum(o.size for o in outputs)),
        where,
    )
    try:
        emit_outputs_stored(job, outputs)
    except Exception as exc:
        logger.warning("Could not emit scenario.outputs.stored for %s: %s", job.job_id, exc)
    return outputs
