"""The bounded form of ``make soak``: a batch killed mid-submit, and a batch under faults everywhere.

Both run the product in processes of their own (``bench/crash.py``) against an emulator process and
the session's Prefect server, and count jobs per distinct input on the emulator.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

pytestmark = pytest.mark.slow


@pytest.fixture
def prefect_service(tmp_path: Path) -> Any:
    """What ``bench.crash`` needs of a Prefect server: the environment of its clients."""
    from prefect.settings import PREFECT_API_URL

    return SimpleNamespace(
        extra={
            "env": {
                "PREFECT_API_URL": str(PREFECT_API_URL.value()),
                "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
            }
        }
    )


def test_a_killed_batch_and_a_fault_soak_buy_each_job_once(prefect_service: Any, tmp_path: Path) -> None:
    from bench import crash
    from bench._batch import make_clips
    from bench._services import emulator as start_emulator

    (tmp_path / "tmp").mkdir()
    with start_emulator(log_dir=tmp_path / "logs", job_seconds=1.5) as emulator:
        clips = make_clips(tmp_path / "clips", 6, seconds=1.0, width=96, height=64, fps=8)
        killed = crash.batch_kill(emulator, prefect_service, clips, tmp_path)
        print("batch kill:", killed)
        assert killed["jobs_when_killed"] >= 3
        assert killed["duplicates"] == 0
        assert killed["jobs"] == killed["distinct_inputs"] == 6
        assert killed["succeeded"] == 6
        assert killed["outputs"] > 0
        assert killed["outputs_verified"] == killed["outputs"]

        soak_clips = make_clips(tmp_path / "soak-clips", 10, seconds=1.0, width=96, height=64, fps=8)
        soaked = crash.soak(emulator, prefect_service, soak_clips, tmp_path, fault_rate=0.10)
        print("soak:", soaked)
        assert sum(soaked["faults_fired"].values()) > 0
        assert soaked["duplicates"] == 0
        assert soaked["rerun"]["succeeded"] == 10
        assert soaked["outputs_verified"] == soaked["outputs"] > 0
        assert soaked["rerun_bought_exactly_the_failed_clips"], soaked
