"""``prefect-scenario emulator serve`` serves the API over real HTTP on loopback."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


def test_emulator_serve_starts_answers_and_stops() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "SCENARIO_EMULATOR_API_KEY": "cli-key",
        "SCENARIO_EMULATOR_API_SECRET": "cli-secret",
    }
    command = [
        sys.executable,
        "-m",
        "prefect_scenario.cli",
        "emulator",
        "serve",
        "--port",
        "0",
        "--job-seconds",
        "0.5",
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("Scenario emulator: API at http://127.0.0.1:"), banner
        base_url = banner.split("API at ")[1].split(",")[0]
        root = base_url.removesuffix("/v1")
        for _ in range(100):
            try:
                config = httpx.get(f"{root}/_emulator/config", timeout=1).json()
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert config["job_seconds"] == 0.5
        assert config["credentials_fixed"] is True
        assert (
            httpx.get(f"{base_url}/models/model_runway-aleph-2", auth=("cli-key", "cli-secret")).status_code
            == 200
        )
        assert (
            httpx.get(f"{base_url}/models/model_runway-aleph-2", auth=("other", "cli-secret")).status_code
            == 401
        )
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
    assert process.returncode in (0, 128 + signal.SIGINT, -signal.SIGINT)  # Ctrl-C conventions


def _readline(process: subprocess.Popen[str], timeout: float) -> str:
    """The process's next stdout line, or "" if none comes within ``timeout`` seconds."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return process.stdout.readline()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_emulator_serve_removes_its_temporary_storage_when_stopped(
    tmp_path: Path, stop: signal.Signals
) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        # tempfile honours TMPDIR: the emulator's scenario-emulator-* storage lands where we look.
        "TMPDIR": str(tmpdir),
    }
    command = [sys.executable, "-m", "prefect_scenario.cli", "emulator", "serve", "--port", "0"]
    with (tmp_path / "stderr.txt").open("w") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            banner = _readline(process, timeout=30)
            assert banner.startswith("Scenario emulator: API at http://127.0.0.1:"), banner
            root = banner.split("API at ")[1].split(",")[0].removesuffix("/v1")
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert httpx.get(f"{root}/_emulator/config", timeout=1).status_code == 200
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the emulator never answered"
                    time.sleep(0.05)
            # The storage exists while serving, so the check below looks at the right place.
            assert [path.name for path in tmpdir.glob("scenario-emulator-*")]
            process.send_signal(stop)
            process.wait(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
            assert process.stdout is not None
            process.stdout.close()
    left = sorted(path.name for path in tmpdir.glob("scenario-emulator-*"))
    assert left == [], (
        f"left behind: {left}; exit {process.returncode}; {(tmp_path / 'stderr.txt').read_text()}"
    )
    assert process.returncode == 128 + stop  # stopped by a signal, after its cleanups ran
