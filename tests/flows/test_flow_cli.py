"""The CLI end to end: each command a process of its own, recording its runs in the test server.

(The checks that need no Prefect server, bad input above all, are in ``tests/cli/test_cli.py``.)
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from support.emulator import GENERATE_ROUTE, faults, stats
from support.files import MANIFEST_KEYS, OUTPUT_KEYS, sha256_of
from support.processes import run_python

REPO = Path(__file__).resolve().parents[2]
INSTRUCTION = "each moving object apart from the background"


@pytest.fixture
def cli_env(scenario_env: dict[str, str]) -> dict[str, str]:
    """The SDK's variables for the emulator, and the session's Prefect server for the run history."""
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    assert api_url, "the Prefect test harness is not running"
    return {**os.environ, **scenario_env, "PREFECT_API_URL": api_url, "PYTHONPATH": str(REPO)}


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_python(["-m", "prefect_scenario.cli", *args], env=env, cwd=REPO, timeout=300)


def only_error_line(stderr: str) -> str:
    """The CLI's one ``error:`` line; Prefect may still print its own shutdown notices after it
    (e.g. its events worker draining under load), which are not the CLI's error."""
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def _check_manifest_dir(out: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    assert list(manifest)[: len(MANIFEST_KEYS)] == MANIFEST_KEYS
    assert manifest["status"] == "success"
    assert manifest["outputs"]
    for entry in manifest["outputs"]:
        assert list(entry) == OUTPUT_KEYS
        assert not Path(entry["path"]).is_absolute()
        file = out / entry["path"]
        assert file.stat().st_size == entry["size"]
        assert sha256_of(file) == entry["sha256"]
    assert (out / manifest["preview"]).is_file()
    return manifest


def test_layers_and_edit_write_outputs_and_manifest(
    live_emulator: Any, cli_env: dict[str, str], sample_clip: Path, sample_image: Path, tmp_path: Path
) -> None:
    layers_out = tmp_path / "layers"
    done = run_cli(
        [
            "layers",
            str(sample_clip),
            "--instruction",
            INSTRUCTION,
            "--max-layers",
            "3",
            "--out",
            str(layers_out),
        ],
        cli_env,
    )
    assert done.returncode == 0, done.stderr
    manifest = _check_manifest_dir(layers_out)
    assert manifest["model_id"] == "model_scenario-video-layers-extractor"
    assert len(manifest["outputs"]) == 3
    assert manifest["job_id"] in done.stdout
    assert "manifest: " in done.stdout
    # Progress is Prefect's log lines.
    assert "Scenario job" in done.stderr
    assert "Finished in state Completed()" in done.stderr

    edit_out = tmp_path / "edit"
    done = run_cli(
        [
            "edit", str(sample_clip), "--prompt", "make it pastel", "--keyframe", f"{sample_image}@1.5",
            "--seed", "21", "--out", str(edit_out),
        ],
        cli_env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    manifest = _check_manifest_dir(edit_out)
    assert manifest["inputs"]["keyframes"][0]["seconds"] == 1.5
    assert manifest["inputs"]["seed"] == 21
    counters = stats(live_emulator)
    assert counters["jobs_created"] == 2
    # The clip once (shared by both commands), the keyframe image once.
    assert counters["uploads_created"] == 2


async def test_dry_run_with_a_saved_block_prints_the_estimate_and_creates_no_job(
    live_emulator: Any, credentials: Any, cli_env: dict[str, str], sample_clip: Path, tmp_path: Path
) -> None:
    # Credentials from a saved block (--credentials), none in the environment.
    block_name = f"cli-{uuid.uuid4().hex[:8]}"
    await credentials.asave(block_name, overwrite=True)
    env = {k: v for k, v in cli_env.items() if not k.startswith("SCENARIO_SDK_")}
    out = tmp_path / "out"
    args = ["layers", str(sample_clip), "--instruction", INSTRUCTION, "--dry-run", "--out", str(out)]
    done = await asyncio.to_thread(run_cli, [*args, "--credentials", block_name], env)
    assert done.returncode == 0, done.stderr
    assert "would cost about" in done.stdout
    assert "nothing was submitted" in done.stdout
    counters = stats(live_emulator)
    assert counters["jobs_created"] == 0
    assert counters["dry_runs"] == 1
    # Uploads are free, and the real run will reuse it.
    assert counters["uploads_created"] == 1
    assert not (out / "manifest.json").exists()


def test_budget_below_the_estimate_is_refused_before_spending(
    live_emulator: Any, cli_env: dict[str, str], sample_clip: Path, tmp_path: Path
) -> None:
    done = run_cli(
        ["edit", str(sample_clip), "--prompt", "snow", "--max-creative-units", "1", "--out", str(tmp_path)],
        cli_env,
    )
    assert done.returncode == 2
    last = only_error_line(done.stderr)
    assert last.startswith("error: ")
    assert "max_creative_units" in last
    assert "Traceback" not in done.stderr
    assert stats(live_emulator)["jobs_created"] == 0


def test_a_failed_job_is_one_line_with_the_servers_error_and_hint(
    live_emulator: Any, cli_env: dict[str, str], sample_clip: Path, tmp_path: Path
) -> None:
    error = "The clip has no motion to separate"
    hint = "Use a clip where the objects move"
    faults(live_emulator, {"route": GENERATE_ROUTE, "kind": "fail_job", "error": error, "hint": hint})
    done = run_cli(
        ["layers", str(sample_clip), "--instruction", INSTRUCTION, "--out", str(tmp_path)], cli_env
    )
    assert done.returncode == 1
    last = only_error_line(done.stderr)
    assert last.startswith("error: Scenario job job_")
    assert last.endswith(f"failed: {error} (hint: {hint})")
    # Prefect's own log lines stay, but without a traceback for an expected failure.
    assert "Traceback" not in done.stderr
    assert stats(live_emulator)["jobs_created"] == 1
    assert not (tmp_path / "manifest.json").exists()
