"""Upload tasks: a local file or a file in a storage block becomes a Scenario asset, once per content."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from prefect import task
from prefect.filesystems import ReadableFileSystem

from prefect_scenario.blocks import ScenarioCredentials, resolve_credentials
from prefect_scenario.caching import DIGESTS, UploadContentPolicy, content_digest
from prefect_scenario.formatting import human_size
from prefect_scenario.models import is_asset_id
from prefect_scenario.run_context import run_logger
from prefect_scenario.storage import FileDigest, discard, materialize
from prefect_scenario.tasks._runtime import IN_FLIGHT, retry_transient_only

# Why a week: the cache maps "this content" to "this asset in this project". An asset deleted in the
# Scenario app would make a stale entry fail the next submit (400, unknown asset), so the mapping
# must not live forever; a week covers days of iterating on the same clip, and when it lapses the
# price is one free re-upload.
UPLOAD_CACHE_EXPIRATION = timedelta(days=7)
UploadKind = Literal["video", "image"]
_Source = str | Path
_Storage = ReadableFileSystem | None


async def _upload(
    source: str | Path,
    *,
    kind: UploadKind,
    credentials: ScenarioCredentials | str | None,
    storage: ReadableFileSystem | None,
) -> str:
    logger = run_logger()
    if is_asset_id(source):
        logger.info("%s is already a Scenario asset: nothing to upload", source)
        return str(source)
    creds = await resolve_credentials(credentials)
    local: Path | None = None
    digest: FileDigest | None = None
    if storage is not None:
        taken = DIGESTS.take(str(source), storage)
        if taken is not None:
            local, digest = taken
    if local is None:
        local = await materialize(source, storage)
    # Only a copy fetched here is removed here: a local file given in (a flow's own fetched copy of
    # its clip, used again for the layers' review) belongs to the caller.
    fetched = storage is not None
    try:
        if digest is None:
            digest = await asyncio.to_thread(content_digest, local)
        # Two tasks holding the same content at once (a batch with one clip twice) upload it once.
        key = f"upload|{kind}|{digest.sha256}|{creds.cache_scope()}"
        asset_id, shared = await IN_FLIGHT.once(key, lambda: _send(creds, local, kind))
    finally:
        if fetched:
            discard(local)
    name = Path(str(source)).name
    if shared:
        logger.info("%s has the content of an upload that just finished: %s", name, asset_id)
        return asset_id
    logger.info(
        "Uploaded %s (%s, sha256 %s…) to Scenario as %s",
        name,
        human_size(digest.size),
        digest.sha256[:12],
        asset_id,
    )
    return asset_id


async def _send(creds: ScenarioCredentials, local: Path, kind: UploadKind) -> str:
    async with creds.get_client() as client:
        asset = await client.uploads.upload_file(local, kind=kind)
    return asset.id


def _upload_run_name(parameter: str) -> Any:
    def name() -> str:
        from prefect.runtime import task_run

        value = str(task_run.parameters.get(parameter, ""))
        return f"upload-{parameter}-{Path(value).name or value}"[:120]

    return name


def _upload_task(kind: UploadKind) -> dict[str, Any]:
    """What both upload tasks are: only the kind, and the parameter named after it, differ."""
    return {
        "name": f"upload_{kind}",
        "task_run_name": _upload_run_name(kind),
        "cache_policy": UploadContentPolicy(source_parameter=kind, kind=kind),
        "cache_expiration": UPLOAD_CACHE_EXPIRATION,
        "persist_result": True,
        "retries": 2,
        "retry_delay_seconds": [5, 30],
        "retry_condition_fn": retry_transient_only,
    }


@task(**_upload_task("video"))
async def upload_video(
    video: str | Path, *, credentials: ScenarioCredentials, storage: _Storage = None
) -> str:
    """Make a video a Scenario asset and return its id; each content is uploaded once.

    Args:
        video: an asset id (``asset_…``, returned as is), a local path, or a path inside ``storage``.
        credentials: Scenario credentials.
        storage: a Prefect filesystem block (``S3Bucket``, ``LocalFileSystem``, ...) holding ``video``.

    Returns:
        The asset id.

    The task is cached on the sha256 of the file's content (not its name or location), the kind, and
    the credentials' base URL and project, for a week: the same clip uploaded again, under any name,
    in any flow run, reuses the asset.

    Example:
        ```python
        from prefect import flow
        from prefect_scenario import ScenarioCredentials, upload_video

        @flow
        async def prepare(clip: str) -> str:
            return await upload_video(clip, credentials=await ScenarioCredentials.aload("scenario-prod"))
        ```
    """
    return await _upload(video, kind="video", credentials=credentials, storage=storage)


@task(**_upload_task("image"))
async def upload_image(
    image: str | Path, *, credentials: ScenarioCredentials, storage: _Storage = None
) -> str:
    """Make an image (a keyframe, a reference) a Scenario asset and return its id; once per content.

    Args:
        image: an asset id (returned as is), a local path, or a path inside ``storage``.
        credentials: Scenario credentials.
        storage: a Prefect filesystem block holding ``image``.

    Returns:
        The asset id.

    Example:
        ```python
        asset_id = await upload_image("reference.png", credentials=credentials)  # inside a flow
        ```
    """
    return await _upload(image, kind="image", credentials=credentials, storage=storage)


async def ensure_uploaded(
    upload: Any,
    source: str | Path,
    *,
    credentials: ScenarioCredentials,
    storage: ReadableFileSystem | None = None,
) -> str:
    """``upload`` (:func:`upload_video` or :func:`upload_image`), checked when it came from the cache.

    A cached upload names an asset an earlier run made; the asset may be gone since (deleted in the
    Scenario app, or an emulator restarted). Every submit would then be refused with a 400 for a
    week. A cached asset id is looked up once (a free GET); when the API no longer has it, the cache
    entry is replaced by a fresh upload, once.

    Example:
        ```python
        asset_id = await ensure_uploaded(upload_video, "clip.mp4", credentials=creds)
        ```

    Returns:
        The asset id.
    """
    from prefect_scenario.errors import NotFoundError

    state = await upload(source, credentials=credentials, storage=storage, return_state=True)
    asset_id: str = await state.aresult()
    if state.name != "Cached":
        return asset_id
    try:
        async with credentials.get_client() as client:
            await client.assets.get(asset_id)
        # Prefect's own line says only "Cached": say what was reused.
        run_logger().info(
            "Reusing %s for %s: the same content was uploaded before (nothing to upload)",
            asset_id,
            Path(str(source)).name,
        )
        return asset_id
    except NotFoundError:
        run_logger().warning(
            "The cached upload of %s names %s, which the Scenario API no longer has: uploading it again",
            Path(str(source)).name,
            asset_id,
        )
    fresh: str = await upload.with_options(refresh_cache=True)(
        source, credentials=credentials, storage=storage
    )
    return fresh
