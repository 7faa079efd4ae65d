"""Cache policies of the prefect-scenario tasks: what makes two task runs "the same".

Prefect's default policy hashes inputs as values: a ``Path`` by its *name*, a block with its secrets
masked. That is wrong for media (the same clip under two names, or new bytes under an old name), so
each task that is cached across flow runs has its own policy here:

* :class:`UploadContentPolicy`: the sha256 of the file's *content* (read in chunks), the asset kind
  and the credentials' :meth:`~prefect_scenario.blocks.ScenarioCredentials.cache_scope` (base URL and
  project). The same clip is uploaded once per project, whatever its name or where it is stored.
* :class:`JobRequestPolicy`: the model id, the request body and the scope, plus the flow run id
  unless the task is called with ``reuse_across_runs=True``. No task source and no estimate in the
  key: a redeploy between a failed attempt and its retry, or a new price, must not buy the job twice.
* :class:`DownloadPolicy`: the job's output asset ids and where they go. For a local destination the
  key is None (no cache, and nothing recorded) while any output file is missing, so a deleted file is
  downloaded again instead of being reported from the cache.

No key ever holds a secret: scopes are URLs and project ids, and keys are hashes.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.utilities.hashing import hash_objects

from prefect_scenario.models import is_asset_id
from prefect_scenario.storage import (
    FileDigest,
    discard,
    materialize,
    sha256_file,
    storage_identity,
)

UPLOAD_NAMESPACE = "prefect-scenario/upload/v1"
JOB_NAMESPACE = "prefect-scenario/job/v1"
DOWNLOAD_NAMESPACE = "prefect-scenario/download/v1"


def credentials_scope(credentials: Any) -> str:
    """The cache scope of whatever a task was given as credentials (an instance, a block name, None)."""
    from prefect_scenario.blocks import resolve_credentials_sync

    return resolve_credentials_sync(credentials).cache_scope()


# ---------------------------------------------------------------------------------------------
# Content digests, shared between a cache policy and the task body that follows it
# ---------------------------------------------------------------------------------------------


@dataclass
class _Fetched:
    path: Path
    digest: FileDigest
    created: float


class ContentDigests:
    """Memo of content hashes, so the policy and the task body read a file once, not twice.

    Local files are remembered by (path, size, mtime). Files inside a storage block are fetched to a
    temporary file by the policy (a content key needs the content) and handed to the task body, which
    takes ownership; copies nobody claimed are removed after ``ttl_seconds`` or at exit.
    """

    def __init__(self, ttl_seconds: float = 600.0) -> None:
        self._lock = threading.Lock()
        self._local: dict[tuple[str, int, int], FileDigest] = {}
        self._fetched: dict[tuple[str, str], _Fetched] = {}
        self._ttl_seconds = ttl_seconds
        atexit.register(self.clear)

    def local(self, path: Path) -> FileDigest:
        """The digest of a local file (hashed in chunks, once per version of the file)."""
        stat = path.stat()
        memo_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            known = self._local.get(memo_key)
        if known is not None:
            return known
        digest = sha256_file(path)
        with self._lock:
            if len(self._local) > 4096:
                self._local.clear()
            self._local[memo_key] = digest
        return digest

    def fetch(self, source: str, storage: Any) -> FileDigest:
        """Fetch ``source`` from ``storage`` to a temporary file (kept for :meth:`take`) and hash it.

        Runs the async fetch on its own event loop in a helper thread: cache policies are called
        synchronously, possibly from a thread whose loop is busy running the task engine.
        """
        memo_key = (storage_identity(storage, ""), source)
        self._expire()
        with self._lock:
            known = self._fetched.get(memo_key)
        if known is not None and known.path.exists():
            return known.digest
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                local = asyncio.run(materialize(source, storage))
                box["fetched"] = _Fetched(local, sha256_file(local), time.monotonic())
            except BaseException as exc:
                box["error"] = exc

        helper = threading.Thread(target=work, name="prefect-scenario-fetch", daemon=True)
        helper.start()
        helper.join()
        if "error" in box:
            raise box["error"]
        fetched: _Fetched = box["fetched"]
        with self._lock:
            previous = self._fetched.pop(memo_key, None)
            self._fetched[memo_key] = fetched
        if previous is not None and previous.path != fetched.path:
            discard(previous.path)
        return fetched.digest

    def take(self, source: str, storage: Any) -> tuple[Path, FileDigest] | None:
        """Claim a file fetched by :meth:`fetch` (the caller then removes it with ``discard``)."""
        memo_key = (storage_identity(storage, ""), source)
        with self._lock:
            fetched = self._fetched.pop(memo_key, None)
        if fetched is None or not fetched.path.exists():
            return None
        return fetched.path, fetched.digest

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            stale = [k for k, v in self._fetched.items() if now - v.created > self._ttl_seconds]
            dropped = [self._fetched.pop(k) for k in stale]
        for item in dropped:
            discard(item.path)

    def clear(self) -> None:
        """Forget everything and remove unclaimed temporary copies."""
        with self._lock:
            dropped = list(self._fetched.values())
            self._fetched.clear()
            self._local.clear()
        for item in dropped:
            discard(item.path)


DIGESTS = ContentDigests()


def content_digest(source: str | Path, storage: Any = None) -> FileDigest:
    """The size and sha256 of a local file, or of a file inside a storage block."""
    if storage is None:
        return DIGESTS.local(Path(source).expanduser())
    from prefect.filesystems import LocalFileSystem

    if isinstance(storage, LocalFileSystem):
        return DIGESTS.local(storage._resolve_path(str(source)))
    return DIGESTS.fetch(str(source), storage)


# ---------------------------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------------------------


@dataclass
class _InputsPolicy(CachePolicy):
    """A policy whose key comes from the task's inputs (and its run), never from the flow's parameters."""

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        return self.key(task_ctx, inputs)

    def key(self, task_ctx: TaskRunContext, inputs: dict[str, Any]) -> str | None:
        raise NotImplementedError


@dataclass
class UploadContentPolicy(_InputsPolicy):
    """Key an upload by the sha256 of the file's content, the asset kind and the credentials' scope.

    Returns None (no caching) when the source is already an asset id, or when the file cannot be read
    (the task body then reports the problem).
    """

    source_parameter: str = "video"
    kind: str = "video"

    def key(self, task_ctx: TaskRunContext, inputs: dict[str, Any]) -> str | None:
        source = inputs.get(self.source_parameter)
        if source is None or is_asset_id(source):
            return None
        storage = inputs.get("storage")
        try:
            digest = content_digest(source, storage)
        except (FileNotFoundError, IsADirectoryError):
            return None
        return hash_objects(
            {
                "namespace": UPLOAD_NAMESPACE,
                "kind": self.kind,
                "sha256": digest.sha256,
                "size": digest.size,
                "scope": credentials_scope(inputs.get("credentials")),
            },
            raise_on_failure=True,
        )


def normalized_body(body: Any) -> dict[str, Any]:
    """The wire body of a request: a dict as given, or a request model's ``to_body()``."""
    to_body = getattr(body, "to_body", None)
    if callable(to_body):
        return dict(to_body())
    return dict(body)


