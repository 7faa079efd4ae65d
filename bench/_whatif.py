"""Bench-only instrumentation of the worker process: the ``trace`` option.

Nothing here changes ``prefect_scenario`` or its behaviour: a worker started with
``what_if=["trace"]`` wraps a few functions in its own memory before the measured run, to see where
a batch flow run's wall time goes. The official figures are those of untraced runs; the overhead
benchmark makes one extra, traced flow run as a diagnostic, not counted in its medians.

``trace`` records, in this process:

* ``TRACE``: the duration of every call of the awaits a batch's clip goes through, by name: the
  client's API calls (``client.generate.run``, ``client.jobs.wait``, ``client.uploads.upload_file``,
  ...), the label writes and progress artifacts of the tasks, the wait for a job slot and how long
  it is held (``job_slot acquire`` / ``job_slot held``, around ``slot_pool.SlotPool.slot``), each
  task call as the batch awaits it, Prefect's engine included (``upload_video call``,
  ``submit_job call``, ``wait_inline call``, ``download_outputs call``) beside the task's own body
  (``... body``), and every request to the Prefect API by route (``prefect METHOD /route``);
* ``PREFECT_REQUESTS``: requests this process sent to the Prefect API, by route (ids as ``{id}``);
* ``EVENTS``: events it emitted, by event name.

``bench._worker.batch_flow`` returns them as ``trace`` (name -> calls, median, max, sum in
seconds), ``prefect_requests`` and ``events``.
"""

from __future__ import annotations

from typing import Any

OPTIONS = ("trace",)


def apply(names: list[str]) -> None:
    """Apply the named options in this process (only ``trace`` exists: it changes no behaviour)."""
    for name in names:
        if name == "trace":
            _trace()
        else:
            raise ValueError(f"unknown what-if option {name!r}; known: {', '.join(OPTIONS)}")


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

    from prefect_scenario import clip_source, job_labels, slot_pool
    from prefect_scenario.client import assets, generate, jobs, uploads
    from prefect_scenario.flows import _batch, _job
    from prefect_scenario.tasks import download, submit, upload, wait

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
        (clip_source.ClipSource, "fetch", "ClipSource.fetch"),
        (upload, "resolve_credentials", "resolve_credentials (upload)"),
        (download, "stored_object_info", "stored_object_info"),
        (job_labels, "record_job_on_flow_run", "record_job_on_flow_run (labels)"),
    ):
        setattr(owner, attribute, _timed(name, getattr(owner, attribute)))

    original_slot = slot_pool.SlotPool.slot

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

    slot_pool.SlotPool.slot = slot  # type: ignore[method-assign]
    # The whole task call as the batch awaits it (Prefect's engine included), beside its body.
    _batch.upload_video = _timed("upload_video call", _batch.upload_video)  # type: ignore[assignment]
    for task_name in ("wait_inline", "download_outputs"):
        setattr(_job, task_name, _timed(f"{task_name} call", getattr(_job, task_name)))
    original_submit_with_options = _job.submit_job.with_options

    def submit_with_options(*args: Any, **kwargs: Any) -> Any:
        return _timed("submit_job call", original_submit_with_options(*args, **kwargs))

    _job.submit_job = type(  # type: ignore[assignment]
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
