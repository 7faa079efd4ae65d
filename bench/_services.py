"""The servers a benchmark talks to, each in a process of its own so its CPU and memory never count
against the measured process: the Scenario emulator, a Prefect API server, moto's S3 server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench._common import REPO, child_env, free_port, process_tree_cpu_seconds

EMULATOR_KEY = "bench-key"
EMULATOR_SECRET = "bench-secret"


@dataclass
class Service:
    """A server process the bench started (and stops)."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    workdir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the server and its child processes."""
        return process_tree_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        """Stop the process group the bench started (SIGINT, then SIGKILL)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _start(
    name: str, command: list[str], env: dict[str, str], log_dir: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    handle = log.open("wb")
    # A process group of its own: stopping it stops whatever it spawned, and nothing else.
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )
    handle.close()
    return process, log


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{url} exited with {process.returncode}; log {log}:\n{log.read_text()[-3000:]}"
            )
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready after {timeout:g} s; log {log}")


# -- the Scenario emulator ----------------------------------------------------------------------


@dataclass
class Emulator:
    """A running bench emulator (``bench._emulator``)."""

    service: Service

    @property
    def root_url(self) -> str:
        return self.service.url

    @property
    def base_url(self) -> str:
        return f"{self.service.url}/v1"

    def control(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, f"{self.service.url}{path}", timeout=600, **kwargs)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        return dict(self.control("GET", "/_emulator/stats"))

    def reset(self) -> None:
        self.control("POST", "/_emulator/reset")

    def configure(self, **settings: Any) -> dict[str, Any]:
        return dict(self.control("POST", "/_emulator/config", json=settings))

    def register_asset(self, path: Path, mime_type: str = "video/mp4") -> dict[str, Any]:
        """Make a local file an asset of the emulator (bench-only route, see ``bench._emulator``)."""
        return dict(self.control("POST", "/_bench/assets", json={"path": str(path), "mime_type": mime_type}))


@contextlib.contextmanager
def emulator(
    *,
    log_dir: Path,
    job_seconds: float = 2.0,
    fake_model: str = "copy",
    max_workers: int = 2,
    concurrency_ceiling: int | None = None,
) -> Iterator[Emulator]:
    """The emulator in its own process, on a free loopback port, with its own temp storage."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bench-emulator-"))
    command = [
        sys.executable,
        "-m",
        "bench._emulator",
        "--port",
        str(port),
        "--job-seconds",
        str(job_seconds),
        "--fake-model",
        fake_model,
        "--max-workers",
        str(max_workers),
        "--storage-dir",
        str(workdir),
    ]
    if concurrency_ceiling is not None:
        command += ["--concurrency-ceiling", str(concurrency_ceiling)]
    process, log = _start("emulator", command, child_env(), log_dir)
    service = Service("emulator", process, f"http://127.0.0.1:{port}", log, workdir)
    try:
        _wait_ready(process, f"{service.url}/_emulator/config", log, 60)
        yield Emulator(service)
    finally:
        service.stop()


# -- a Prefect API server -----------------------------------------------------------------------


@contextlib.contextmanager
def prefect_server(*, log_dir: Path, database: str = "sqlite") -> Iterator[Service]:
    """``prefect server start`` (no UI) with a private PREFECT_HOME, in its own process.

    ``database``: ``sqlite`` (Prefect's embedded default, in the private home) or ``postgresql``
    (a PostgreSQL server of its own, ``bench/_postgres.py``, stopped after the Prefect server).

    ``service.extra["env"]`` holds the settings a client process needs (API URL, its own home and
    result storage). ``BENCH_PREFECT_API_URL`` reuses a server that is already running instead.
    """
    home = Path(tempfile.mkdtemp(prefix="bench-prefect-home-"))
    client_env = {
        "PREFECT_HOME": str(home / "client"),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "results"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    existing = os.environ.get("BENCH_PREFECT_API_URL")
    if existing:
        client_env["PREFECT_API_URL"] = existing
        service = Service("prefect", subprocess.Popen(["true"]), existing, Path(os.devnull), home)
        service.process.wait()
        service.extra["env"] = client_env
        service.extra["reused"] = True
        try:
            yield service
        finally:
            shutil.rmtree(home, ignore_errors=True)
        return
    with contextlib.ExitStack() as stack:
        settings = {
            "PREFECT_HOME": str(home / "server"),
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        }
        if database == "postgresql":
            from bench._postgres import postgres_database

            settings["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = stack.enter_context(postgres_database())
        elif database != "sqlite":
            raise ValueError(f"database {database!r}: choose sqlite or postgresql")
        service = stack.enter_context(_prefect_server_process(home, client_env, child_env(settings), log_dir))
        service.extra["database"] = database
        if database == "postgresql":
            # Where the PostgreSQL server lives (``?host=<its data directory>``), to read its CPU.
            service.extra["database_url"] = settings["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
        yield service


@contextlib.contextmanager
def _prefect_server_process(
    home: Path, client_env: dict[str, str], env: dict[str, str], log_dir: Path
) -> Iterator[Service]:
    port = free_port()
    prefect = str(Path(sys.executable).with_name("prefect"))
    command = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"]
    process, log = _start("prefect-server", command, env, log_dir)
    service = Service("prefect", process, f"http://127.0.0.1:{port}/api", log, home)
    client_env["PREFECT_API_URL"] = service.url
    service.extra["env"] = client_env
    try:
        started = time.monotonic()
        _wait_ready(process, f"{service.url}/health", log, 240)
        service.extra["startup_seconds"] = round(time.monotonic() - started, 1)
        yield service
    finally:
        service.stop()


# -- moto's S3 server ---------------------------------------------------------------------------


@contextlib.contextmanager
def moto_s3(*, log_dir: Path) -> Iterator[Service]:
    """moto's S3 server on a free loopback port (dummy credentials), in its own process."""
    port = free_port()
    moto = str(Path(sys.executable).with_name("moto_server"))
    env = child_env({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    process, log = _start("moto", [moto, "-H", "127.0.0.1", "-p", str(port)], env, log_dir)
    service = Service("moto", process, f"http://127.0.0.1:{port}", log)
    try:
        _wait_ready(process, f"{service.url}/moto-api/", log, 60)
        yield service
    finally:
        service.stop()


def create_bucket(endpoint: str, name: str) -> None:
    """Create a bucket on moto."""
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=name)
