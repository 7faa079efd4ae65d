"""Fixtures of the Prefect-side tests: ONE Prefect test server per session, moto's S3 server.

``prefect_test_harness`` starts a real Prefect API (SQLite, a subprocess server) in 10 to 60 s, so it
is session-scoped and shared by every test under ``tests/prefect/`` (the flow tests included).
Results are persisted to a private directory so cache hits never leak between sessions, and the
tests can read the result files back.

Other test directories may load this file again (``tests/flows/conftest.py`` does, by path): the
fixtures then share one harness, one results directory and one moto server through a process-wide
registry, instead of starting a second server whose settings would shadow the first.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

# Shared by every copy of this module in the process (see the module docstring).
_SHARED = sys.modules.setdefault(
    "_prefect_scenario_test_session", types.ModuleType("_prefect_scenario_test_session")
)
if not hasattr(_SHARED, "home"):
    _SHARED.home = Path(tempfile.mkdtemp(prefix="prefect-scenario-tests-"))
    _SHARED.harness_active = False
    _SHARED.moto_url = None
_SESSION_HOME: Path = _SHARED.home

# Before Prefect reads its settings: nothing of this session may land in ~/.prefect.
os.environ.setdefault("PREFECT_HOME", str(_SESSION_HOME / "home"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import pytest  # noqa: E402

RESULTS_DIR = _SESSION_HOME / "results"


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    """The session's Prefect test server, with results persisted under :data:`RESULTS_DIR`."""
    from prefect.settings import (
        PREFECT_LOGGING_TO_API_BATCH_INTERVAL,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    if _SHARED.harness_active:  # another copy of this fixture runs the session's server
        yield
        return
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    _SHARED.harness_active = True
    try:
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
    finally:
        _SHARED.harness_active = False


@pytest.fixture(scope="session")
def results_dir() -> Path:
    """Where Prefect persists task results in this session."""
    return RESULTS_DIR


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's S3 server on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    if _SHARED.moto_url is not None:
        yield _SHARED.moto_url
        return
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    _SHARED.moto_url = f"http://127.0.0.1:{port}"
    try:
        yield _SHARED.moto_url
    finally:
        _SHARED.moto_url = None
        server.stop()


@pytest.fixture
def s3_bucket(moto_server: str):  # type: ignore[no-untyped-def]
    """A fresh bucket on moto's server as a prefect-aws ``S3Bucket`` block (dummy keys)."""
    import boto3
    from prefect_aws import AwsCredentials, S3Bucket

    name = f"scenario-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=moto_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=name)
    credentials = AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        aws_client_parameters={"endpoint_url": moto_server},
    )
    return S3Bucket(bucket_name=name, credentials=credentials)
