"""Moving files between local disk and Prefect filesystem blocks with bounded memory.

Prefect's ``ReadableFileSystem``/``WritableFileSystem`` interface is ``read_path``/``write_path``:
whole files as ``bytes``. For videos that is the wrong shape, so blocks that can stream are used
through their streaming methods (prefect-aws ``S3Bucket``: ``adownload_object_to_path`` and
``aupload_from_path``, which boto3 turns into a multipart transfer; a ``LocalFileSystem`` is just a
directory), and only other blocks fall back to whole-file reads and writes.

Storage blocks given to a flow by name (``s3-bucket/incoming``) are loaded here
(:func:`load_storage`), and a folder or key prefix of clips is listed here (:func:`find_videos`):
the LocalFileSystem / S3Bucket / other-block ladder lives in this one module.

Everything here is about bytes and paths: no Scenario API, no secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import inspect
import json
import mimetypes
import os
import shutil
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from prefect.blocks.core import Block
from prefect.filesystems import LocalFileSystem, ReadableFileSystem, WritableFileSystem

from prefect_scenario.errors import InputValidationError
from prefect_scenario.workfiles import is_scratch_dir, part_path_beside, scratch_dir

CHUNK_SIZE = 1024 * 1024

# MIME types whose extension ``mimetypes`` gets wrong or does not know on every platform.
_EXTENSIONS = {
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/quicktime": "mov",
    "video/x-matroska": "mkv",
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "application/json": "json",
}


@dataclass(frozen=True)
class FileDigest:
    """Size and sha256 of a file."""

    size: int
    sha256: str


def sha256_file(path: str | Path, *, chunk_size: int = CHUNK_SIZE) -> FileDigest:
    """Hash a file in chunks (memory stays at ``chunk_size`` whatever the file size).

    Args:
        path: the file to hash.
        chunk_size: bytes read at a time.

    Returns:
        The file's size and hex sha256.
    """
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
            size += len(chunk)
    return FileDigest(size=size, sha256=digest.hexdigest())


async def asha256_file(path: str | Path, *, chunk_size: int = CHUNK_SIZE) -> FileDigest:
    """:func:`sha256_file` in a worker thread, so an event loop is not held while hashing."""
    return await asyncio.to_thread(sha256_file, path, chunk_size=chunk_size)


def extension_for(mime_type: str | None, *, fallback: str = "bin") -> str:
    """A file extension (without the dot) for a MIME type."""
    if not mime_type:
        return fallback
    base = mime_type.split(";", 1)[0].strip().lower()
    if base in _EXTENSIONS:
        return _EXTENSIONS[base]
    guessed = mimetypes.guess_extension(base)
    return guessed.lstrip(".") if guessed else fallback


def is_s3_bucket(storage: object) -> bool:
    """True for prefect-aws ``S3Bucket`` (duck-typed, so prefect-aws stays an optional import)."""
    return all(
        hasattr(storage, name) for name in ("bucket_name", "aupload_from_path", "adownload_object_to_path")
    )


def _join(*parts: str) -> str:
    """Join key parts with ``/``, ignoring empty parts (object keys are POSIX, whatever the OS)."""
    cleaned = [str(PurePosixPath(p)).strip("/") for p in parts if p and str(p).strip("/") not in ("", ".")]
    return "/".join(cleaned)


def _check_relative(relative_path: str) -> str:
    pure = PurePosixPath(relative_path)
    if pure.is_absolute() or ".." in pure.parts:
        raise ValueError(f"{relative_path!r} must be a relative path without '..'")
    return str(pure)


def storage_identity(storage: ReadableFileSystem | WritableFileSystem | None, destination: str | Path) -> str:
    """A stable, secret-free name for a place files go to, for cache keys.

    Local directories are named by their absolute path, S3 by ``s3://bucket/prefix``; other blocks by
    their type slug and a hash of their non-secret settings (pydantic masks secret fields).
    """
    if storage is None:
        return "file://" + str(Path(destination).expanduser().resolve())
    if isinstance(storage, LocalFileSystem):
        return "file://" + str(storage._resolve_path(str(destination)))
    if is_s3_bucket(storage):
        folder = str(getattr(storage, "bucket_folder", "") or "")
        bucket: str = getattr(storage, "bucket_name")  # noqa: B009 (duck-typed S3Bucket)
        return f"s3://{bucket}/{_join(folder, str(destination))}"
    settings = storage.model_dump(mode="json")
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    return f"{storage.get_block_type_slug()}:{fingerprint[:16]}/{_join(str(destination))}"


async def _call_block_method(block: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``a<name>`` when the block has it, else ``<name>`` (awaiting it if it is async)."""
    async_method = getattr(block, f"a{name}", None)
    if async_method is not None:
        return await async_method(*args, **kwargs)
    method = getattr(block, name)
    aio = getattr(method, "aio", None)
    if aio is not None:
        return await aio(block, *args, **kwargs)
    result = method(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result


def new_temp_dir() -> Path:
    """A fresh private temporary directory for prefect-scenario's work files.

    It is named after this process, and the first one a process makes removes those that killed
    processes left behind (see :func:`prefect_scenario.workfiles.scratch_dir`).
    """
    return scratch_dir()


def is_temporary(path: Path) -> bool:
    """True when ``path`` lives in a temporary directory made by :func:`new_temp_dir`."""
    return is_scratch_dir(path.parent)


def discard(path: Path) -> None:
    """Remove a file made by :func:`materialize` (and its private directory); keep any other file."""
    if is_temporary(path):
        shutil.rmtree(path.parent, ignore_errors=True)


async def materialize(path: str | Path, storage: ReadableFileSystem | None = None) -> Path:
    """A local file holding the content of ``path``, read from ``storage`` when one is given.

    Without ``storage`` (or with a ``LocalFileSystem``) the file is used in place. An ``S3Bucket``
    object is streamed to a temporary file by boto3 (bounded memory). Other blocks only offer
    ``read_path``, which holds the whole file in memory once.

    Args:
        path: a local path, or a path inside ``storage``.
        storage: a Prefect filesystem block holding the file.

    Returns:
        A local path. When it is a temporary copy, :func:`discard` removes it.

    Raises:
        FileNotFoundError: the file does not exist (locally or in the block).
    """
    if storage is None:
        return _existing_local_file(path)
    if isinstance(storage, LocalFileSystem):
        local = storage._resolve_path(str(path))
        if not local.is_file():
            raise FileNotFoundError(f"{local} does not exist in the local file system block")
        return local
    target = new_temp_dir() / (PurePosixPath(str(path)).name or "file")
    try:
        if is_s3_bucket(storage):
            await storage.adownload_object_to_path(str(path), target)  # type: ignore[attr-defined]
        else:
            content = await _call_block_method(storage, "read_path", str(path))
            await asyncio.to_thread(target.write_bytes, content)
    except Exception as exc:
        discard(target)
        if _is_missing_object(exc):
            raise FileNotFoundError(f"{path} does not exist in {storage.get_block_type_slug()}") from exc
        raise
    return target


def _existing_local_file(path: str | Path) -> Path:
    local = Path(path).expanduser()
    if not local.is_file():
        raise FileNotFoundError(f"{local} does not exist or is not a file")
    return local.resolve()


def _is_missing_object(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound")
    return isinstance(exc, FileNotFoundError)


@contextlib.asynccontextmanager
async def materialized(path: str | Path, storage: ReadableFileSystem | None = None) -> AsyncIterator[Path]:
    """:func:`materialize` as a context manager that removes a temporary copy on exit."""
    local = await materialize(path, storage)
    try:
        yield local
    finally:
        discard(local)


def local_target(relative_path: str, destination: str | Path) -> Path:
    """Where :func:`store_file` puts ``relative_path`` in a local ``destination`` directory."""
    return Path(destination).expanduser().resolve() / _check_relative(relative_path)


def temp_path_beside(target: Path) -> Path:
    """A hidden temporary name in ``target``'s directory, so a rename onto ``target`` is atomic.

    Partial files of ``target`` left by killed processes are removed on the way (see
    :func:`prefect_scenario.workfiles.part_path_beside`).
    """
    return part_path_beside(target)


async def store_file(
    local: str | Path,
    relative_path: str,
    destination: str | Path = ".",
    storage: WritableFileSystem | None = None,
    *,
    content_type: str | None = None,
    digest: FileDigest | None = None,
) -> str:
    """Put a local file at ``destination/relative_path`` and return its absolute location.

    * no storage: a local directory. The file is moved into place with an atomic rename (a copy to a
      temporary name beside it first when it lives elsewhere), so a reader never sees half a file.
    * ``LocalFileSystem``: the same, inside the block's base path.
    * ``S3Bucket``: ``aupload_from_path`` (boto3 multipart, bounded memory), with the content type
      and ``sha256`` as object metadata; the object's size is read back and checked.
    * any other ``WritableFileSystem``: ``write_path`` with the whole file in memory.

    Args:
        local: the file to store. A local source is moved, not copied, when it is a temporary file
            in the same directory tree (see :func:`temp_path_beside`).
        relative_path: where it goes, relative to ``destination``.
        destination: a directory, or a folder inside ``storage``.
        storage: a Prefect filesystem block; None for the local disk.
        content_type: MIME type to record where the storage keeps one.
        digest: size and sha256 of ``local`` when already known (computed otherwise).

    Returns:
        An absolute local path, ``s3://bucket/key``, or what the block's ``write_path`` returned.
    """
    source = Path(local)
    relative = _check_relative(relative_path)
    if storage is None or isinstance(storage, LocalFileSystem):
        base = storage._resolve_path(str(destination)) if storage is not None else Path(destination)
        target = local_target(relative, base)
        await asyncio.to_thread(_place_atomically, source, target)
        return str(target)
    digest = digest or await asha256_file(source)
    key = _join(str(destination), relative)
    if is_s3_bucket(storage):
        extra: dict[str, Any] = {"Metadata": {"sha256": digest.sha256}}
        if content_type:
            extra["ContentType"] = content_type
        bucket_key = await storage.aupload_from_path(source, key, ExtraArgs=extra)  # type: ignore[attr-defined]
        info = await _s3_head(storage, str(bucket_key))
        if info is None or info.size != digest.size:
            raise OSError(
                f"s3://{storage.bucket_name}/{bucket_key} holds {info.size if info else 'nothing'} bytes "  # type: ignore[attr-defined]
                f"after upload, expected {digest.size}"
            )
        return f"s3://{storage.bucket_name}/{bucket_key}"  # type: ignore[attr-defined]
    content = await asyncio.to_thread(source.read_bytes)
    written = await _call_block_method(storage, "write_path", key, content)
    return str(written) if isinstance(written, str | Path) and str(written) else key


def _place_atomically(source: Path, target: Path) -> None:
    if source.resolve() == target.resolve():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Same filesystem: one atomic rename, no copy.
        os.replace(source, target)
        return
    except OSError:
        pass
    staging = temp_path_beside(target)
    try:
        shutil.copyfile(source, staging)
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)


@dataclass(frozen=True)
class StoredObjectInfo:
    """What is already stored at a place: its size, and its sha256 when the storage recorded it."""

    size: int
    sha256: str | None


async def _s3_head(storage: Any, bucket_key: str) -> StoredObjectInfo | None:
    client = storage.credentials.get_s3_client()

    def head() -> StoredObjectInfo | None:
        try:
            answer = client.head_object(Bucket=storage.bucket_name, Key=bucket_key)
        except Exception as exc:
            if _is_missing_object(exc):
                return None
            raise
        metadata = {k.lower(): v for k, v in (answer.get("Metadata") or {}).items()}
        return StoredObjectInfo(size=int(answer["ContentLength"]), sha256=metadata.get("sha256"))

    return await asyncio.to_thread(head)


async def stored_object_info(
    relative_path: str, destination: str | Path = ".", storage: WritableFileSystem | None = None
) -> StoredObjectInfo | None:
    """What is already at ``destination/relative_path`` (None when nothing is there).

    Local files are hashed (chunked); S3 objects report the sha256 :func:`store_file` recorded.
    Other blocks cannot tell without reading the whole object, so they report None.
    """
    relative = _check_relative(relative_path)
    if storage is None or isinstance(storage, LocalFileSystem):
        base = storage._resolve_path(str(destination)) if storage is not None else Path(destination)
        target = local_target(relative, base)
        if not target.is_file():
            return None
        digest = await asha256_file(target)
        return StoredObjectInfo(size=digest.size, sha256=digest.sha256)
    if is_s3_bucket(storage):
        bucket_key = storage._join_bucket_folder(_join(str(destination), relative))  # type: ignore[attr-defined]
        return await _s3_head(storage, bucket_key)
    return None


def s3_location(storage: Any, relative_path: str, destination: str | Path) -> str:
    """``s3://bucket/key`` for ``destination/relative_path`` in an ``S3Bucket``."""
    bucket_key = storage._join_bucket_folder(_join(str(destination), _check_relative(relative_path)))
    return f"s3://{storage.bucket_name}/{bucket_key}"


# -- storage blocks as flow parameters, and listing a folder of clips in one ----------------------

# What a folder listing keeps when no pattern is given.
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".webm", ".mkv"})


