"""Crash litter: what a process killed with SIGKILL leaves behind is removed by the next run.

A SIGKILL runs no ``finally``, so a download killed mid-transfer leaves its ``.part`` file beside
the output, and a killed preview or storage fetch leaves its ``prefect-scenario-*`` folder in the
temporary directory. Work files carry the host and pid of their writer
(``.<name>.<host>-<pid>.<random>.part``, ``prefect-scenario-<host>-<pid>-<random>``, the host being
8 hex digits of the sha256 of the host name), and the next run removes those of dead processes,
never those of a live one. The kills here are real: a child process is killed with SIGKILL while
it holds the file, then the same work runs again in this process.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from prefect_scenario.client import RetryPolicy, ScenarioClient
from prefect_scenario.emulator import FaultRule, RunningEmulator
from prefect_scenario.storage import discard, new_temp_dir, temp_path_beside
from support.emulator import ASGI_BASE_URL, EMULATOR_KEY, EMULATOR_SECRET
from support.files import sha256_of, size_of

GET_FILE = "GET /files/{assetId}"
# How long the emulator holds the killed child's resumed file request.
HOLD_SECONDS = 4.0
FAST_RETRY = RetryPolicy(base_delay=0.05, max_delay=0.5, max_total_seconds=20)
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
OTHER_HOST = "00000000" if HOST != "00000000" else "11111111"

# A child that downloads an asset into a folder; the emulator holds its second file request, so
# it is killed with half the bytes in its partial file.
DOWNLOAD_CHILD = """
import asyncio, sys
from pathlib import Path
from prefect_scenario.client import RetryPolicy, ScenarioClient

async def main() -> None:
    base_url, key, secret, asset_id, target = sys.argv[1:]
    retry = RetryPolicy(base_delay=0.05, max_delay=0.5, max_total_seconds=60)
    async with ScenarioClient(base_url=base_url, api_key=key, api_secret=secret, retry=retry,
                              timeout=60.0) as client:
        await client.assets.download(asset_id, Path(target))

asyncio.run(main())
"""

# A child that makes a work folder (as a preview does), says where, and waits to be killed.
TEMP_DIR_CHILD = """
import time
from prefect_scenario.storage import new_temp_dir

