"""The emulator's state: records, counters, faults, clock, storage and worker threads.

Request handlers (on the event loop) and worker threads (fake models, upload validation) both
change it, so every change goes through one lock. Nothing here is global: each
:class:`EmulatorState` is a separate emulator, which is what lets tests run several side by side.
"""

from __future__ import annotations

import random
import secrets
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from prefect_scenario.emulator.service import lifecycle
from prefect_scenario.emulator.service.clock import EmulatorClock, iso_utc
from prefect_scenario.emulator.service.config import EmulatorConfig
from prefect_scenario.emulator.service.faults import FaultRule
from prefect_scenario.emulator.service.records import AssetRecord, JobRecord, UploadRecord, WorkResult
from prefect_scenario.emulator.service.webhooks.store import WebhookStore

# Where files go under storage_dir: assembled uploads and image assets, upload parts, model outputs.
STORAGE_SUBDIRS = ("assets", "uploads", "work")


class CeilingReachedError(Exception):
    """The team's ceiling of parallel custom jobs is reached."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"ceiling of {limit} parallel custom jobs reached")
        self.limit = limit


class EmulatorState:
    """Everything one emulator knows.

    Args:
        config: the settings (defaults: 2 s jobs, 60 s signed URLs, no ceiling, short pages).
        storage_dir: where uploaded and generated files go; a temporary directory (removed by
            :meth:`close`) when None.
        clock: the emulator clock (real time plus an offset when None).
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        storage_dir: Path | str | None = None,
        clock: EmulatorClock | None = None,
    ) -> None:
        self.config = config or EmulatorConfig()
        self.clock = clock or EmulatorClock()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if storage_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="scenario-emulator-")
            storage_dir = self._tmp.name
        self.storage_dir = Path(storage_dir)
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        # Re-entrant: a state method holding the lock may call another one that takes it too.
        self.lock = threading.RLock()
        self.signing_key = secrets.token_bytes(32)
        self.jobs: dict[str, JobRecord] = {}
        self.assets: dict[str, AssetRecord] = {}
        self.uploads: dict[str, UploadRecord] = {}
        self.faults: list[FaultRule] = []
        self.rng = random.Random(self.config.seed)
        self._counters: Counter[str] = Counter()
        self._requests: Counter[str] = Counter()
        self._faults_fired: Counter[str] = Counter()
        # The client (host, port) of every API request: each is one TCP connection of a client.
        self._connections: set[tuple[str, int]] = set()
        self._max_jobs_in_flight = 0
        self._job_seq = 0
        self._work_pool: ThreadPoolExecutor | None = None
        self._io_pool: ThreadPoolExecutor | None = None
        self._closed = False
        # Webhook endpoints and deliveries; their sending thread starts with the first endpoint.
        self.webhooks = WebhookStore(self)

    # -- storage ---------------------------------------------------------------------------

    def directory(self, name: str) -> Path:
        """A subdirectory of the storage dir (one of :data:`STORAGE_SUBDIRS`), created on demand."""
        if name not in STORAGE_SUBDIRS:
            raise ValueError(f"unknown storage directory {name!r}")
        path = self.storage_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- worker threads --------------------------------------------------------------------

    def work_pool(self) -> ThreadPoolExecutor:
        """The bounded pool running the fake models (``config.max_workers`` threads)."""
        with self.lock:
            if self._closed:
                raise RuntimeError("this emulator state is closed")
            if self._work_pool is None:
                self._work_pool = ThreadPoolExecutor(
                    max_workers=self.config.max_workers, thread_name_prefix="emulator-model"
                )
            return self._work_pool

    def io_pool(self) -> ThreadPoolExecutor:
        """A small pool for upload validation, apart from the models so a busy model never stalls it."""
        with self.lock:
            if self._closed:
                raise RuntimeError("this emulator state is closed")
            if self._io_pool is None:
                self._io_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="emulator-upload")
            return self._io_pool

    def close(self) -> None:
        """Stop the worker threads (without waiting for running work) and remove a temp storage dir."""
        with self.lock:
            self._closed = True
            pools = [pool for pool in (self._work_pool, self._io_pool) if pool is not None]
            self._work_pool = self._io_pool = None
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        # Outside the lock: this joins the webhook thread, which takes the lock on every tick.
        self.webhooks.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmulatorState:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- settings, reset, counters -----------------------------------------------------------

    def configure(self, **changes: Any) -> EmulatorConfig:
        """Apply a partial settings update and return the new settings.

        Raises:
            ValueError: an unknown or fixed setting, or a value out of range.
        """
        with self.lock:
            new = self.config.updated(changes)
            if new.seed != self.config.seed:
                self.rng = random.Random(new.seed)
            if new.max_workers != self.config.max_workers and self._work_pool is not None:
                # Running work finishes on the old pool; new jobs use a pool of the new size.
                self._work_pool.shutdown(wait=False)
                self._work_pool = None
            self.config = new
            return new

    def reset(self) -> None:
        """Forget jobs, assets, uploads, webhooks, counters and faults; rewind the clock. Settings stay."""
        with self.lock:
            for job in self.jobs.values():
                if job.future is not None:
                    job.future.cancel()
            self.jobs.clear()
            self.assets.clear()
            self.uploads.clear()
            self.faults.clear()
            self._counters.clear()
            self._requests.clear()
            self._faults_fired.clear()
            self._connections.clear()
            self._max_jobs_in_flight = 0
            self.webhooks.reset()
            self.rng = random.Random(self.config.seed)
            self.clock.reset()
            # Only the emulator's own subdirectories: storage_dir may be a directory the user shares.
            for name in STORAGE_SUBDIRS:
                shutil.rmtree(self.storage_dir / name, ignore_errors=True)

    def count(self, name: str, amount: int = 1) -> None:
        """Add to a named counter (``jobs_created``, ``uploads_created``, ``dry_runs``, ...)."""
        with self.lock:
            self._counters[name] += amount

    def count_request(self, route_key: str, client: tuple[str, int] | None = None) -> None:
        """Count one request of ``"METHOD /template"``, and the connection ``client`` sent it on."""
        with self.lock:
            self._requests[route_key] += 1
            if client is not None:
                self._connections.add(client)

    def stats(self) -> dict[str, Any]:
        """The counters as served by ``GET /_emulator/stats``."""
        with self.lock:
            now = self.clock.now()
            in_flight = self._jobs_in_flight(now)
            return {
                "jobs_created": self._counters["jobs_created"],
                "uploads_created": self._counters["uploads_created"],
                "assets_created": self._counters["assets_created"],
                "dry_runs": self._counters["dry_runs"],
                "jobs_failed_by_faults": self._counters["jobs_failed_by_faults"],
                # Distinct client connections the API was used over: how well clients reuse them.
                "connections": len(self._connections),
                "requests": dict(sorted(self._requests.items())),
                "faults_fired": dict(sorted(self._faults_fired.items())),
                "jobs_in_flight": in_flight,
                "max_jobs_in_flight": self._max_jobs_in_flight,
                "jobs": len(self.jobs),
                "assets": len(self.assets),
                "uploads": len(self.uploads),
                "clock": {"now": iso_utc(now), "offset_seconds": self.clock.offset_seconds},
                "webhooks": self.webhooks.stats(),
            }

    # -- faults ----------------------------------------------------------------------------

    def add_faults(self, rules: Iterable[FaultRule]) -> list[FaultRule]:
        """Append fault rules; returns every rule still pending."""
        with self.lock:
            self.faults.extend(rule.model_copy() for rule in rules)
            return [rule.model_copy() for rule in self.faults]

    def clear_faults(self) -> None:
        """Drop every pending fault rule."""
        with self.lock:
            self.faults.clear()

    def list_faults(self) -> list[FaultRule]:
        """The pending fault rules, with their remaining counts."""
        with self.lock:
            return [rule.model_copy() for rule in self.faults]

    def take_fault(self, route_key: str, kinds: Iterable[str]) -> FaultRule | None:
        """Consume one firing of the first rule of one of ``kinds`` that matches ``route_key``."""
        wanted = frozenset(kinds)
        with self.lock:
            for index, rule in enumerate(self.faults):
                if rule.kind in wanted and rule.matches(route_key):
                    if rule.probability < 1 and self.rng.random() >= rule.probability:
                        continue  # not this request: the rule waits for another
                    rule.count -= 1
                    if rule.count <= 0:
                        del self.faults[index]
                    self._faults_fired[rule.kind] += 1
                    return rule.model_copy()
            return None

    # -- jobs ------------------------------------------------------------------------------

    def refresh(self, job: JobRecord) -> JobRecord:
        """Bring ``job`` up to the emulator clock and return it."""
        with self.lock:
            lifecycle.advance(job, self.clock.now())
            return job

    def refresh_all(self) -> float:
        """Bring every job up to the clock; returns the time used."""
        with self.lock:
            now = self.clock.now()
            for job in self.jobs.values():
                lifecycle.advance(job, now)
            return now

    def add_job(self, job: JobRecord) -> JobRecord:
        """Record a job (numbered in creation order); custom jobs go through :meth:`admit_custom_job`."""
        with self.lock:
            self._job_seq += 1
            job.seq = self._job_seq
            self.jobs[job.id] = job
            return job

    def _jobs_in_flight(self, now: float) -> int:
        count = 0
        for job in self.jobs.values():
            lifecycle.advance(job, now)
            if job.job_type == "custom" and not job.is_terminal:
                count += 1
        return count

    def admit_custom_job(self, job: JobRecord) -> None:
        """Record a new custom job, unless the team's ceiling of parallel custom jobs is reached.

        Raises:
            CeilingReachedError: ``config.concurrency_ceiling`` non-terminal custom jobs exist.
        """
        with self.lock:
            in_flight = self._jobs_in_flight(self.clock.now())
            ceiling = self.config.concurrency_ceiling
            if ceiling is not None and in_flight >= ceiling:
                raise CeilingReachedError(ceiling)
            self.add_job(job)
            self._counters["jobs_created"] += 1
            # Jobs only leave the in-flight set as time passes, so the peak is always reached
            # right when one is admitted: tracking it here is exact.
            self._max_jobs_in_flight = max(self._max_jobs_in_flight, in_flight + 1)
            self.webhooks.job_admitted(job)

    def finish_work(self, job_id: str, result: WorkResult) -> bool:
        """Record what a job's fake model produced; False when the job is gone or was canceled."""
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or job.is_terminal:
                return False
            job.work_done_at = self.clock.now()
            job.result = result
            job.future = None
            return True

    # -- assets ----------------------------------------------------------------------------

    def add_asset(self, asset: AssetRecord) -> AssetRecord:
        """Store an asset record."""
        with self.lock:
            self.assets[asset.id] = asset
            self._counters["assets_created"] += 1
            return asset