def job_request_key(model_id: str, body: Any, scope: str, flow_run_id: str | None) -> str:
    """The cache key of a paid submit (see :class:`JobRequestPolicy`); pure, so it can be recomputed."""
    key = hash_objects(
        {
            "namespace": JOB_NAMESPACE,
            "model_id": model_id,
            "body": normalized_body(body),
            "scope": scope,
            "flow_run_id": flow_run_id,
        },
        raise_on_failure=True,
    )
    assert key is not None
    return key


def cache_run_id(task_ctx: TaskRunContext | None) -> str | None:
    """The run a per-run cache key is scoped to: the task run's flow run (its own id without a flow)."""
    if task_ctx is None:
        return None
    run_id = task_ctx.task_run.flow_run_id or task_ctx.task_run.id
    return str(run_id)


@dataclass
class JobRequestPolicy(_InputsPolicy):
    """Key a paid submit by model id, body and scope; per flow run unless ``reuse_across_runs``.

    The flow run id (Prefect's ``RUN_ID``) keeps the default behaviour: a retry of the same flow run
    reuses its job, a new flow run submits a new one. With ``reuse_across_runs=True`` (a task input)
    the flow run id is left out, so any run with the same inputs reuses the job.
    """

    def key(self, task_ctx: TaskRunContext, inputs: dict[str, Any]) -> str | None:
        run_id = None if inputs.get("reuse_across_runs") else cache_run_id(task_ctx)
        return job_request_key(
            str(inputs["model_id"]),
            inputs["body"],
            credentials_scope(inputs.get("credentials")),
            run_id,
        )


def output_files_present(destination: Path, job_id: str, asset_ids: list[str]) -> bool:
    """True when every output of the job has a file in ``destination/<job_id>/``."""
    folder = destination / job_id
    if not folder.is_dir():
        return False
    names = [p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return all(
        any(name.split(".", 1)[0].endswith(f"-{asset_id}") for name in names) for asset_id in asset_ids
    )


@dataclass
class DownloadPolicy(_InputsPolicy):
    """Key a download by the job's output asset ids and the destination.

    For a local destination (no storage block, or a ``LocalFileSystem``) the key is None while any
    output file is missing: the task then runs (and finds what is already there), and only a run
    that finds every file records a result that later runs may reuse.
    """

    def key(self, task_ctx: TaskRunContext, inputs: dict[str, Any]) -> str | None:
        job = inputs.get("job")
        asset_ids = list(getattr(getattr(job, "metadata", None), "asset_ids", None) or [])
        job_id = getattr(job, "job_id", None)
        if not asset_ids or not job_id:
            return None
        storage = inputs.get("storage")
        destination = inputs.get("destination", "scenario-outputs")
        from prefect.filesystems import LocalFileSystem

        if storage is None or isinstance(storage, LocalFileSystem):
            root = storage._resolve_path(str(destination)) if storage is not None else Path(destination)
            if not output_files_present(Path(root).expanduser().resolve(), job_id, asset_ids):
                return None
        return hash_objects(
            {
                "namespace": DOWNLOAD_NAMESPACE,
                "job_id": job_id,
                "asset_ids": sorted(asset_ids),
                "destination": storage_identity(storage, destination),
            },
            raise_on_failure=True,
        )
