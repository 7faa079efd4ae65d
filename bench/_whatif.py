"""Bench-only experiments: the product with a proposed fix applied in the worker process only.

Nothing here changes ``prefect_scenario``: a worker started with ``what_if=[...]`` replaces a few
functions in its own memory before the measured run, so the report can show how far a proposed
change would move a figure. The official figures are always those of the unpatched product; a
what-if row is labelled as such. Each patch mirrors a change proposed in ``bench/README.md``.

* ``labels``: ``record_job_on_flow_run`` without the thread pool. The product runs every label
  write in ``asyncio.to_thread`` behind one ``threading.Lock`` with a new sync Prefect client per
  write, and calls it twice per job (submit, then the first poll of the wait). Under load the
  writers queue on the lock *inside* the default executor's threads (6 on 2 cores), so every other
  ``to_thread`` of the process (part reads, download writes, probes) waits behind them. The patch
  awaits an ``asyncio.Lock`` on the run's own async client, writes every id queued meanwhile in one
  read-merge-write (group commit), and skips ids this process already wrote for the flow run. The
  guarantee is unchanged: the call returns once its job id is on the labels.
* ``stream_parts``: upload parts streamed from disk in 1 MiB chunks with an explicit
  ``Content-Length`` (S3 presigned PUTs need it), instead of each part read whole into memory. The
  product holds ``max_parts_in_flight`` (4) x ``part_size`` (8 MiB) in ``bytes``, and asyncio's
  transport copies the unsent rest of each into its write buffer: about 2 x 32 MiB at the peak.
* ``ssl``: one SSL context per process for the client's ``httpx.AsyncClient``s. Each task opens
  its own ``ScenarioClient``, and httpx builds a fresh SSL context (loading the CA bundle) for each.
"""

from __future__ import annotations

import asyncio
from typing import Any

PATCHES = ("labels", "ssl", "stream_parts")


def apply(names: list[str]) -> None:
    """Apply the named patches in this process."""
    for name in names:
        if name == "labels":
            _patch_labels()
        elif name == "ssl":
            _patch_ssl()
        elif name == "stream_parts":
            _patch_stream_parts()
        elif name == "dev_labels_async":
            from prefect_scenario.tasks import _runtime, submit

            original = _runtime.record_job_on_flow_run
            keep: set[Any] = set()

            async def fire(job_id: str, model_id: str | None) -> bool:
                t = asyncio.ensure_future(original(job_id, model_id))
                keep.add(t)
                t.add_done_callback(keep.discard)
                return True

            submit.record_job_on_flow_run = fire  # type: ignore[assignment]
        elif name == "trace":
            _trace()
        else:
            raise ValueError(f"unknown what-if patch {name!r}; known: {', '.join(PATCHES)}, trace")


# Durations of awaited calls, by name (filled by the ``trace`` option, which changes no behaviour).
TRACE: dict[str, list[float]] = {}


def _timed(name: str, function: Any) -> Any:
    import functools
    import time

    @functools.wraps(function)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await function(*args, **kwargs)
        finally:
            TRACE.setdefault(name, []).append(time.perf_counter() - started)

    return wrapper


