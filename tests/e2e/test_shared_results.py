"""Results on S3 shared by workers that share nothing else: a run killed on one machine, run again on
another, gets its job back instead of buying it again (issue 13, point 3).

On the shared stack of ``conftest.py`` (PostgreSQL, a real server, the emulator), two process
workers, each with a ``PREFECT_HOME`` of its own (as two machines have), and
``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK`` naming an ``S3Bucket`` block on moto's server: the paid
submit's persisted result and the submission ledger beside it are in the bucket.

A layers run starts on worker A. The emulator holds its paid ``POST /generate`` 8 s, and one second
into that hold (the submit's lease in the bucket is A's, its ledger entry ``submitting``) A and its
flow-run process are SIGKILLed: the machine dies inside the paid submit's critical section, and the
emulator completes the request anyway, as a real server would. The same run, started again, lands
on worker B. B waits for A's lease to run out (it is renewed only while its holder lives: 30 s),
finds A's entry and the job by listing, adopts it (one job in all) and stores every output. With the
results left on each worker's disk (``SHARED_RESULTS_MUTATION=local``, run by hand), B buys a second
job: the bucket is what carries it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.e2e_stack import BIN, JOB_SECONDS, POOL, Process, Stack, processes_of_flow_run
from prefect_scenario import video
from support.emulator import GENERATE_ROUTE
from support.prefect_api import wait_for
from support.s3 import ACCESS_KEY, REGION, SECRET_KEY, s3_client

pytestmark = pytest.mark.slow

SHARED_JOB_SECONDS = 20.0
RESULTS_BLOCK = "e2e-shared-results"
FIGURES: dict[str, Any] = {}

_SAVE_BLOCK = """
import sys
from prefect_aws import AwsCredentials, S3Bucket
credentials = AwsCredentials(aws_access_key_id=sys.argv[1], aws_secret_access_key=sys.argv[2],
                             region_name=sys.argv[3], aws_client_parameters={"endpoint_url": sys.argv[4]})
print(S3Bucket(bucket_name=sys.argv[5], credentials=credentials).save(sys.argv[6], overwrite=True))
"""


@pytest.fixture(scope="module", autouse=True)
def _report_figures() -> Iterator[None]:
    yield
    print("shared-results figures:", FIGURES)


@pytest.fixture(scope="module")
def bucket(stack: Stack, moto_server: str) -> str:
    name = f"e2e-results-{uuid.uuid4().hex[:10]}"
    s3_client(moto_server).create_bucket(Bucket=name)
    stack.run(
        [sys.executable, "-c", _SAVE_BLOCK, ACCESS_KEY, SECRET_KEY, REGION, moto_server, name, RESULTS_BLOCK]
    )
    return name


@pytest.fixture(scope="module")
def machines(stack: Stack, bucket: str) -> Iterator[dict[str, dict[str, str]]]:
    """Two machines' settings; the stack's own workers stopped meanwhile, one started again after."""
    for process in stack.processes:
        if process.name.split(":")[0] == "worker" and process.popen.poll() is None:
            process.stop()
    local = os.environ.get("SHARED_RESULTS_MUTATION") == "local"
    settings = {
        name: {
            "PREFECT_HOME": str(stack.root / f"machine-{name}"),
            **({} if local else {"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": f"s3-bucket/{RESULTS_BLOCK}"}),
        }
        for name in ("a", "b")
    }
    stack.emulator("POST", "config", {"job_seconds": SHARED_JOB_SECONDS})
    yield settings
    stack.emulator("POST", "config", {"job_seconds": JOB_SECONDS})
    for process in stack.processes:
        if process.name.startswith("worker:machine-") and process.popen.poll() is None:
            process.stop()
    _worker(stack, "e2e-worker-after-shared-results", {})


def _worker(stack: Stack, name: str, env: dict[str, str]) -> Process:
    return stack.start(
        f"worker:{name}", [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name", name], env=env
    )


def _jobs_created(stack: Stack) -> int:
    return int(stack.emulator("GET", "stats")["jobs_created"])


def _delays_fired(stack: Stack) -> int:
    return int(dict(stack.emulator("GET", "stats").get("faults_fired") or {}).get("delay", 0))


def _run_layers(stack: Stack, clip: Path, out: Path) -> dict[str, Any]:
    deployment = stack.api.deployment("video-to-layers", "on-demand")
    return stack.api.run_like_the_ui(deployment, video=str(clip), destination=str(out), max_layers=2)


def test_a_run_killed_on_one_machine_is_finished_on_another_without_buying_again(
    stack: Stack, machines: dict[str, dict[str, str]], bucket: str, moto_server: str, tmp_path: Path
) -> None:
    clip = tmp_path / "shared.mp4"
    video.make_sample_clip(clip, seconds=1.0, width=160, height=120, fps=12, moving_objects=1, seed=81)
    before = _jobs_created(stack)
    machine_a = _worker(stack, "machine-a", machines["a"])
    first = _run_layers(stack, clip, stack.root / "shared-first")

    # Both POSTs of the run (the estimate, then the paid submit) are held 8 s each.
    stack.emulator("POST", "faults", {"route": GENERATE_ROUTE, "kind": "delay", "seconds": 8, "count": 2})
    held_before = _delays_fired(stack)

    def inside_the_paid_submit() -> list[int] | None:
        run = stack.api.flow_run(first["id"])
        if run["state_type"] in {"COMPLETED", "FAILED", "CRASHED"}:
            raise AssertionError(f"ended before the kill: {run['state']}\n{stack.logs()}")
        if _delays_fired(stack) - held_before < 2:
            return None
        return processes_of_flow_run(first["id"]) or None

    pids = wait_for("the first run's paid submit to be held on machine A", inside_the_paid_submit, 180)
    time.sleep(1.0)
    assert _jobs_created(stack) == before, "the held POST created its job early"
    os.killpg(machine_a.popen.pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    machine_a.popen.wait(10)
    stack.emulator("DELETE", "faults")  # the held submit goes on; nothing else is held
    assert stack.api.flow_run(first["id"])["state_type"] == "RUNNING"  # nobody saw it die yet

    _worker(stack, "machine-b", machines["b"])
    again = _run_layers(stack, clip, stack.root / "shared-again")
    started_again = time.monotonic()
    final = stack.api.wait_until_final(again["id"], timeout=240)
    FIGURES["seconds_to_finish_on_machine_b"] = round(time.monotonic() - started_again, 1)
    FIGURES["jobs_created"] = _jobs_created(stack) - before
    assert final["state_type"] == "COMPLETED", f"{final['state']}\n{stack.logs()}"
    assert _jobs_created(stack) - before == 1, "the run on machine B bought the job again"
    outputs = [p for p in (stack.root / "shared-again").rglob("*") if p.is_file() and "-asset_" in p.name]
    assert len(outputs) >= 2
    # Nothing of it on machine B's disk: the submit's result and the ledger are in the bucket.
    keys = [item["Key"] for item in s3_client(moto_server).list_objects_v2(Bucket=bucket).get("Contents", [])]
    FIGURES["objects_in_bucket"] = len(keys)
    assert keys, "no result in the bucket"
    assert not list((Path(machines["b"]["PREFECT_HOME"]) / "storage").glob("*"))
