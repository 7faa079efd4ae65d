"""What the overhead and scale benchmarks share: clips, one measured batch run, request sampling."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench._common import WorkerTimedOut, median, run_worker, summarize_dump
from bench._services import Emulator, Service

SIDES = {"flow": "batch_flow", "sdk": "batch_sdk"}


def make_clips(
    directory: Path, count: int, *, seconds: float, width: int, height: int, fps: int
) -> list[str]:
    """``count`` distinct short clips (different seeds: no two share content, so nothing is deduplicated
    by the upload or submit caches within a run)."""
    from prefect_scenario.video import make_sample_clip

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = directory / f"clip-{index:04d}.mp4"
        make_sample_clip(
            path, seconds=seconds, width=width, height=height, fps=fps, moving_objects=2, seed=index
        )
        paths.append(str(path))
    return paths


class RequestSampler:
    """Samples the emulator's request counter every ``interval`` seconds in a thread."""

    def __init__(self, emulator: Emulator, interval: float = 2.0) -> None:
        self._emulator = emulator
        self._interval = interval
        self._stop = threading.Event()
        self.samples: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                total = sum(self._emulator.stats()["requests"].values())
            except Exception:
                total = None
            if total is not None:
                self.samples.append((time.monotonic(), total))
            self._stop.wait(self._interval)

    def __enter__(self) -> RequestSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def rates(self) -> dict[str, Any]:
        """Requests per second between samples: median and peak over the run."""
        rates = [
            (count - previous) / (now - then)
            for (then, previous), (now, count) in zip(self.samples, self.samples[1:], strict=False)
            if now > then
        ]
        if not rates:
            return {}
        return {
            "requests_per_second_median": round(median(rates) or 0.0, 2),
            "requests_per_second_peak": round(max(rates), 2),
            "sample_interval_seconds": self._interval,
            "series": [round(rate, 1) for rate in rates],
        }


def run_side(
    side: str,
    *,
    emulator: Emulator,
    prefect: Service,
    clips: list[str],
    max_layers: int,
    concurrency: int | None,
    log_dir: Path,
    poll_seconds: float = 1.0,
    sample: bool = False,
    profile: str | None = None,
    timeout: float = 1800,
    what_if: list[str] | None = None,
    dumps_at: tuple[float, ...] = (),
    review: bool = False,
) -> dict[str, Any]:
    """One measured batch by ``side`` ("flow" or "sdk") on a freshly reset emulator.

    The flow side runs without the layers review (``review=False``) unless asked: the SDK script
    does no video work either, and the overhead measured is the orchestration's.

    A run past ``timeout`` is stopped and reported as such (``timed_out``), with what it had done
    by then (jobs created, outputs stored) and a ``py-spy dump`` of its threads.
    """
    emulator.reset()
    destination = Path(tempfile.mkdtemp(prefix=f"bench-{side}-outputs-"))
    args = {
        "base_url": emulator.base_url,
        # A project of its own: no upload or job cached by an earlier run is found again.
        "project_id": f"proj_bench{uuid.uuid4().hex[:12]}",
        "clips": clips,
        "max_layers": max_layers,
        "concurrency": concurrency,
        "destination": str(destination),
        "poll_seconds": poll_seconds,
        "what_if": what_if or [],
        "review": review,
    }
    emulator_cpu = emulator.service.cpu_seconds()
    server_cpu = prefect.cpu_seconds() if prefect.process.poll() is None else None
    sampler = RequestSampler(emulator) if sample else None
    if sampler is not None:
        sampler.__enter__()
    try:
        row = run_worker(
            SIDES[side],
            args,
            env=prefect.extra["env"],
            log_dir=log_dir,
            profile=profile,
            timeout=timeout,
            dumps_at=dumps_at,
        )
    except WorkerTimedOut as stopped:
        stored = sum(1 for p in destination.rglob("*") if p.is_file() and not p.name.startswith("."))
        row = {
            "timed_out": True,
            "wall_seconds": round(stopped.seconds, 1),
            "cpu_seconds": round(stopped.cpu_seconds, 2),
            "peak_rss_bytes": stopped.peak_rss,
            "errors": None,
            "succeeded": None,
            "outputs": stored,
            "log": str(stopped.log),
            "dumps": stopped.dumps,
        }
    finally:
        if sampler is not None:
            sampler.__exit__()
    shutil.rmtree(destination, ignore_errors=True)
    if row.get("dumps"):
        row["dump_summaries"] = [summarize_dump(text) for text in row["dumps"]]
    stats = emulator.stats()
    requests = stats["requests"]
    row["api_requests"] = sum(requests.values())
    row["api_requests_by_route"] = requests
    row["jobs_created"] = stats["jobs_created"]
    row["max_jobs_in_flight"] = stats["max_jobs_in_flight"]
    row["api_requests_per_second"] = (
        round(row["api_requests"] / row["wall_seconds"], 2) if row["wall_seconds"] else None
    )
    polls = requests.get("GET /v1/jobs/{jobId}", 0)
    row["job_polls"] = polls
    row["job_polls_per_job"] = round(polls / stats["jobs_created"], 2) if stats["jobs_created"] else None
    row["emulator_cpu_seconds"] = round(emulator.service.cpu_seconds() - emulator_cpu, 2)
    if server_cpu is not None:
        row["prefect_server_cpu_seconds"] = round(prefect.cpu_seconds() - server_cpu, 2)
    if sampler is not None:
        row.update(sampler.rates())
    return row
