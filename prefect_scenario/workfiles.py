"""Work files that outlive a killed process, named so the next run can tell litter from live work.

A SIGKILL runs no ``finally``: partial downloads (``.part`` files beside their target) and private
temporary directories stay behind. Each carries the host and pid of its writer, so a later run
removes those of dead processes on this host, and never the files of a live one.
Imports nothing of Prefect or httpx: the client and the Prefect layer both use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

logger = logging.getLogger("prefect_scenario.workfiles")

# Work files (partial downloads, private temporary directories) carry the host and pid of the
# process writing them: a SIGKILL runs no ``finally``, so the next run must be able to tell the
# litter of a dead process from the files of a live one, and removes only the former.
SCRATCH_PREFIX = "prefect-scenario-"
# A partial file untouched this long is litter even when its pid looks alive (pids are reused) or
# it came from another host sharing the folder: a live transfer writes all the time, and its
# stalls are bounded by the retry policy in minutes.
STALE_PART_SECONDS = 6 * 3600
_SCRATCH_DIR = re.compile(re.escape(SCRATCH_PREFIX) + r"(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[a-z0-9_]+")
# Temporary roots already swept by this process: once is enough, later litter is a later run's.
_swept_temp_roots: set[str] = set()


@cache
def _host_tag() -> str:
    """8 hex digits naming this host, so a pid is only ever judged on the host it belongs to."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _owner_tag() -> str:
    # The pid is read each time: a forked child is another writer.
    return f"{_host_tag()}-{os.getpid()}"


def _writer_gone(host: str | None, pid: str | None) -> bool:
    """True only when the tagged writer is known dead: a process of this host that no longer exists."""
    if host != _host_tag() or pid is None or int(pid) <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # EPERM: it exists, as another user; or no pid we could have made
        return False
    return False


def _sweep(
    folder: Path, pick: Callable[[os.DirEntry[str]], bool], remove: Callable[[str], None]
) -> list[Path]:
    """Remove the entries of ``folder`` that ``pick`` chooses; best effort, as housekeeping must be.

    An entry that vanishes meanwhile (another process swept it) is skipped; a folder that cannot be
    read sweeps nothing.
    """
    removed: list[Path] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    if pick(entry):
                        remove(entry.path)
                        removed.append(Path(entry.path))
    except OSError:
        return removed
    return removed


def sweep_stale_parts(target: Path) -> list[Path]:
    """Remove the partial files of ``target`` that no live process is writing.

    A partial file is stale when its writer (named in it) was a process of this host that no
    longer exists, or, whoever wrote it, when it has not changed for :data:`STALE_PART_SECONDS`.
    Partial files of other targets, and anything else in the folder, are left alone.

    Returns:
        The files removed.
    """
    name = re.compile(
        rf"\.{re.escape(target.name)}\.(?:(?P<host>[0-9a-f]{{8}})-(?P<pid>\d+)\.)?[a-z0-9_]+\.part"
    )
    now = time.time()

    def stale(entry: os.DirEntry[str]) -> bool:
        match = name.fullmatch(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            return False
        fresh = now - entry.stat(follow_symlinks=False).st_mtime < STALE_PART_SECONDS
        return not fresh or _writer_gone(match["host"], match["pid"])

    removed = _sweep(target.parent, stale, os.unlink)
    if removed:
        logger.info("removed %d stale partial file(s) of %s left by gone processes", len(removed), target)
    return removed


def part_path_beside(target: Path) -> Path:
    """A fresh hidden partial-file name beside ``target`` (so a rename onto it is atomic).

    The name, ``.<target name>.<host>-<pid>.<random>.part``, says which process writes it; stale
    partial files of ``target`` are removed first (:func:`sweep_stale_parts`), so a download
    killed mid-transfer leaves nothing behind once it is run again.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_parts(target)
    return target.with_name(f".{target.name}.{_owner_tag()}.{secrets.token_hex(4)}.part")


def sweep_dead_scratch_dirs(root: Path | None = None) -> list[Path]:
    """Remove the :func:`scratch_dir` directories in ``root`` whose process is gone.

    Only directories named by :func:`scratch_dir` for a dead process of this host are removed:
    never those of a live process, of another host sharing the folder, or anything else named
    ``prefect-scenario-*``.

    Args:
        root: the folder to sweep; the system temporary directory by default.

    Returns:
        The directories removed.
    """
    folder = root if root is not None else Path(tempfile.gettempdir())

    def dead(entry: os.DirEntry[str]) -> bool:
        if not entry.name.startswith(SCRATCH_PREFIX):  # cheap test first: /tmp can be large
            return False
        match = _SCRATCH_DIR.fullmatch(entry.name)
        alive = match is None or not _writer_gone(match["host"], match["pid"])
        return not alive and entry.is_dir(follow_symlinks=False)

    removed = _sweep(folder, dead, lambda path: shutil.rmtree(path, ignore_errors=True))
    if removed:
        logger.info("removed %d temporary folder(s) of gone processes from %s", len(removed), folder)
    return removed


def scratch_dir() -> Path:
    """A fresh private temporary directory, ``prefect-scenario-<host>-<pid>-<random>``.

    The first call of a process in a given temporary root first removes the directories that
    killed processes left there (:func:`sweep_dead_scratch_dirs`).
    """
    root = tempfile.gettempdir()
    if root not in _swept_temp_roots:
        _swept_temp_roots.add(root)
        sweep_dead_scratch_dirs(Path(root))
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{_owner_tag()}-"))


def is_scratch_dir(path: Path) -> bool:
    """True when ``path`` is a directory name :func:`scratch_dir` makes, in the temporary root."""
    return path.parent == Path(tempfile.gettempdir()) and _SCRATCH_DIR.fullmatch(path.name) is not None
