"""``prefect-scenario layers|edit``: fast start, and bad input refused in one line before any spend.

Every command here runs as its own process, exactly as a user types it. Nothing here needs a Prefect
server: a bad input must be refused before one would start. The runs that reach Prefect are in
``tests/flows/test_flow_cli.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from support.emulator import stats
from support.processes import run_python

REPO = Path(__file__).resolve().parents[2]
_LOADED_AT_START = "import sys, prefect_scenario.cli; print(sorted({'prefect', 'av'} & set(sys.modules)))"


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m prefect_scenario.cli ARGS`` in the repository, with ``env`` on top of ours."""
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    return run_python(["-m", "prefect_scenario.cli", *args], env=full_env, cwd=REPO, timeout=timeout)


def uploads_created(emulator: Any) -> int:
    return int(stats(emulator)["uploads_created"])


def test_help_is_fast_and_lists_the_run_commands() -> None:
    started = time.monotonic()
    done = run_cli(["--help"], {})
    elapsed = time.monotonic() - started
    assert done.returncode == 0
    assert "layers" in done.stdout
    assert "edit" in done.stdout
    # Prefect, PyAV and the flows are imported by the commands that need them, not at start-up.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, prefect_scenario.cli; print(sorted({'prefect', 'av'} & set(sys.modules)))",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "[]"
    print(f"prefect-scenario --help: {elapsed:.2f} s")


@pytest.fixture
def emulator_env(live_emulator: Any) -> dict[str, str]:
    return {
        "SCENARIO_SDK_API_KEY": "cli-key",
        "SCENARIO_SDK_API_SECRET": "cli-secret",
        "SCENARIO_BASE_URL": live_emulator.base_url,
        # Were a bad input ever to get through, no test server would be there to record it.
        "PREFECT_API_URL": "http://127.0.0.1:9/api",
    }


def _bad_inputs(clip: Path, image: Path) -> list[tuple[list[str], str]]:
    return [
        (
            ["edit", str(clip), "--prompt", "x" * 1001],
            "error: prompt is 1001 characters; Runway Aleph 2 takes at most 1000: shorten it by 1",
        ),
        (
            ["layers", str(clip), "--instruction", "the shapes", "--max-layers", "11"],
            "error: max_layers is 11; Video to Layers takes 1 to 10",
        ),
        (["layers", str(clip.with_name("missing.mp4")), "--instruction", "the shapes"], "does not exist"),
        (
            ["edit", str(clip), "--prompt", "snow", "--keyframe", str(image)],
            "has no time: write PATH@SECONDS",
        ),
        (
            ["edit", str(clip), "--prompt", "snow", "--keyframe", f"{image}@9.5"],
            "is after the end of the 4.00 s clip",
        ),
        (
            [
                "edit",
                str(clip),
                "--prompt",
                "snow",
                "--keyframe",
                f"{image}@1",
                "--prompt-image",
                f"{image}@1",
            ],
            "cannot be used together",
        ),
        (["edit", str(clip), "--prompt", "snow", "--seed", "-1"], "seed -1 is out of range"),
    ]


def test_bad_input_is_one_line_exit_2_and_nothing_uploaded(
    live_emulator: Any, emulator_env: dict[str, str], sample_clip: Path, sample_image: Path
) -> None:
    for args, expected in _bad_inputs(sample_clip, sample_image):
        started = time.monotonic()
        done = run_cli(args, emulator_env)
        elapsed = time.monotonic() - started
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (args, done.stderr)
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("error: ")
        assert expected in lines[0]
        assert "Traceback" not in done.stderr
        # Refused before Prefect or the API were involved: about the time of the imports.
        assert elapsed < 30
    assert uploads_created(live_emulator) == 0


def test_missing_credentials_say_what_to_set(sample_clip: Path) -> None:
    env = {name: "" for name in ("SCENARIO_SDK_API_KEY", "SCENARIO_SDK_API_SECRET", "SCENARIO_SDK_JWT")}
    done = run_cli(["layers", str(sample_clip), "--instruction", "the shapes"], env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "SCENARIO_SDK_API_KEY" in done.stderr
    assert "Traceback" not in done.stderr


def test_usage_errors_exit_non_zero() -> None:
    done = run_cli(["layers"], {})
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
