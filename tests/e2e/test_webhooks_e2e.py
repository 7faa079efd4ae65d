"""Webhooks end to end: the emulator's signed deliveries wake suspended runs through
``prefect-scenario webhooks serve``, and the watcher's sweep is the backstop.

On the shared stack of ``conftest.py`` (PostgreSQL, a real server, process workers, the emulator),
with the receiver registered the way a user does it (``webhooks register URL``, the secret in a
Secret block) and a watcher whose next sweep is ten minutes away:

1. a valid delivery wakes the run long before that sweep; the same delivery sent twice (the
   emulator's ``duplicate`` fault) wakes it once; one job;
2. with the job's delivery dropped by the emulator, a forged signature and a stale timestamp get 401,
   a malformed body 400, and none of them wakes the run; a watcher sweeping every second then
   wakes it; one job.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from e2e.e2e_stack import CREDENTIALS_BLOCK, JOB_SECONDS, Process, Stack, start_watcher
from prefect_scenario import video
from prefect_scenario.webhooks.signatures import StandardWebhooks
from support.net import free_port
from support.prefect_api import wait_for

pytestmark = pytest.mark.slow

HOOK_JOB_SECONDS = 8.0
SECRET_BLOCK = "e2e-webhook-secret"
# Far beyond any wait of these tests: a run woken here was woken by a delivery, not by a sweep.
IDLE_SWEEP_SECONDS = 600
FIGURES: dict[str, Any] = {}


@dataclass
class Receiver:
    url: str
    process: Process
    endpoint_id: str
    secret: SecretStr

    def log(self) -> str:
        return self.process.log.read_text(errors="replace")


@pytest.fixture(scope="module", autouse=True)
def _report_figures() -> Iterator[None]:
    yield
    print("webhook figures:", FIGURES)


@pytest.fixture(scope="module")
def receiver(stack: Stack) -> Iterator[Receiver]:
    """``webhooks register`` then ``webhooks serve`` on a port of its own; the endpoint deleted after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    registered = stack.run(
        [
            sys.executable,
            "-m",
            "prefect_scenario.cli",
            "webhooks",
            "register",
            url,
            "--credentials",
            CREDENTIALS_BLOCK,
            "--secret-block",
            SECRET_BLOCK,
            "--overwrite",
        ]
    )
    found = re.search(r"Registered Scenario webhook endpoint (\S+)", registered)
    assert found, registered
    # What the receiver reads, to sign the test's own deliveries (stale, malformed) with it.
    loaded = stack.run(
        [
            sys.executable,
            "-c",
            "import sys; from prefect.blocks.system import Secret; "
            "print('secret=' + Secret.load(sys.argv[1]).get())",
            SECRET_BLOCK,
        ]
    )
    value = re.search(r"^secret=(\S+)$", loaded, re.MULTILINE)
    assert value, "the Secret block holds no secret"
    secret = SecretStr(value.group(1))
    assert secret.get_secret_value() not in registered, "register printed the secret"
    process = stack.start(
        "webhook-receiver",
        [
            sys.executable,
            "-m",
            "prefect_scenario.cli",
            "webhooks",
            "serve",
            "--port",
            str(port),
            "--credentials",
            CREDENTIALS_BLOCK,
            "--secret-block",
            SECRET_BLOCK,
        ],
    )

    def healthy() -> bool | None:
        if process.popen.poll() is not None:
            raise AssertionError(f"the receiver exited:\n{process.tail()}")
        try:
            return httpx.get(f"{url}healthz", timeout=2).status_code == 200 or None
        except httpx.HTTPError:
            return None

    wait_for("the webhook receiver", healthy, 60)
    stack.emulator("POST", "config", {"job_seconds": HOOK_JOB_SECONDS})
    try:
        yield Receiver(url, process, found.group(1), secret)
    finally:
        stack.emulator("POST", "config", {"job_seconds": JOB_SECONDS})
        stack.emulator("DELETE", "webhooks/faults")
        project = _project_id(stack)
        httpx.delete(
            f"{stack.emulator_base_url}/projects/{project}/webhook-endpoints/{found.group(1)}",
            auth=("e2e-key", "x"),
            timeout=10,
        )
        process.stop()