def _trace() -> None:
    """Time the awaits a batch's clip goes through (where the wall time goes; no behaviour change)."""
    import contextlib
    import time

    from prefect_scenario import concurrency
    from prefect_scenario.client import assets, generate, jobs, uploads
    from prefect_scenario.flows import _common, batch
    from prefect_scenario.tasks import _runtime, download, submit, upload, wait

    for owner, attribute, name in (
        (generate.GenerateAPI, "estimate", "client.generate.estimate"),
        (generate.GenerateAPI, "run", "client.generate.run"),
        (jobs.JobsAPI, "wait", "client.jobs.wait"),
        (uploads.UploadsAPI, "upload_file", "client.uploads.upload_file"),
        (assets.AssetsAPI, "download", "client.assets.download"),
        (assets.AssetsAPI, "get", "client.assets.get"),
        (submit, "record_job_on_flow_run", "record_job_on_flow_run (submit)"),
        (wait, "record_job_on_flow_run", "record_job_on_flow_run (wait)"),
        (wait, "acreate_progress_artifact", "acreate_progress_artifact (wait)"),
        (wait, "aupdate_progress_artifact", "aupdate_progress_artifact (wait)"),
        (submit, "flow_run_job_ids", "flow_run_job_ids"),
        (batch, "check_video", "check_video"),
        (_common, "check_video", "check_video (common)"),
        (upload, "resolve_credentials", "resolve_credentials (upload)"),
        (download, "stored_object_info", "stored_object_info"),
        (_runtime, "record_job_on_flow_run", "record_job_on_flow_run (runtime)"),
    ):
        setattr(owner, attribute, _timed(name, getattr(owner, attribute)))

    original_slot = concurrency.SlotPool.slot

    @contextlib.asynccontextmanager
    async def slot(self: Any) -> Any:
        started = time.perf_counter()
        async with original_slot(self):
            acquired = time.perf_counter()
            TRACE.setdefault("job_slot acquire", []).append(acquired - started)
            try:
                yield
            finally:
                TRACE.setdefault("job_slot held", []).append(time.perf_counter() - acquired)

    concurrency.SlotPool.slot = slot  # type: ignore[method-assign]
    # The whole task call as the batch awaits it (Prefect's engine included), beside its body.
    for task_name in ("upload_video", "wait_for_job", "download_outputs"):
        setattr(batch, task_name, _timed(f"{task_name} call", getattr(batch, task_name)))
    original_submit_with_options = batch.submit_job.with_options

    def submit_with_options(*args: Any, **kwargs: Any) -> Any:
        return _timed("submit_job call", original_submit_with_options(*args, **kwargs))

    batch.submit_job = type(  # type: ignore[assignment]
        "TracedSubmit", (), {"with_options": staticmethod(submit_with_options)}
    )()

    for task_module, task_name in (
        (upload, "upload_video"),
        (submit, "submit_job"),
        (wait, "wait_for_job"),
        (download, "download_outputs"),
    ):
        task = getattr(task_module, task_name)
        task.fn = _timed(f"{task_name} body", task.fn)
    _count_prefect_requests()


# Requests this process sent to the Prefect API, by "METHOD /route" (ids replaced by {id}), and
# events it emitted, by event name (filled by the ``trace`` option).
PREFECT_REQUESTS: dict[str, int] = {}
EVENTS: dict[str, int] = {}


