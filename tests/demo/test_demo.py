"""``make demo`` end to end: ``python -m prefect_scenario.demo`` in a process of its own."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from support.files import MANIFEST_KEYS
from support.processes import run_python

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_runs_both_models_through_the_cli(tmp_path: Path) -> None:
    out, home = tmp_path / "out", tmp_path / "prefect-home"
    # The demo runs on its own Prefect home and server: nothing of this test session leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SCENARIO_"))}
    env.update(
        {
            "PREFECT_SCENARIO_DEMO_OUT": str(out),
            "PREFECT_SCENARIO_DEMO_HOME": str(home),
            "PREFECT_SCENARIO_DEMO_JOB_SECONDS": "1",
            "PYTHONPATH": str(REPO),
        }
    )
    started = time.monotonic()
    done = run_python(["-m", "prefect_scenario.demo"], env=env, cwd=tmp_path, timeout=420)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    for name, model_id, count in (
        ("layers", "model_scenario-video-layers-extractor", 3),
        ("edit", "model_runway-aleph-2", 1),
    ):
        manifest = json.loads((out / name / "manifest.json").read_text())
        assert list(manifest)[: len(MANIFEST_KEYS)] == MANIFEST_KEYS
        assert manifest["model_id"] == model_id
        assert manifest["status"] == "success"
        assert len(manifest["outputs"]) == count
        for entry in manifest["outputs"]:
            assert (out / name / entry["path"]).stat().st_size == entry["size"]
        assert (out / name / manifest["preview"]).stat().st_size > 0
        assert str(out / name / "manifest.json") in done.stdout
    # The run history stays in the demo's home, and the summary says how to open it.
    assert (home / "prefect.db").is_file()
    assert f"PREFECT_HOME={home}" in done.stdout
    assert "http://127.0.0.1:4200" in done.stdout
    print(f"demo: {elapsed:.0f} s")
