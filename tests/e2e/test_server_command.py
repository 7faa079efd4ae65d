"""``prefect-scenario server start``: PostgreSQL and a Prefect server on it, run as a user runs them.

Each test runs the command as a subprocess on a free port, with a data directory of its own, and
checks what a user relies on: the API answers, the runs land in PostgreSQL (read back with SQL over
its unix socket), Ctrl-C or ``server stop`` leaves no process behind (by PID and by process tree),
a restart after a SIGKILL recovers and still has the runs, and a taken port fails at once with the
option to change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
import pytest

from prefect_scenario.cli_server import stop_process_group
from prefect_scenario.postgres import pid_alive, stop_postmaster
from support.net import free_port
from support.prefect_api import PrefectAPI, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="reads the process tree from /proc"),
]

REPO = Path(__file__).resolve().parents[2]
READY = "Prefect server on PostgreSQL is ready."
COMMAND = [sys.executable, "-m", "prefect_scenario.cli", "server"]


@dataclass
class Server:
    """One ``server start`` this test launched, and every process it was seen to run."""

    popen: subprocess.Popen[bytes]
    data_dir: Path
    port: int
    log: Path
    handle: IO[bytes]
    seen: set[int] = field(default_factory=set)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.data_dir / "server.json").read_text()))

    def wait_ready(self, timeout: float = 300) -> dict[str, Any]:
        """Until the command says it is ready and the API answers; then record its processes."""

        def ready() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"server start exited {self.popen.returncode}:\n{self.output()}")
            if READY not in self.output():
                return False
            try:
                return httpx.get(f"{self.api_url}/health", timeout=2).json() is True
            except httpx.HTTPError:
                return False

        wait_for("prefect-scenario server start to be ready", ready, timeout)
        state = self.state()
        self.seen |= {self.popen.pid, state["prefect_pid"], state["postmaster_pid"]}
        # The tree: what the command started (the Prefect server runs in a session of its own, a
        # child still), and what the postmaster forked (backends, checkpointer, ...).
        self.seen |= _descendants(self.popen.pid) | _descendants(state["postmaster_pid"])
        return state


class Launcher:
    """Runs the command as a user would, with an environment of its own (nothing of the session's)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[Server] = []
        self.env = {
            key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "SCENARIO_"))
        }
        self.env.update(
            {
                "PREFECT_HOME": str(root / "prefect-home"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "DO_NOT_TRACK": "1",
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
            }
        )

    def start(self, data_dir: Path, port: int) -> Server:
        """``server start`` in the background, its output in a log file."""
        log = self.root / f"server-{len(self.started)}.log"
        handle = log.open("wb")
        popen = subprocess.Popen(
            [*COMMAND, "start", "--data-dir", str(data_dir), "--port", str(port), "--no-ui"],
            cwd=self.root,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            # A process group of its own, as a shell gives a foreground job: killpg(SIGINT) is Ctrl-C.
            start_new_session=True,
        )
        server = Server(popen, data_dir, port, log, handle)
        self.started.append(server)
        return server

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``server ARGS`` to completion."""
        return subprocess.run(
            [*COMMAND, *args], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def stop_all(self) -> None:
        """Whatever a failed test left: the command's group, its Prefect server, its PostgreSQL."""
        for server in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.popen.pid, signal.SIGKILL)
            server.popen.wait(10)
            server.handle.close()
            with contextlib.suppress(OSError, ValueError, KeyError):
                state = server.state()
                stop_process_group(state["prefect_pid"])
                stop_postmaster(state["postmaster_pid"])


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path)
    try:
        yield launcher
    finally:
        launcher.stop_all()