def _count_prefect_requests() -> None:
    import re

    import httpx
    from prefect.client import base
    from prefect.events import worker as events_worker

    ids = re.compile(r"/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

    def route(request: httpx.Request) -> str:
        path = ids.sub("/{id}", request.url.path)
        return f"{request.method} {path.split('/api', 1)[-1]}"

    async_send = base.PrefectHttpxAsyncClient.send
    sync_send = base.PrefectHttpxSyncClient.send

    async def send_async(self: Any, request: httpx.Request, *args: Any, **kwargs: Any) -> Any:
        import time

        key = route(request)
        PREFECT_REQUESTS[key] = PREFECT_REQUESTS.get(key, 0) + 1
        started = time.perf_counter()
        try:
            return await async_send(self, request, *args, **kwargs)
        finally:
            TRACE.setdefault(f"prefect {key}", []).append(time.perf_counter() - started)

    def send_sync(self: Any, request: httpx.Request, *args: Any, **kwargs: Any) -> Any:
        key = route(request)
        PREFECT_REQUESTS[key] = PREFECT_REQUESTS.get(key, 0) + 1
        return sync_send(self, request, *args, **kwargs)

    base.PrefectHttpxAsyncClient.send = send_async  # type: ignore[method-assign]
    base.PrefectHttpxSyncClient.send = send_sync  # type: ignore[method-assign]

    original_send = events_worker.EventsWorker.send

    def send_event(self: Any, event: Any) -> Any:
        name = str(getattr(event, "event", "?"))
        EVENTS[name] = EVENTS.get(name, 0) + 1
        return original_send(self, event)

    events_worker.EventsWorker.send = send_event  # type: ignore[method-assign]


def _patch_labels() -> None:
    from prefect.client.orchestration import get_client

    from prefect_scenario.tasks import _runtime, submit, wait

    recorded: set[tuple[str, str]] = set()
    pending: dict[str, dict[str, str | None]] = {}
    locks: dict[tuple[int, str], asyncio.Lock] = {}

    async def record_job_on_flow_run(job_id: str, model_id: str | None) -> bool:
        flow_run_id = _runtime.current_flow_run_id()
        if flow_run_id is None:
            return False
        if (flow_run_id, job_id) in recorded:
            return True
        pending.setdefault(flow_run_id, {})[job_id] = model_id
        lock = locks.setdefault((id(asyncio.get_running_loop()), flow_run_id), asyncio.Lock())
        async with lock:
            if (flow_run_id, job_id) in recorded:
                return True  # written by the holder before us, together with its own
            batch = pending.pop(flow_run_id, {})
            batch[job_id] = model_id
            try:
                async with get_client() as client:
                    flow_run = await client.read_flow_run(flow_run_id)  # type: ignore[arg-type]
                    labels: dict[str, Any] = dict(flow_run.labels or {})
                    update: dict[str, str] = {}
                    for queued_id, queued_model in batch.items():
                        change = _runtime.merged_job_labels(labels, queued_id, queued_model)
                        labels.update(change)
                        update.update(change)
                    await client.update_flow_run_labels(flow_run.id, update)
            except Exception as exc:
                # The others of the batch try again when their turn comes; this one gives up, as
                # the product does (the job exists either way).
                batch.pop(job_id, None)
                pending.setdefault(flow_run_id, {}).update(batch)
                _runtime.run_logger().warning(
                    "Could not record Scenario job %s on the flow run's labels: %s", job_id, exc
                )
                return False
            recorded.update((flow_run_id, queued_id) for queued_id in batch)
            return True

    submit.record_job_on_flow_run = record_job_on_flow_run  # type: ignore[assignment]
    wait.record_job_on_flow_run = record_job_on_flow_run  # type: ignore[assignment]
    _runtime.record_job_on_flow_run = record_job_on_flow_run  # type: ignore[assignment]


def _patch_ssl() -> None:
    import ssl

    import certifi
    import httpx

    from prefect_scenario.client import _http

    context = ssl.create_default_context(cafile=certifi.where())

    def client(self: Any) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                transport=self._transport,
                headers={"Accept": "application/json", "User-Agent": self._user_agent},
                follow_redirects=True,
                verify=context,
            )
        return self._client  # type: ignore[no-any-return]

    _http.HttpCore.client = property(client)  # type: ignore[assignment,method-assign]


def _patch_stream_parts() -> None:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import httpx

    from prefect_scenario.client import uploads
    from prefect_scenario.errors import InputValidationError, PermissionDeniedError

    chunk = 1024 * 1024

    class FileSlice(httpx.AsyncByteStream):
        """Bytes ``offset .. offset + length`` of a file, read lazily; restartable per attempt."""

        def __init__(self, path: Path, offset: int, length: int) -> None:
            self.path, self.offset, self.length = path, offset, length

        async def __aiter__(self) -> AsyncIterator[bytes]:
            handle = await asyncio.to_thread(open, self.path, "rb")
            try:
                await asyncio.to_thread(handle.seek, self.offset)
                remaining = self.length
                while remaining:
                    data = await asyncio.to_thread(handle.read, min(chunk, remaining))
                    if not data:
                        raise InputValidationError(
                            f"{self.path} changed while it was being uploaded", field="path"
                        )
                    remaining -= len(data)
                    yield data
            finally:
                handle.close()

    def read_slice(path: Path, offset: int, length: int) -> FileSlice:
        return FileSlice(Path(path), offset, length)

    original_put = uploads.UploadsAPI._put_part

    async def put_part(self: Any, url: str, data: Any, content_type: str) -> None:
        if not isinstance(data, FileSlice):
            await original_put(self, url, data, content_type)
            return
        client = self._http.client
        headers = {"Content-Type": content_type, "Content-Length": str(data.length)}
        try:
            await self._http.send(
                lambda: client.build_request("PUT", url, content=data, headers=headers),
                auth=False,
                idempotent=True,
            )
        except PermissionDeniedError as exc:
            raise uploads._PartUrlsRefused(exc) from None

    uploads._read_slice = read_slice  # type: ignore[assignment]
    uploads.UploadsAPI._put_part = put_part  # type: ignore[method-assign]