@pytest.fixture
def idle_watcher(stack: Stack) -> Iterator[Process]:
    """A watcher that sweeps once as it starts, then not for ten minutes."""
    process = start_watcher(stack, "watcher-idle", IDLE_SWEEP_SECONDS)
    wait_for("the idle watcher", lambda: "Watching the suspended" in process.log.read_text() or None, 60)
    yield process
    process.stop()


def _project_id(stack: Stack) -> str:
    return (
        stack.run(
            [
                sys.executable,
                "-c",
                "import sys; from prefect_scenario.blocks import ScenarioCredentials; "
                "print('project=' + ScenarioCredentials.load(sys.argv[1]).project_id)",
                CREDENTIALS_BLOCK,
            ]
        )
        .strip()
        .splitlines()[-1]
    )


def _clip(tmp_path: Path, seed: int) -> Path:
    clip = tmp_path / f"hook-{seed}.mp4"
    video.make_sample_clip(clip, seconds=1.0, width=160, height=120, fps=12, moving_objects=1, seed=seed)
    return clip


def _suspend_a_layers_run(stack: Stack, clip: Path, out: Path) -> tuple[str, str]:
    """Start a layers run in suspend mode; wait until it is suspended; its flow run and job ids."""
    deployment = stack.api.deployment("video-to-layers", "on-demand")
    created = stack.api.run_like_the_ui(
        deployment, video=str(clip), destination=str(out), max_layers=2, wait="suspend"
    )

    def suspended() -> dict[str, Any] | None:
        run = stack.api.flow_run(created["id"])
        if run["state_type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            raise AssertionError(f"ended instead of suspending: {run['state']}\n{stack.logs()}")
        return run if run["state_type"] == "PAUSED" else None

    run = wait_for(f"flow run {created['id']} to suspend", suspended, 120)
    return str(created["id"]), str(run["labels"]["scenario.paid.job"])


def _jobs_created(stack: Stack) -> int:
    return int(stack.emulator("GET", "stats")["jobs_created"])


def _job(stack: Stack, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.emulator_base_url}/jobs/{job_id}", auth=("e2e-key", "x"), timeout=10)
    return dict(response.json()["job"])


def _completed_deliveries(stack: Stack, receiver: Receiver, fault: str) -> list[dict[str, Any]]:
    """The receiver's ``generation.completed`` deliveries that met ``fault`` (the log holds no bodies)."""
    return [
        view
        for view in stack.emulator("GET", "webhooks/deliveries")
        if view["endpoint_id"] == receiver.endpoint_id
        and view["event_type"] == "generation.completed"
        and view["fault"] == fault
    ]


def _suspend_with_a_delivery_fault(stack: Stack, fault: str, tmp_path: Path, seed: int) -> tuple[str, str]:
    """The next ``generation.completed`` delivery meets ``fault``; a layers run suspended on its job."""
    stack.emulator("POST", "webhooks/faults", [{"kind": fault, "event_type": "generation.completed"}])
    return _suspend_a_layers_run(stack, _clip(tmp_path, seed), tmp_path / "out")


def test_1_a_delivery_wakes_the_run_before_any_sweep_and_a_duplicate_wakes_it_once(
    stack: Stack, receiver: Receiver, idle_watcher: Process, tmp_path: Path
) -> None:
    before = _jobs_created(stack)
    flow_run_id, job_id = _suspend_with_a_delivery_fault(stack, "duplicate", tmp_path, seed=61)
    suspended_at = time.monotonic()

    final = stack.api.wait_until_final(flow_run_id, timeout=180)
    FIGURES["suspended_to_final_seconds"] = round(time.monotonic() - suspended_at, 1)
    assert final["state_type"] == "COMPLETED", f"{final['state']}\n{stack.logs()}"
    # Woken by the delivery: the only watcher sweeps next in ten minutes, and did not resume it.
    assert time.monotonic() - suspended_at < IDLE_SWEEP_SECONDS / 2
    assert "Resumed flow run" not in idle_watcher.log.read_text()
    assert _jobs_created(stack) - before == 1
    assert final["labels"]["scenario.job_id"] == job_id

    [duplicated] = _completed_deliveries(stack, receiver, "duplicate")
    assert duplicated["requests_sent"] == 2
    log = receiver.log()
    assert len(re.findall(rf"job {job_id}: accepted", log)) == 1, log[-3000:]
    assert re.search(rf"job {job_id}: duplicate", log), log[-3000:]
    woke = re.findall(rf"Scenario job {job_id}: (\d+) run\(s\) waiting, (\d+) resumed", log)
    assert [resumed for _, resumed in woke] == ["1"], woke
    # One wake-up event, whoever sent it: its id is derived from the job, its status and the run.
    wakes = [
        event
        for event in stack.api.wait_for_events(flow_run_id, {"scenario.job.completed"})
        if any(related.get("prefect.resource.role") == "waiter" for related in event["related"])
    ]
    assert len({event["id"] for event in wakes}) == 1, wakes


def test_2_forged_stale_and_malformed_deliveries_wake_nothing_and_the_sweep_catches_a_dropped_one(
    stack: Stack, receiver: Receiver, idle_watcher: Process, tmp_path: Path
) -> None:
    before = _jobs_created(stack)
    flow_run_id, job_id = _suspend_with_a_delivery_fault(stack, "drop", tmp_path, seed=62)

    def ended() -> dict[str, Any] | None:
        job = _job(stack, job_id)
        return job if job["status"] == "success" else None

    job = wait_for("the job to end", ended, 60)
    body = json.dumps({"id": f"evt_{uuid.uuid4().hex}", "type": "generation.completed", "data": {"job": job}})
    scheme = StandardWebhooks()
    now = int(time.time())

    def send(raw: bytes, secret: SecretStr, timestamp: int) -> httpx.Response:
        headers = scheme.sign(secret, raw, delivery_id=f"msg_{uuid.uuid4().hex}", timestamp=timestamp)
        return httpx.post(receiver.url, content=raw, headers={**headers, "content-type": "application/json"})

    forged = send(
        body.encode(), SecretStr("whsec_" + base64.b64encode(b"a forger's guess at the key").decode()), now
    )
    stale = send(body.encode(), receiver.secret, now - 3600)
    malformed = send(b'{"type": "generation.completed", "data": {"job": ', receiver.secret, now)
    FIGURES["refusals"] = [forged.status_code, stale.status_code, malformed.status_code]
    assert forged.status_code == 401, forged.text
    assert "signature" in forged.json()["reason"]
    assert stale.status_code == 401, stale.text
    assert "timestamp" in stale.json()["reason"]
    assert malformed.status_code == 400, malformed.text

    [dropped] = wait_for(
        "the dropped delivery", lambda: _completed_deliveries(stack, receiver, "drop") or None, 30
    )
    assert dropped["requests_sent"] == 0
    time.sleep(3)  # a wake-up would have resumed it by now: the receiver answers after resuming
    assert stack.api.flow_run(flow_run_id)["state_type"] == "PAUSED"
    assert f"job {job_id}: accepted" not in receiver.log()

    sweeper = start_watcher(stack, "watcher-sweeping", 1)
    started = time.monotonic()
    try:
        final = stack.api.wait_until_final(flow_run_id, timeout=180)
    finally:
        sweeper.stop()
    FIGURES["sweep_wake_to_final_seconds"] = round(time.monotonic() - started, 1)
    assert final["state_type"] == "COMPLETED", f"{final['state']}\n{stack.logs()}"
    assert "Resumed flow run" in sweeper.log.read_text()
    assert _jobs_created(stack) - before == 1
    assert final["labels"]["scenario.job_id"] == job_id