async def load_storage(value: Block | str | None, *, field: str) -> Block | None:
    """A storage block given as a block, or as the name of a saved one (``s3-bucket/incoming``).

    A name keeps a deployment's parameters free of secrets: ``prefect.yaml`` can say
    ``video_storage: s3-bucket/incoming`` where templating the block in would copy its credentials.

    Raises:
        InputValidationError: the name is not ``<block type slug>/<block name>`` of a saved
            storage block.
    """
    if value is None or isinstance(value, Block):
        block = value
    else:
        if value.count("/") != 1:
            raise InputValidationError(
                f"{field} {value!r}: name a saved block as '<block type slug>/<block name>', "
                "e.g. 's3-bucket/incoming-videos'",
                field=field,
            )
        try:
            block = await Block.aload(value)
        except Exception as exc:
            raise InputValidationError(
                f"{field} {value!r}: no such saved block ({type(exc).__name__}: {exc}); create it in the "
                "UI (Blocks) or with prefect-aws, then pass '<block type slug>/<block name>'",
                field=field,
            ) from None
    if block is not None and not isinstance(block, ReadableFileSystem | WritableFileSystem):
        raise InputValidationError(
            f"{field}: a {block.get_block_type_slug()} block is not a storage block; use an S3 bucket "
            "(prefect-aws S3Bucket) or a local file system block",
            field=field,
        )
    return block


