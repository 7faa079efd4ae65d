"""Measured work, one measurement per process: ``python -m bench._worker NAME ARGS_JSON OUT_JSON``.

Every function here runs in a fresh interpreter started by :func:`bench._common.run_worker`, measures
itself (wall, CPU, peak RSS; see :class:`bench._common.measure`) and returns a JSON-able dict.
Imports happen inside the functions so a worker only loads what it measures.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import cpu_seconds, measure, peak_rss_bytes, write_json
from bench._services import EMULATOR_KEY, EMULATOR_SECRET

WORKERS: dict[str, Callable[[dict[str, Any]], Any]] = {}


def worker(function: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    WORKERS[function.__name__] = function
    return function


def _client(base_url: str, project_id: str | None = None) -> Any:
    from prefect_scenario.client import ScenarioClient

    return ScenarioClient(
        base_url=base_url, api_key=EMULATOR_KEY, api_secret=EMULATOR_SECRET, project_id=project_id
    )


def _credentials(base_url: str, project_id: str) -> Any:
    from prefect_scenario.blocks import ScenarioCredentials

    return ScenarioCredentials(
        api_key=EMULATOR_KEY, api_secret=EMULATOR_SECRET, base_url=base_url, project_id=project_id
    )


def _finished_job(asset_id: str) -> Any:
    """A successful job whose one output is ``asset_id`` (what ``wait_for_job`` hands on)."""
    from prefect_scenario.models import Job

    return Job.model_validate(
        {
            "jobId": f"job_bench{uuid.uuid4().hex[:16]}",
            "jobType": "custom",
            "status": "success",
            "progress": 1,
            "statusHistory": [{"status": "success", "date": "2026-01-10T09:00:00.000Z"}],
            "metadata": {"assetIds": [asset_id]},
            "createdAt": "2026-01-10T09:00:00.000Z",
            "updatedAt": "2026-01-10T09:00:00.000Z",
        }
    )


def _s3_bucket(s3: dict[str, str]) -> Any:
    from prefect_aws import AwsCredentials, S3Bucket

    credentials = AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        aws_client_parameters={"endpoint_url": s3["endpoint"]},
    )
    return S3Bucket(bucket_name=s3["bucket"], credentials=credentials)


# -- memory: a large file through the client and through the tasks -----------------------------


@worker
def client_upload(args: dict[str, Any]) -> dict[str, Any]:
    """``client.uploads.upload_file`` of ``args["path"]`` after a warm-up upload of a small clip."""

    if args.get("what_if"):
        from bench import _whatif

        _whatif.apply(list(args["what_if"]))

    async def main() -> dict[str, Any]:
        async with _client(args["base_url"]) as client:
            await client.uploads.upload_file(Path(args["warmup_path"]))
            with measure() as section:
                asset = await client.uploads.upload_file(Path(args["path"]))
        return {"asset_id": asset.id, "size": asset.properties.size, **section.as_dict()}

    return asyncio.run(main())


@worker
def client_upload_allocations(args: dict[str, Any]) -> dict[str, Any]:
    """``client_upload`` under ``tracemalloc``: where the bytes live at the peak of the upload.

    A thread samples the traced total every 20 ms and keeps a snapshot whenever it reaches a new
    maximum; the largest snapshot is grouped by allocation site (the profiler for a memory target).
    """
    import threading
    import time
    import tracemalloc

    best: dict[str, Any] = {"size": 0, "snapshot": None}
    stop = threading.Event()

    def sampler() -> None:
        while not stop.is_set():
            current, _ = tracemalloc.get_traced_memory()
            if current > best["size"] * 1.02:
                best["size"] = current
                best["snapshot"] = tracemalloc.take_snapshot()
            time.sleep(0.02)

    async def main() -> None:
        async with _client(args["base_url"]) as client:
            await client.uploads.upload_file(Path(args["warmup_path"]))
            tracemalloc.start(12)
            thread = threading.Thread(target=sampler, daemon=True)
            thread.start()
            try:
                await client.uploads.upload_file(Path(args["path"]))
            finally:
                stop.set()
                thread.join()
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
        best["peak"] = peak

    asyncio.run(main())
    snapshot = best["snapshot"]
    sites = []
    if snapshot is not None:
        for stat in snapshot.statistics("traceback")[:8]:
            frames = [
                f"{Path(frame.filename).name}:{frame.lineno}"
                for frame in stat.traceback
                if "tracemalloc" not in frame.filename
            ]
            sites.append({"bytes": stat.size, "count": stat.count, "traceback": frames[-6:]})
    return {"traced_peak_bytes": best.get("peak"), "sampled_peak_bytes": best["size"], "top_sites": sites}


@worker
def client_download(args: dict[str, Any]) -> dict[str, Any]:
    """``client.assets.download`` of ``args["asset_id"]`` after a warm-up download."""
    target = Path(tempfile.mkdtemp(prefix="bench-download-", dir=args.get("scratch")))

    async def main() -> dict[str, Any]:
        async with _client(args["base_url"]) as client:
            warm = await client.assets.download(args["warmup_asset_id"], target)
            warm.path.unlink()
            with measure() as section:
                downloaded = await client.assets.download(args["asset_id"], target)
        return {"size": downloaded.size, "sha256": downloaded.sha256, **section.as_dict()}

    try:
        return asyncio.run(main())
    finally:
        shutil.rmtree(target, ignore_errors=True)


@worker
def task_upload(args: dict[str, Any]) -> dict[str, Any]:
    """The ``upload_video`` task (content-hash cache policy included) on a large file."""
    from prefect_scenario.tasks import upload_video

    if args.get("what_if"):
        from bench import _whatif

        _whatif.apply(list(args["what_if"]))
    credentials = _credentials(args["base_url"], f"proj_bench{uuid.uuid4().hex[:12]}")

    async def main() -> dict[str, Any]:
        await upload_video(args["warmup_path"], credentials=credentials)
        with measure() as section:
            asset_id = await upload_video(args["path"], credentials=credentials)
        return {"asset_id": asset_id, **section.as_dict()}

    return asyncio.run(main())


@worker
def task_download(args: dict[str, Any]) -> dict[str, Any]:
    """The ``download_outputs`` task to a local directory or to an S3 bucket (moto)."""
    from prefect_scenario.tasks import download_outputs

    credentials = _credentials(args["base_url"], f"proj_bench{uuid.uuid4().hex[:12]}")
    s3 = args.get("s3")
    storage = _s3_bucket(s3) if s3 else None
    scratch = Path(tempfile.mkdtemp(prefix="bench-outputs-", dir=args.get("scratch")))
    folder = f"bench-{uuid.uuid4().hex[:8]}"

    async def main() -> dict[str, Any]:
        destination: str = folder if storage is not None else str(scratch)
        await download_outputs(
            _finished_job(args["warmup_asset_id"]),
            credentials=credentials,
            destination=destination + "-warmup",
            storage=storage,
        )
        with measure() as section:
            outputs = await download_outputs(
                _finished_job(args["asset_id"]),
                credentials=credentials,
                destination=destination,
                storage=storage,
            )
        return {"size": outputs[0].size, "location": outputs[0].location, **section.as_dict()}

    try:
        return asyncio.run(main())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(f"{scratch}-warmup", ignore_errors=True)


# -- overhead and scale: a batch of jobs, by the flow and by a bare SDK script -----------------


@worker
def batch_flow(args: dict[str, Any]) -> dict[str, Any]:
    """``video_to_layers_batch`` over ``args["clips"]`` (upload, submit, wait, download, artifacts,
    events), with a global concurrency limit of ``args["concurrency"]`` slots (None: no limit)."""
    from prefect_scenario.flows.batch import video_to_layers_batch

    if args.get("what_if"):
        from bench import _whatif

        _whatif.apply(list(args["what_if"]))
    credentials = _credentials(args["base_url"], args["project_id"])
    limit = args.get("concurrency")
    limit_name = f"bench-{uuid.uuid4().hex[:10]}" if limit else None

    async def main() -> dict[str, Any]:
        with measure() as section:
            state = await video_to_layers_batch(
                separation_instruction="each moving object apart from the background",
                videos=args["clips"],
                max_layers=args["max_layers"],
                destination=args["destination"],
                credentials=credentials,
                concurrency_limit_name=limit_name,
                concurrency_limit=limit or 1,
                timeout_seconds=args.get("timeout_seconds", 3600),
                review=args.get("review", False),
                return_state=True,
            )
        result = await state.aresult(raise_on_failure=False)
        clips = getattr(result, "clips", None)
        if clips is None:
            return {
                "state": state.type.value,
                "message": state.message,
                "errors": len(args["clips"]),
                **section.as_dict(),
            }
        failed = [clip for clip in clips if clip.status != "succeeded"]
        from bench import _whatif

        trace = {
            name: {
                "calls": len(values),
                "median": round(sorted(values)[len(values) // 2], 3),
                "max": round(max(values), 3),
                "sum": round(sum(values), 1),
            }
            for name, values in _whatif.TRACE.items()
        }
        return {
            "trace": trace,
            "prefect_requests": dict(sorted(_whatif.PREFECT_REQUESTS.items(), key=lambda kv: -kv[1])),
            "events": dict(sorted(_whatif.EVENTS.items(), key=lambda kv: -kv[1])),
            "state": state.type.value,
            "message": (state.message or "")[:500],
            "succeeded": len(clips) - len(failed),
            "errors": len(failed),
            "first_errors": [clip.error for clip in failed[:3]],
            "outputs": sum(len(clip.outputs) for clip in clips),
            **section.as_dict(),
        }

    try:
        return asyncio.run(main())
    finally:
        shutil.rmtree(args["destination"], ignore_errors=True)


@worker
def batch_sdk(args: dict[str, Any]) -> dict[str, Any]:
    """The same four steps with the official ``scenario-sdk`` (``AsyncScenario``) and httpx, as a
    plain asyncio script: the same concurrency (uploads 8 at a time, ``concurrency`` jobs in flight,
    3 downloads per job), a fixed poll interval, no validation, caching, artifacts or events."""
    import math

    import httpx
    from scenario_sdk import AsyncScenario

    poll = float(args.get("poll_seconds", 1.0))
    destination = Path(args["destination"])
    part_size = 8 * 1024 * 1024

    async def main() -> dict[str, Any]:
        sdk = AsyncScenario(api_key=EMULATOR_KEY, api_secret=EMULATOR_SECRET, base_url=args["base_url"])
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        prepare_gate = asyncio.Semaphore(8)
        job_gate = asyncio.Semaphore(args.get("concurrency") or len(args["clips"]))
        errors: list[str] = []
        outputs = 0

        async def upload(http: httpx.AsyncClient, path: Path) -> str:
            size = (await asyncio.to_thread(path.stat)).st_size
            parts = max(1, math.ceil(size / part_size))
            created = (
                await sdk.uploads.create(
                    file_name=path.name, content_type="video/mp4", file_size=size, kind="video", parts=parts
                )
            ).upload
            assert created.parts is not None
            with path.open("rb") as handle:
                for part in created.parts:
                    data = handle.read(part_size)
                    (
                        await http.put(part.url, content=data, headers={"Content-Type": "video/mp4"})
                    ).raise_for_status()
            await sdk.uploads.trigger_action(created.id, action="complete")
            while True:
                await asyncio.sleep(0.5)
                current = (await sdk.uploads.retrieve(created.id)).upload
                if current.status == "imported" and current.entity_id:
                    return current.entity_id
                if current.status == "failed":
                    raise RuntimeError(f"upload failed: {current.error_message}")

        async def download(http: httpx.AsyncClient, job_id: str, asset_id: str) -> None:
            asset = (await sdk.assets.retrieve(asset_id)).asset
            target = destination / job_id / f"{asset_id}.webm"
            target.parent.mkdir(parents=True, exist_ok=True)
            async with http.stream("GET", asset.url) as response:
                response.raise_for_status()
                with target.open("wb") as out:
                    async for chunk in response.aiter_bytes():
                        out.write(chunk)

        async def one(http: httpx.AsyncClient, clip: str) -> None:
            nonlocal outputs
            try:
                async with prepare_gate:
                    asset_id = await upload(http, Path(clip))
                async with job_gate:
                    job = (
                        await sdk.generate.run_model(
                            "model_scenario-video-layers-extractor",
                            body={
                                "video": asset_id,
                                "separationInstruction": "each moving object apart from the background",
                                "maxLayers": args["max_layers"],
                            },
                        )
                    ).job
                    while job.status not in ("success", "failure", "canceled"):
                        await asyncio.sleep(poll)
                        job = (await sdk.jobs.retrieve(job.job_id)).job
                if job.status != "success":
                    raise RuntimeError(f"job {job.job_id} ended {job.status}")
                gate = asyncio.Semaphore(3)

                async def fetch(asset_id: str) -> None:
                    async with gate:
                        await download(http, job.job_id, asset_id)

                ids = list(job.metadata.asset_ids or [])
                await asyncio.gather(*(fetch(i) for i in ids))
                outputs += len(ids)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])

        async with sdk, httpx.AsyncClient(limits=limits, timeout=60) as http:
            with measure() as section:
                await asyncio.gather(*(one(http, clip) for clip in args["clips"]))
        return {
            "succeeded": len(args["clips"]) - len(errors),
            "errors": len(errors),
            "first_errors": errors[:3],
            "outputs": outputs,
            **section.as_dict(),
        }

    try:
        return asyncio.run(main())
    finally:
        shutil.rmtree(destination, ignore_errors=True)


# -- entry point ---------------------------------------------------------------------------------


def main() -> None:
    name, raw_args, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    args = json.loads(raw_args)
    started_cpu = cpu_seconds()
    result = WORKERS[name](args)
    result = dict(result) if isinstance(result, dict) else {"result": result}
    result.setdefault("process_cpu_seconds", round(cpu_seconds() - started_cpu, 3))
    result.setdefault("process_peak_rss_bytes", peak_rss_bytes())
    write_json(out, result)


if __name__ == "__main__":
    main()