def _descendants(root: int) -> set[int]:
    """Every live process below ``root`` in the process tree (by parent PID)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
                if fields[0] != "Z":
                    parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _using(folder: Path) -> set[int]:
    """Live processes whose working directory or command line is inside ``folder`` (PostgreSQL's are)."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cwd = os.readlink(entry / "cwd")
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
            if (cwd == str(folder) or cwd.startswith(f"{folder}/") or str(folder) in command) and pid_alive(
                int(entry.name)
            ):
                found.add(int(entry.name))
    return found


def _assert_nothing_left(*servers: Server) -> None:
    for server in servers:
        alive = sorted(pid for pid in server.seen if pid_alive(pid))
        assert not alive, f"processes left running: {alive}\n{server.output()}"
        assert not _descendants(server.popen.pid)
        assert not _using(server.data_dir), f"processes still use {server.data_dir}"


def _create_flow_run(api_url: str, name: str) -> str:
    api = PrefectAPI(api_url)
    try:
        flow = api.post("/flows/", {"name": "server-start-check"})
        run = api.post("/flow_runs/", {"flow_id": flow["id"], "name": name})
    finally:
        api.close()
    return str(run["id"])


def _flow_run_in_postgres(database_url: str, flow_run_id: str) -> tuple[str | None, str]:
    """The flow run's name as PostgreSQL holds it, and the server's version, over the unix socket."""
    socket_dir = database_url.rpartition("host=")[2]

    async def query() -> tuple[str | None, str]:
        connection = await asyncpg.connect(host=socket_dir, user="postgres", database="prefect")
        try:
            name = await connection.fetchval("SELECT name FROM flow_run WHERE id = $1::uuid", flow_run_id)
            version = await connection.fetchval("SHOW server_version")
        finally:
            await connection.close()
        return name, str(version)

    return asyncio.run(query())


def test_start_keeps_runs_in_postgresql_and_ctrl_c_stops_everything(
    launcher: Launcher, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = launcher.start(data_dir, free_port())
    started = time.monotonic()
    state = server.wait_ready()
    ready_seconds = time.monotonic() - started
    output = server.output()
    assert f"export PREFECT_API_URL={server.api_url}" in output
    assert state["database_url"].startswith("postgresql+asyncpg://postgres@/prefect?host=")

    flow_run_id = _create_flow_run(server.api_url, "stored-in-postgres")
    name, version = _flow_run_in_postgres(state["database_url"], flow_run_id)
    assert name == "stored-in-postgres", "the API's flow run is not in the server's PostgreSQL"

    # A second start on the same data directory is refused, and says what to do.
    second = launcher.run("start", "--data-dir", str(data_dir), "--port", str(free_port()), "--no-ui")
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"already running on {data_dir}" in second.stderr
    assert "--data-dir" in second.stderr

    stopping = time.monotonic()
    os.killpg(server.popen.pid, signal.SIGINT)  # Ctrl-C in the terminal
    assert server.popen.wait(90) == 128 + signal.SIGINT
    stop_seconds = time.monotonic() - stopping
    assert "Stopped: neither the Prefect server nor PostgreSQL is running." in server.output()
    _assert_nothing_left(server)
    assert not (data_dir / "server.json").exists()
    assert (data_dir / "postgres" / "PG_VERSION").exists(), "the data directory must be kept"
    print(
        f"server start on PostgreSQL {version}: ready in {ready_seconds:.1f} s, stopped in "
        f"{stop_seconds:.1f} s, {len(server.seen)} processes seen, none left"
    )


def test_a_start_after_a_sigkill_recovers_and_keeps_the_runs(launcher: Launcher, tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    first = launcher.start(data_dir, port)
    first_state = first.wait_ready()
    flow_run_id = _create_flow_run(first.api_url, "before-the-kill")

    first.popen.send_signal(signal.SIGKILL)  # the starter only, as `kill -9 <pid>` does
    first.popen.wait(10)
    orphans = {first_state["prefect_pid"], first_state["postmaster_pid"]}
    assert all(pid_alive(pid) for pid in orphans), "the scenario needs orphans to recover from"

    second = launcher.start(data_dir, port)  # the same port: the orphaned server still holds it
    second_state = second.wait_ready()
    output = second.output()
    assert f"Stopping the Prefect server (pid {first_state['prefect_pid']})" in output
    assert f"Stopped the PostgreSQL (pid {first_state['postmaster_pid']})" in output
    assert not any(pid_alive(pid) for pid in orphans)
    run = httpx.get(f"{second.api_url}/flow_runs/{flow_run_id}", timeout=10).json()
    assert run["name"] == "before-the-kill", "the restarted server lost the earlier run"
    assert _flow_run_in_postgres(second_state["database_url"], flow_run_id)[0] == "before-the-kill"

    stopped = launcher.run("stop", "--data-dir", str(data_dir))
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert second.popen.wait(30) == 128 + signal.SIGTERM
    _assert_nothing_left(first, second)


def test_a_taken_port_fails_at_once_and_names_the_option(launcher: Launcher, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        server = launcher.start(tmp_path / "data", port)
        code = server.popen.wait(60)
    output = server.output()
    assert code == 2, output
    assert f"error: port {port} on 127.0.0.1 is already in use" in output
    assert "--port" in output
    assert time.monotonic() - started < 30
    assert not (tmp_path / "data" / "postgres").exists(), "PostgreSQL was started for nothing"


def test_without_the_postgres_extra_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import importlib.util

    from prefect_scenario import cli_server

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "pgserver" else real(name, *args)
    )
    code = cli_server.start(data_dir=tmp_path / "data", port=free_port(), ui=False)
    assert code == 2
    assert "pip install 'prefect-scenario[postgres]'" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_a_stale_postmaster_pid_is_cleared_and_an_unrelated_process_left_alone(tmp_path: Path) -> None:
    from prefect_scenario.postgres import clear_leftovers

    pgdata = tmp_path / "postgres"
    pgdata.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    for stale in (gone.pid, os.getpid()):  # a PID now free, and one reused by a process not postgres
        (pgdata / "postmaster.pid").write_text(f"{stale}\n{pgdata}\n0\n5432\n{pgdata}\n\n0 0\nready\n")
        (pgdata / ".handle_pids.json").write_text(json.dumps([gone.pid]))
        assert clear_leftovers(pgdata) is None
        assert not (pgdata / "postmaster.pid").exists()
        assert not (pgdata / ".handle_pids.json").exists()
    assert pid_alive(os.getpid())