async def load_source_storage(
    value: ReadableFileSystem | WritableFileSystem | str | None, *, field: str = "video_storage"
) -> ReadableFileSystem | WritableFileSystem | None:
    """:func:`load_storage` for the storage a clip is read from."""
    block = await load_storage(value, field=field)
    assert block is None or isinstance(block, ReadableFileSystem | WritableFileSystem)  # load_storage checked
    return block


async def load_destination_storage(
    value: WritableFileSystem | str | None, *, field: str = "destination_storage"
) -> WritableFileSystem | None:
    """:func:`load_storage` for the storage outputs are written to: it must be writable."""
    block = await load_storage(value, field=field)
    if block is not None and not isinstance(block, WritableFileSystem):
        raise InputValidationError(
            f"{field}: a {block.get_block_type_slug()} block cannot be written to; use an S3 bucket "
            "(prefect-aws S3Bucket) or a local file system block",
            field=field,
        )
    return block


def _wanted(name: str, pattern: str | None) -> bool:
    if name.startswith("."):
        return False
    if pattern:
        return fnmatch.fnmatch(name, pattern)
    return PurePosixPath(name).suffix.lower() in VIDEO_SUFFIXES


async def find_videos(
    videos: Sequence[str] | None,
    folder: str | None,
    pattern: str | None,
    storage: ReadableFileSystem | WritableFileSystem | None,
) -> list[str]:
    """The clips of a batch: ``videos`` first, then the folder's clips by name, without repeats.

    A folder is listed one level deep (sub-folders are not entered, so outputs written under it are
    not picked up again by the next run). Inside an ``S3Bucket`` the folder is a key prefix, with or
    without a trailing slash (``incoming/`` or ``incoming/2025-06-``).

    Args:
        videos: clips given one by one (paths, paths inside ``storage``, or asset ids).
        folder: a local directory, or a folder / key prefix inside ``storage``.
        pattern: a glob on file names (``take-*.mov``); default: .mp4, .mov, .m4v, .webm, .mkv.
        storage: the block holding the clips (``S3Bucket``, ``LocalFileSystem``), if any.

    Returns:
        The clips, in batch order.

    Raises:
        InputValidationError: neither videos nor folder, a folder that does not exist, or a block
            that cannot be listed.
    """
    if not videos and folder is None:
        raise InputValidationError("give the clips: a list of videos, or a folder (or S3 prefix) to list")
    found: list[str] = []
    seen: set[str] = set()
    listed = await _list_folder(folder, pattern, storage) if folder is not None else []
    for video in [*(videos or []), *listed]:
        if video not in seen:
            seen.add(video)
            found.append(video)
    return found


