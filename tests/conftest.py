"""Shared fixtures: the emulator (in-process over ASGI, and live on loopback) and sample media.

``PREFECT_HOME`` is pointed at a temporary directory here, at import time, before anything imports
Prefect: no test session may read or write the developer's ``~/.prefect``.
"""

from __future__ import annotations

import os
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

os.environ["PREFECT_SCENARIO_TEST_DIR"] = tempfile.mkdtemp(prefix="prefect-scenario-tests-")
os.environ["PREFECT_HOME"] = os.path.join(os.environ["PREFECT_SCENARIO_TEST_DIR"], "home")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
# A temporary Prefect server migrates a fresh database before it answers; on CI's two busy cores that
# took longer than Prefect's 20 s default (tests/examples/test_examples.py failed on it). Every
# subprocess the suite starts inherits this.
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from prefect_scenario import video
from prefect_scenario.emulator import (
    EmulatorState,
    RunningEmulator,
    create_app,
    serve_in_thread,
)
from support.emulator import ASGI_BASE_URL, EMULATOR_KEY, EMULATOR_SECRET, fast_config
from support.net import free_port
from support.s3 import ACCESS_KEY, REGION, SECRET_KEY, s3_client

# Fixtures of sample media for tests/video and tests/emulator (one module each).
pytest_plugins = ["support.sample_media"]

_SESSION_DIR = Path(os.environ["PREFECT_SCENARIO_TEST_DIR"])


