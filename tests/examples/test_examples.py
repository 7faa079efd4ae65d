"""The scripts in ``examples/`` run as a user would run them, against the bundled emulator.

Each is its own process with a private PREFECT_HOME (Prefect starts a temporary server for it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from support.processes import run_python

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run_example(name: str, tmp_path: Path) -> str:
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PYTHONPATH": str(REPO),
    }
    for leftover in (
        "PREFECT_API_URL",
        "SCENARIO_BASE_URL",
        "SCENARIO_SDK_API_KEY",
        "SCENARIO_SDK_API_SECRET",
    ):
        env.pop(leftover, None)
    done = run_python([str(REPO / "examples" / name)], env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_layers_one_clip(tmp_path: Path) -> None:
    out = run_example("layers_one_clip.py", tmp_path)
    assert re.search(r"Scenario job job_\w+: 3 layers", out), out
    assert out.count(".webm (video/webm") == 3
    assert "jobs created on the emulator: 1" in out


def test_edit_with_keyframe_reuses_the_seeded_job(tmp_path: Path) -> None:
    out = run_example("edit_with_keyframe.py", tmp_path)
    first = re.search(r"first run: Scenario job (job_\w+), [\d.]+ CU", out)
    second = re.search(r"second run: Scenario job (job_\w+), nothing spent \(reused\)", out)
    assert first, out
    assert second, out
    assert first.group(1) == second.group(1)
    assert "jobs created on the emulator: 1" in out


def test_batch_folder(tmp_path: Path) -> None:
    out = run_example("batch_folder.py", tmp_path)
    assert "4 of 4 clip(s) succeeded" in out
    assert out.count(": succeeded, job job_") == 4
    assert "jobs created on the emulator: 4" in out
