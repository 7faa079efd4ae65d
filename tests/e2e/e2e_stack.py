"""The processes of the end-to-end stack: each started as a user would, in a process group of its own.

A group of its own lets teardown stop a process with everything it spawned (a worker's flow-run
subprocesses) without touching anything this test did not start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from support.emulator import control
from support.prefect_api import PrefectAPI

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POOL = "scenario-process"
CREDENTIALS_BLOCK = "scenario"  # the name prefect.yaml's deployments use
JOB_SECONDS = 2.0


@dataclass
class Process:
    """A process this test started, with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    handle: IO[bytes]

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_seconds: float = 15.0) -> None:
        """SIGTERM to the process group, SIGKILL after the grace period; never anything else."""
        pgid = self.popen.pid  # started with start_new_session: the group is ours alone
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                self.popen.wait(grace_seconds)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                self.popen.wait(10)
        # Children the leader left behind (flow runs of a worker) share its group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        self.handle.close()

    def group_alive(self) -> bool:
        """True while a live (non-zombie) process of this group exists."""
        proc = Path("/proc")
        if not proc.is_dir():
            try:
                os.killpg(self.popen.pid, 0)
            except ProcessLookupError:
                return False
            return True
        for _, raw in _process_files("stat"):
            # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after its ")".
            fields = raw.decode(errors="replace").rsplit(")", 1)[-1].split()
            if len(fields) > 2 and fields[2] == str(self.popen.pid) and fields[0] != "Z":
                return True
        return False


@dataclass
class Stack:
    """The running stack and how to reach it."""

    root: Path
    workdir: Path
    env: dict[str, str]
    api: PrefectAPI
    api_url: str
    emulator_root: str
    emulator_base_url: str
    processes: list[Process] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def start(
        self, name: str, args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> Process:
        """Start a process of the stack (``env``: settings over the stack's own)."""
        log = self.root / f"{name}.log"
        handle = log.open("wb")
        popen = subprocess.Popen(
            args,
            cwd=cwd or self.workdir,
            env={**self.env, **(env or {})},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process = Process(name, popen, log, handle)
        self.processes.append(process)
        return process

    def run(self, args: list[str], timeout: float = 120, cwd: Path | None = None) -> str:
        """Run a command to completion (a CLI step); fail with its output when it fails."""
        done = subprocess.run(
            args,
            cwd=cwd or self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n{output[-4000:]}")
        return output

    def prefect(self, *args: str, timeout: float = 120) -> str:
        return self.run([str(BIN / "prefect"), *args], timeout=timeout)

    def emulator(self, method: str, path: str, body: Any = None) -> Any:
        return control(self.emulator_root, method, path, body)

    def logs(self) -> str:
        return "\n\n".join(f"===== {p.name} ({p.log}) =====\n{p.tail()}" for p in self.processes)


_READ_RESULT = """
import asyncio, json, sys
from uuid import UUID
from prefect.client.orchestration import get_client

async def main():
    async with get_client() as client:
        run = await client.read_flow_run(UUID(sys.argv[1]))
    result = await run.state.aresult(raise_on_failure=False)
    manifest = result.to_manifest() if hasattr(result, "to_manifest") else None
    print(json.dumps({"result": result.model_dump(mode="json"), "manifest": manifest}))

asyncio.run(main())
"""


def read_result(stack: Stack, flow_run_id: str) -> dict[str, Any]:
    """A flow run's persisted result (``result``, as JSON) and its manifest (``manifest``, or None),
    read as a user would: by another process, from the run's state on the server."""
    done = subprocess.run(
        [sys.executable, "-c", _READ_RESULT, flow_run_id],
        env=stack.env,
        cwd=stack.workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def start_layers_batch(stack: Stack, folder: Path, out: Path, **parameters: Any) -> dict[str, Any]:
    """The layers batch deployment run over ``folder`` as the UI's Run button does, 2 layers a clip."""
    deployment = stack.api.deployment("video-to-layers-batch", "on-demand")
    return stack.api.run_like_the_ui(
        deployment, **{"folder": str(folder), "destination": str(out), "max_layers": 2, **parameters}
    )


def batch_table(stack: Stack, flow_run_id: str) -> list[dict[str, Any]]:
    """The rows of a layers batch run's table artifact."""
    artifacts = {a["key"]: a for a in stack.api.artifacts(flow_run_id) if a["key"]}
    table = artifacts["video-to-layers-batch-clips"]["data"]
    return list(json.loads(table) if isinstance(table, str) else table)


def _process_files(name: str) -> Iterator[tuple[int, bytes]]:
    """``(pid, /proc/<pid>/<name>)`` for every process whose file can be read."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            yield int(entry.name), (entry / name).read_bytes()
        except OSError:
            continue


def processes_of_flow_run(flow_run_id: str) -> list[int]:
    """PIDs whose environment says they execute ``flow_run_id`` (a worker's flow-run process)."""
    marker = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    return [pid for pid, environ in _process_files("environ") if marker in environ.split(b"\0")]


def _environment(root: Path, api_url: str, workdir: Path, database_url: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        # Nothing of the surrounding session may leak into the stack: its own home, server, keys.
        if not key.startswith(("PREFECT_", "SCENARIO_"))
    }
    env.update(
        {
            "PREFECT_HOME": str(root / "prefect-home"),
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            # The worker asks for scheduled runs every second instead of every ten.
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            # Heartbeats every 30 s (the least Prefect allows): a dead worker's runs are found
            # by the zombie automation (automations/crash-zombie-flow-runs.yaml) within a minute.
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
            "PREFECT_CLI_PROMPT": "false",
            # Stands in for `pip install prefect-scenario` in the worker's environment: the
            # deployments' entrypoints are module paths of the installed package.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
            # `{{ $PWD }}` in prefect.yaml's pull step: flow runs start in the directory of the deploy.
            "PWD": str(workdir),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def start_watcher(stack: Stack, name: str = "watcher", interval_seconds: float = 1.0) -> Process:
    """``prefect-scenario watch`` on the stack's credentials block, sweeping every ``interval_seconds``."""
    return stack.start(
        name,
        [
            sys.executable,
            "-m",
            "prefect_scenario.cli",
            "watch",
            "--credentials",
            CREDENTIALS_BLOCK,
            "--interval-seconds",
            f"{interval_seconds:g}",
        ],
    )