folder = new_temp_dir()
(folder / "frame.jpg").write_bytes(b"x" * 1000)
print(folder, flush=True)
time.sleep(120)
"""


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped: no process holds it now."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def client_for(base_url: str, transport: httpx.AsyncBaseTransport | None = None) -> ScenarioClient:
    return ScenarioClient(
        base_url=base_url,
        api_key=EMULATOR_KEY,
        api_secret=EMULATOR_SECRET,
        transport=transport,
        retry=FAST_RETRY,
        timeout=10.0,
    )


def parts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def spawn(code: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    # cwd: ``python -c`` puts it first on sys.path; the child must import what this process does.
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def kill(child: subprocess.Popen[str]) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


@pytest.mark.slow
async def test_a_download_killed_mid_transfer_leaves_no_part_once_run_again(
    live_emulator: RunningEmulator, sample_clip: Path, tmp_path: Path
) -> None:
    async with client_for(live_emulator.base_url) as client:
        asset_id = (await client.uploads.upload_file(sample_clip)).id
    live_emulator.state.add_faults(
        [
            FaultRule(route=GET_FILE, kind="truncate", keep_fraction=0.5),
            FaultRule(route=GET_FILE, kind="delay", seconds=HOLD_SECONDS),
        ]
    )
    folder = tmp_path / "out"
    target = folder / "output.mp4"
    args = (live_emulator.base_url, EMULATOR_KEY, EMULATOR_SECRET, asset_id, str(target))
    child = spawn(DOWNLOAD_CHILD, *args, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        # The second file request is the resume after the cut: half the bytes are on disk by then.
        while live_emulator.state.stats()["requests"].get(GET_FILE, 0) < 2:
            assert child.poll() is None, child.communicate()[1]
            assert time.monotonic() < deadline, "the child never resumed its download"
            await asyncio.sleep(0.05)
        held_until = time.monotonic() + HOLD_SECONDS
        left = [folder / name for name in parts(folder)]
        assert len(left) == 1
        assert 0 < size_of(left[0]) < size_of(sample_clip)
    finally:
        kill(child)
    assert not target.exists()
    assert parts(folder) == [left[0].name]  # what SIGKILL leaves: the partial file

    async with client_for(live_emulator.base_url) as client:
        downloaded = await client.assets.download(asset_id, target)

    assert downloaded.path == target
    assert downloaded.sha256 == sha256_of(sample_clip) == sha256_of(target)
    assert parts(folder) == []
    # Let the emulator finish holding the dead child's request, so no server task outlives the test.
    await asyncio.sleep(max(0.0, held_until - time.monotonic()))


async def test_a_download_removes_the_stale_parts_of_its_target_only(
    emulator_app: FastAPI, sample_clip: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    dead = dead_pid()
    stale = f".output.mp4.{HOST}-{dead}.0123abcd.part"
    live = f".output.mp4.{HOST}-{os.getpid()}.0123abcd.part"  # a live writer: this process
    other_host = f".output.mp4.{OTHER_HOST}-{dead}.0123abcd.part"  # that pid means nothing here
    other_target = f".output.mp4.json.{HOST}-{dead}.0123abcd.part"  # another target's business
    untagged_recent = ".output.mp4.k3j_x9ab.part"
    untagged_old = ".output.mp4.q7z_w2cd.part"  # untouched for 7 hours: nobody writes it
    for name in (stale, live, other_host, other_target, untagged_recent, untagged_old):
        (folder / name).write_bytes(b"half a video")
    hours_ago = time.time() - 7 * 3600
    os.utime(folder / untagged_old, (hours_ago, hours_ago))

    transport = httpx.ASGITransport(app=emulator_app)
    async with client_for(ASGI_BASE_URL, transport) as client:
        asset_id = (await client.uploads.upload_file(sample_clip)).id
        downloaded = await client.assets.download(asset_id, folder / "output.mp4")

    assert downloaded.sha256 == sha256_of(sample_clip) == sha256_of(folder / "output.mp4")
    assert parts(folder) == sorted([live, other_host, other_target, untagged_recent])


def test_staging_beside_a_target_removes_parts_of_dead_writers(tmp_path: Path) -> None:
    target = tmp_path / "job_1" / "00-asset.mp4"
    target.parent.mkdir()
    stale = target.with_name(f".{target.name}.{HOST}-{dead_pid()}.0123abcd.part")
    stale.write_bytes(b"half")

    staging = temp_path_beside(target)

    assert not stale.exists()
    assert staging.parent == target.parent
    assert staging.name.startswith(f".{target.name}.{HOST}-{os.getpid()}.")
    assert staging.name.endswith(".part")


def test_temp_dirs_of_dead_processes_are_removed_and_live_ones_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    dead = dead_pid()
    gone = root / f"prefect-scenario-{HOST}-{dead}-ab12cd34"
    kept = [
        root / f"prefect-scenario-{HOST}-{os.getpid()}-ab12cd34",  # a live process: this one
        root / f"prefect-scenario-{OTHER_HOST}-{dead}-ab12cd34",  # another host's pid
        root / "prefect-scenario-tests-ab12cd34",  # not made by new_temp_dir
        root / "prefect-scenario-ab12cd34",  # no writer named: cannot be judged
    ]
    for folder in (gone, *kept):
        folder.mkdir()
        (folder / "sheet.jpg").write_bytes(b"jpeg")

    fresh = new_temp_dir()

    assert not gone.exists()
    assert all(folder.is_dir() for folder in kept)
    assert fresh.parent == root
    assert fresh.name.startswith(f"prefect-scenario-{HOST}-{os.getpid()}-")
    (fresh / "clip.mp4").write_bytes(b"clip")
    discard(fresh / "clip.mp4")
    assert not fresh.exists()


def test_the_temp_dir_of_a_killed_process_is_removed_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "tmp"
    root.mkdir()
    child = spawn(TEMP_DIR_CHILD, cwd=tmp_path, env={"TMPDIR": str(root)})
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        assert line, child.communicate()[1]
        litter = Path(line)
        assert litter.parent == root
        assert (litter / "frame.jpg").is_file()
    finally:
        kill(child)
    assert litter.is_dir()  # what SIGKILL leaves

    monkeypatch.setattr(tempfile, "tempdir", str(root))
    fresh = new_temp_dir()

    assert not litter.exists()
    assert [p.name for p in root.iterdir()] == [fresh.name]
    discard(fresh / "anything")
    assert not fresh.exists()
