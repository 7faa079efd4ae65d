"""A run killed while it held a concurrency slot must not block every batch on the server for minutes.

Against a real ``prefect server start`` (SQLite) of the test's own: Prefect's repossessor, which
frees expired leases, does not run in the embedded test server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

# At import, not in the test: importing it sets up Prefect's logging, which replaces the root
# logger's handlers; done during the test, it would drop pytest's capture handler and caplog would
# see nothing (whenever no module imported before this one had set it up already).
from prefect_scenario.concurrency import SLOT_LEASE_SECONDS, job_slot
from support.prefect_api import drain_services

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

pytestmark = pytest.mark.slow

HOLDER = """
import asyncio, sys
from prefect_scenario.concurrency import job_slot

async def main():
    async with job_slot(sys.argv[1]):
        print("held", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from bench._services import prefect_server

    with prefect_server(log_dir=tmp_path_factory.mktemp("prefect-server-logs")) as service:
        yield str(service.url)


@pytest.fixture
async def api_url(server: str) -> AsyncIterator[str]:
    """``PREFECT_API_URL`` at the module's own server during a test, and nothing left bound to it after.

    Prefect's process-wide services (its events worker above all: ``job_slot`` emits concurrency
    events) stay bound to the API URL of the moment they started. Left running, the events worker
    would send every later test's events to this server, stopped once the module ends, and the flow
    tests that read their events back would wait for them in vain. So they are drained here, while
    the server still answers; their next use starts them afresh on the settings of then.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: server}):
        try:
            yield server
        finally:
            await drain_services()


async def test_a_killed_runs_slot_comes_back_within_a_lease_and_the_wait_is_logged(
    api_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    name = f"lease-test-{uuid.uuid4().hex[:10]}"
    async with get_client() as client:
        await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    env = {**os.environ, "PREFECT_API_URL": api_url, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(  # noqa: ASYNC220 (one child; its output is read off the loop)
        [sys.executable, "-c", HOLDER, name],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), timeout=120)
        assert line == "held\n"
        os.killpg(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait, 30)
        async with get_client() as client:
            assert (await client.read_global_concurrency_limit_by_name(name)).active_slots == 1
        caplog.set_level(logging.INFO, logger="prefect_scenario.concurrency")
        started = time.monotonic()
        async with job_slot(name):
            waited = time.monotonic() - started
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    # The server's repossessor (every 15 s) frees an expired lease: about a minute, not five (with
    # the 300 s leases of before, this wait lasted over 300 s).
    assert waited < 120, waited
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"limit {name!r} (1 of 1 slot(s) taken)" in m for m in messages), messages
    print(f"a killed run's slot was acquired again after {waited:.1f} s (lease {SLOT_LEASE_SECONDS:.0f} s)")
