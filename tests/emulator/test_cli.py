"""``prefect-scenario emulator serve`` serves the API over real HTTP on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

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