# The end-to-end modules that use the shared stack, in two groups for pytest-xdist (``make test`` runs
# two workers): each group runs on one worker, with one stack (PostgreSQL, a Prefect server, workers,
# the emulator) per worker that runs any. The fan-out and shared-results modules replace the stack's
# worker with workers of their own and last the longest: a group of their own, so the two halves of
# the end-to-end suite run side by side. Every other test (the other e2e modules start what they need
# themselves) goes to whichever worker is free.
_E2E_GROUPS = {
    "tests/e2e/test_fan_out.py": "e2e-workers",
    "tests/e2e/test_shared_results.py": "e2e-workers",
    "tests/e2e/test_deployments.py": "e2e-stack",
    "tests/e2e/test_suspend.py": "e2e-stack",
    "tests/e2e/test_webhooks_e2e.py": "e2e-stack",
}


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` with the groups of ``_E2E_GROUPS``, read from the test's module path.

    Not ``xdist_group`` marks: pytest-xdist 3.8 groups by suffixing ``item._nodeid``, which pytest 9
    no longer reads (a node id is ``item._id`` there), so marked tests were spread over both workers
    and each started a stack of its own.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class E2EGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _E2E_GROUPS.get(nodeid.split("::", 1)[0], nodeid)

    return E2EGroupScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """An e2e module that uses the shared stack must be in a group, or its tests would each start one."""
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        uses_stack = "stack" in getattr(item, "fixturenames", ())
        if "e2e" in item.path.parts and module not in _E2E_GROUPS and uses_stack:
            raise pytest.UsageError(f"{module} uses the e2e stack: add it to _E2E_GROUPS in {__file__}")


@pytest.fixture
def emulator_state(tmp_path: Path) -> Iterator[EmulatorState]:
    """A fresh emulator state with its files under ``tmp_path`` and 0.3 s jobs."""
    with EmulatorState(fast_config(), storage_dir=tmp_path / "emulator") as state:
        yield state


@pytest.fixture
def emulator_app(emulator_state: EmulatorState) -> FastAPI:
    """The emulator app over :func:`emulator_state`."""
    return create_app(emulator_state)


@pytest.fixture
async def asgi_client(emulator_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client calling the emulator in-process (ASGI), with Basic auth, based at ``/v1``."""
    transport = httpx.ASGITransport(app=emulator_app)
    async with httpx.AsyncClient(
        transport=transport, base_url=ASGI_BASE_URL, auth=(EMULATOR_KEY, EMULATOR_SECRET)
    ) as client:
        yield client


@pytest.fixture(scope="session")
def _live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    state = EmulatorState(fast_config(), storage_dir=tmp_path_factory.mktemp("live-emulator"))
    with state, serve_in_thread(state) as running:
        yield running


@pytest.fixture
def live_emulator(_live_server: RunningEmulator) -> Iterator[RunningEmulator]:
    """The session's emulator on a real loopback port, reset and back to test settings.

    ``live_emulator.base_url`` is ``http://127.0.0.1:PORT/v1``; ``.root_url`` has the control
    plane at ``/_emulator``; ``.state`` is the live state (drive it directly or over HTTP).
    """
    state = _live_server.state
    state.reset()
    state.configure(**fast_config().model_dump(exclude={"api_key", "api_secret", "bearer_token"}))
    yield _live_server
    state.reset()


@pytest.fixture(scope="session")
def sample_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4 s, 320x240, 24 fps H.264 clip with two moving objects (made once per session)."""
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    video.make_sample_clip(path, seconds=4.0, width=320, height=240, fps=24, moving_objects=2)
    return path


@pytest.fixture(scope="session")
def sample_clip_bytes(sample_clip: Path) -> bytes:
    """The bytes of :func:`sample_clip` (read once, so async tests never block on the disk)."""
    return sample_clip.read_bytes()


@pytest.fixture(scope="session")
def sample_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small solid PNG, for keyframes and reference images."""
    path = tmp_path_factory.mktemp("media-image") / "reference.png"
    video.make_sample_image(path, color=(200, 40, 40))
    return path


@pytest.fixture(scope="session")
def sample_image_bytes(sample_image: Path) -> bytes:
    """The bytes of :func:`sample_image`."""
    return sample_image.read_bytes()


# ---------------------------------------------------------------------------------------------
# Prefect: ONE test server per session, shared by every test that asks for it (tests/flows through
# an autouse wrapper in its conftest, the modules of other directories that need it through
# ``pytestmark = pytest.mark.usefixtures("prefect_harness")``; the emulator, client and video suites
# never start it).
# ---------------------------------------------------------------------------------------------

RESULTS_DIR = _SESSION_DIR / "results"


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """The session's Prefect test server, with results persisted under :data:`RESULTS_DIR`.

    ``prefect_test_harness`` starts a real Prefect API (SQLite, a subprocess server) in 10 to 60 s
    on this machine, so it is session-scoped. Results go to a private directory so cache hits never
    leak between sessions and tests can read the result files back.
    """
    from prefect.settings import (
        PREFECT_LOGGING_TO_API_BATCH_INTERVAL,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with (
        temporary_settings(
            updates={
                PREFECT_RESULTS_LOCAL_STORAGE_PATH: str(RESULTS_DIR),
                PREFECT_LOGGING_TO_API_BATCH_INTERVAL: 0.3,
            }
        ),
        prefect_test_harness(server_startup_timeout=120),
    ):
        yield


@pytest.fixture(scope="session")
def results_dir() -> Path:
    """Where Prefect persists task results in this session."""
    return RESULTS_DIR


class _RequestLog:
    """Every request moto's server answered, as (method, path): the bucket side of a test's reads."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def wrap(self, app: Any) -> Any:
        def logged(environ: dict[str, Any], start_response: Any) -> Any:
            with self._lock:
                self.requests.append((str(environ.get("REQUEST_METHOD")), str(environ.get("PATH_INFO"))))
            return app(environ, start_response)

        return logged


MOTO_LOG = _RequestLog()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port, its requests logged; yields its endpoint URL."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class LoggedMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = MOTO_LOG.wrap(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(
                self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    port = free_port()
    server = LoggedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto_requests(moto_server: str) -> list[tuple[str, str]]:
    """The (method, path) of every request moto's server answers from now on (clear it to restart)."""
    MOTO_LOG.requests.clear()
    return MOTO_LOG.requests


@pytest.fixture
def s3_bucket(moto_server: str):  # type: ignore[no-untyped-def]
    """A fresh bucket on moto's server as a prefect-aws ``S3Bucket`` block (dummy keys)."""
    from prefect_aws import AwsCredentials, S3Bucket

    name = f"scenario-{uuid.uuid4().hex[:12]}"
    s3_client(moto_server).create_bucket(Bucket=name)
    credentials = AwsCredentials(
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        aws_client_parameters={"endpoint_url": moto_server},
    )
    return S3Bucket(bucket_name=name, credentials=credentials)
