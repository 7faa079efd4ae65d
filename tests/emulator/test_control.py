"""The control plane, the injectable clock, ids and timestamps, and the library helpers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from prefect_scenario.emulator import (
    EmulatorClock,
    EmulatorConfig,
    EmulatorState,
    create_app,
    serve_in_thread,
)
from prefect_scenario.emulator.service.ids import new_id
from prefect_scenario.emulator.service.records import AssetRecord, CheckedBody
from prefect_scenario.models import ALEPH_MODEL_ID, JobEnvelope
from support.emulator import control_url
from support.wire import control

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def test_config_is_partially_updated_and_checked(asgi_client: httpx.AsyncClient) -> None:
    config = await control(asgi_client, "config", {"job_seconds": 5, "concurrency_ceiling": 3})
    assert (config["job_seconds"], config["concurrency_ceiling"], config["short_pages"]) == (5, 3, True)
    for bad in ({"job_seconds": -1}, {"no_such_setting": 1}, {"failure_rate": 2}):
        response = await asgi_client.post(control_url(asgi_client, "config"), json=bad)
        assert response.status_code == 400, bad
    assert (await asgi_client.get(control_url(asgi_client, "config"))).json()["job_seconds"] == 5


async def test_the_clock_only_moves_forward(asgi_client: httpx.AsyncClient) -> None:
    moved = await control(asgi_client, "clock", {"advance_seconds": 90})
    assert moved["offset_seconds"] == 90
    assert ISO_MS.match(moved["now"])
    response = await asgi_client.post(control_url(asgi_client, "clock"), json={"advance_seconds": -1})
    assert response.status_code == 400


async def test_an_injected_clock_dates_every_transition_exactly(tmp_path: Path, sample_clip: Path) -> None:
    now = [1_800_000_000.0]
    config = EmulatorConfig(job_seconds=10, queue_seconds=1, failure_rate=1.0)
    with EmulatorState(config, storage_dir=tmp_path, clock=EmulatorClock(lambda: now[0])) as state:
        state.add_asset(
            AssetRecord(
                id="asset_V",
                path=sample_clip,
                mime_type="video/mp4",
                kind="video",
                source="uploaded-video",
                properties={"size": 1, "duration": 4.0},
                created_at=0,
            )
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(state)), base_url="http://e/v1/", auth=("k", "s")
        ) as client:
            job_id = (
                await client.post(
                    f"generate/custom/{ALEPH_MODEL_ID}", json={"prompt": "x", "video": "asset_V"}
                )
            ).json()["job"]["jobId"]

            async def job() -> dict[str, object]:
                return dict((await client.get(f"jobs/{job_id}")).json()["job"])

            assert (await job())["status"] == "queued"
            now[0] += 5
            halfway = await job()
            assert (halfway["status"], halfway["progress"]) == ("in-progress", 0.5)
            now[0] += 100
            ended = JobEnvelope.model_validate({"job": await job()}).job
    assert [entry.status.value for entry in ended.status_history] == [
        "pending",
        "queued",
        "in-progress",
        "failure",
    ]
    assert [entry.date for entry in ended.status_history] == [
        "2027-01-15T08:00:00.000Z",
        "2027-01-15T08:00:00.000Z",
        "2027-01-15T08:00:01.000Z",
        "2027-01-15T08:00:10.000Z",
    ]
    assert ended.updated_at == "2027-01-15T08:00:10.000Z"
    assert ended.progress == 0.99


def test_ids_are_a_prefix_and_24_base58_characters() -> None:
    for prefix in ("job_", "asset_", "upload_"):
        assert re.fullmatch(prefix + r"[1-9A-HJ-NP-Za-km-z]{24}", new_id(prefix))


def test_serve_in_thread_binds_loopback_and_stops(tmp_path: Path) -> None:
    with EmulatorState(storage_dir=tmp_path) as state, serve_in_thread(state) as running:
        assert running.base_url == f"http://127.0.0.1:{running.port}/v1"
        assert running.root_url == f"http://127.0.0.1:{running.port}"
        assert httpx.get(f"{running.root_url}/_emulator/stats").json()["jobs_created"] == 0
        port = running.port
    try:
        httpx.get(f"http://127.0.0.1:{port}/_emulator/stats", timeout=1)
    except httpx.ConnectError:
        pass
    else:
        raise AssertionError("the emulator still answers after the with block")


def test_checked_body_is_what_pricing_reads() -> None:
    # A guard for the public shape others may rely on when pricing bodies themselves.
    checked = CheckedBody(model_id=ALEPH_MODEL_ID, body={}, video_asset_id="asset_V", video_seconds=4.0)
    assert checked.video_seconds == 4.0


def test_stats_count_the_connections_clients_used(live_emulator: Any) -> None:
    # One keep-alive client, five requests: one connection. Two more clients: one connection each.
    url = f"{live_emulator.base_url}/models/{ALEPH_MODEL_ID}"
    with httpx.Client(auth=("reader", "reader")) as client:
        for _ in range(5):
            assert client.get(url).status_code == 200
    for _ in range(2):
        with httpx.Client(auth=("reader", "reader")) as client:
            assert client.get(url).status_code == 200
    counters = live_emulator.state.stats()
    assert counters["requests"]["GET /v1/models/{modelId}"] == 7
    assert counters["connections"] == 3
    live_emulator.state.reset()
    assert live_emulator.state.stats()["connections"] == 0