async def _list_folder(
    folder: str, pattern: str | None, storage: ReadableFileSystem | WritableFileSystem | None
) -> list[str]:
    if storage is None:
        return await asyncio.to_thread(_list_local, Path(folder), folder, pattern, absolute=True)
    if isinstance(storage, LocalFileSystem):
        base = storage._resolve_path(folder)
        return await asyncio.to_thread(_list_local, Path(base), folder, pattern, absolute=False)
    if is_s3_bucket(storage):
        return await _list_s3(storage, folder, pattern)
    raise InputValidationError(
        f"cannot list a folder inside a {storage.get_block_type_slug()} block: use an S3Bucket or a "
        "LocalFileSystem block, or give the clips as a list of videos",
        field="folder",
    )


def _list_local(directory: Path, folder: str, pattern: str | None, *, absolute: bool) -> list[str]:
    directory = directory.expanduser()
    if not directory.is_dir():
        raise InputValidationError(f"folder {folder!r} is not a directory ({directory})", field="folder")
    names = sorted(e.name for e in directory.iterdir() if e.is_file() and _wanted(e.name, pattern))
    if absolute:
        return [str(directory.resolve() / name) for name in names]
    # Inside a LocalFileSystem block, paths stay relative to the block's base path.
    return [str(PurePosixPath(folder) / name) if folder else name for name in names]


async def _list_s3(storage: Any, prefix: str, pattern: str | None) -> list[str]:
    objects: list[dict[str, Any]] = await storage.alist_objects(folder=prefix)
    # Keys come back with the block's bucket_folder in front; the block adds it again when reading.
    base = str(getattr(storage, "bucket_folder", "") or "").strip("/")
    full_prefix = storage._join_bucket_folder(prefix) if prefix else (base + "/" if base else "")
    keys: list[str] = []
    for item in objects:
        key = str(item.get("Key", ""))
        rest = key[len(full_prefix) :].lstrip("/") if key.startswith(full_prefix) else None
        # One level only: a key with a "/" past the prefix lives in a sub-folder.
        if not rest or "/" in rest or not _wanted(rest, pattern):
            continue
        keys.append(key[len(base) + 1 :] if base and key.startswith(base + "/") else key)
    return sorted(keys)
