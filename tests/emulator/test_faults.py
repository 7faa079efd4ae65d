"""Each fault kind, at the HTTP level, over the live loopback server (and the drop under ASGI too)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from prefect_scenario.emulator import ConnectionDropped, EmulatorState, FaultRule, RunningEmulator
from prefect_scenario.models import ALEPH_MODEL_ID, VIDEO_LAYERS_MODEL_ID
from support.emulator import control_url
from support.wire import control, stats, submit, upload_video, wait_job

GENERATE = "POST /v1/generate/custom/{modelId}"
GET_JOB = "GET /v1/jobs/{jobId}"
GET_FILE = "GET /files/{assetId}"


@pytest.fixture
async def live_client(live_emulator: RunningEmulator) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the live emulator's ``/v1`` over real loopback HTTP."""
    async with httpx.AsyncClient(
        base_url=live_emulator.base_url + "/", auth=("key", "secret"), timeout=10
    ) as client:
        yield client


async def add_faults(client: httpx.AsyncClient, *rules: dict[str, object]) -> list[dict[str, object]]:
    return list(await control(client, "faults", list(rules)))


async def test_status_fault_answers_with_retry_after_and_an_error_body(
    live_client: httpx.AsyncClient,
) -> None:
    await add_faults(
        live_client, {"route": GET_JOB, "kind": "status", "status": 503, "retry_after": 2, "count": 2}
    )
    for _ in range(2):
        response = await live_client.get("jobs/job_whatever")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "2"
        assert response.headers["content-type"] == "application/json"
        assert "503" in response.json()["reason"]
        assert response.json()["traceId"]
    # The rule is spent: the route answers for real again (404 for an unknown job).
    assert (await live_client.get("jobs/job_whatever")).status_code == 404
    assert (await stats(live_client))["faults_fired"] == {"status": 2}


async def test_a_429_fault_can_carry_details(live_client: httpx.AsyncClient) -> None:
    details = {"actionName": "parallel-custom-jobs", "actionLimit": 2}
    await add_faults(live_client, {"route": GENERATE, "kind": "status", "status": 429, "details": details})
    response = await submit(live_client, ALEPH_MODEL_ID, {})
    assert response.status_code == 429
    assert response.json()["details"] == details
    assert (await stats(live_client))["jobs_created"] == 0


async def test_reset_drops_the_connection_without_doing_the_work(
    live_client: httpx.AsyncClient, live_emulator: RunningEmulator, sample_clip: Path
) -> None:
    video_id = await upload_video(live_client, sample_clip)
    await add_faults(live_client, {"route": GENERATE, "kind": "reset"})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await submit(
            live_client, VIDEO_LAYERS_MODEL_ID, {"video": video_id, "separationInstruction": "apart"}
        )
    assert (await stats(live_client))["jobs_created"] == 0
    assert (await stats(live_client))["requests"][GENERATE] == 1


async def test_reset_after_accept_creates_the_job_but_never_answers(
    live_client: httpx.AsyncClient, live_emulator: RunningEmulator, sample_clip: Path
) -> None:
    live_emulator.state.configure(failure_rate=1.0)  # the job need not run its model here
    video_id = await upload_video(live_client, sample_clip)
    await add_faults(live_client, {"route": GENERATE, "kind": "reset_after_accept"})
    body = {"video": video_id, "separationInstruction": "the ambiguous case"}
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await submit(live_client, VIDEO_LAYERS_MODEL_ID, body)
    assert (await stats(live_client))["jobs_created"] == 1
    # The job exists and is findable by its input: what a reconciling client looks for.
    listed = (await live_client.get("jobs", params={"pageSize": 100})).json()["jobs"]
    customs = [job for job in listed if job["jobType"] == "custom"]
    assert [job["metadata"]["input"] for job in customs] == [{**body, "modelId": VIDEO_LAYERS_MODEL_ID}]


async def test_delay_holds_the_answer(live_client: httpx.AsyncClient) -> None:
    await add_faults(live_client, {"route": "GET /v1/models/{modelId}", "kind": "delay", "seconds": 0.4})
    started = time.monotonic()
    response = await live_client.get(f"models/{ALEPH_MODEL_ID}")
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    await live_client.get(f"models/{ALEPH_MODEL_ID}")
    assert time.monotonic() - started < 0.4


async def _read_raw(response: httpx.Response, received: list[int]) -> None:
    async for chunk in response.aiter_raw():
        received.append(len(chunk))


async def test_truncate_announces_the_full_length_and_sends_less(
    live_client: httpx.AsyncClient, sample_clip: Path, sample_clip_bytes: bytes
) -> None:
    video_id = await upload_video(live_client, sample_clip)
    url = (await live_client.get(f"assets/{video_id}")).json()["asset"]["url"]
    await add_faults(live_client, {"route": GET_FILE, "kind": "truncate", "keep_fraction": 0.25})
    received: list[int] = []
    async with httpx.AsyncClient() as plain, plain.stream("GET", url) as response:
        announced = int(response.headers["content-length"])
        with pytest.raises(httpx.RemoteProtocolError):
            await _read_raw(response, received)
    assert announced == len(sample_clip_bytes)
    assert 0 < sum(received) < announced
    # The next download is whole.
    async with httpx.AsyncClient() as plain:
        assert (await plain.get(url)).content == sample_clip_bytes


async def test_fail_job_fails_the_next_jobs_with_an_error_and_a_hint(
    live_client: httpx.AsyncClient, sample_clip: Path
) -> None:
    video_id = await upload_video(live_client, sample_clip)
    await add_faults(
        live_client, {"route": GENERATE, "kind": "fail_job", "count": 1, "hint": "Try again later"}
    )
    listed = (await live_client.get(control_url(live_client, "faults"))).json()
    assert listed == [
        {
            "route": GENERATE,
            "kind": "fail_job",
            "count": 1,
            "probability": 1.0,
            "status": 503,
            "seconds": 1.0,
            "keep_fraction": 0.5,
            "hint": "Try again later",
        }
    ]
    body = {"video": video_id, "separationInstruction": "apart", "maxLayers": 1}
    failed = await wait_job(
        live_client, (await submit(live_client, VIDEO_LAYERS_MODEL_ID, body)).json()["job"]["jobId"]
    )
    assert failed["status"] == "failure"
    assert failed["metadata"]["error"] == "Generation failed on the provider side"
    assert failed["metadata"]["hint"] == "Try again later"
    assert failed["metadata"]["assetIds"] == []
    assert failed["progress"] < 1
    assert (await live_client.get(control_url(live_client, "faults"))).json() == []
    passed = await wait_job(
        live_client, (await submit(live_client, VIDEO_LAYERS_MODEL_ID, body)).json()["job"]["jobId"]
    )
    assert passed["status"] == "success"


async def test_failure_rate_fails_jobs_with_a_hint(
    live_client: httpx.AsyncClient, live_emulator: RunningEmulator, sample_clip: Path
) -> None:
    video_id = await upload_video(live_client, sample_clip)
    await control(live_client, "config", {"failure_rate": 1.0})
    job = await wait_job(
        live_client,
        (await submit(live_client, ALEPH_MODEL_ID, {"prompt": "x", "video": video_id})).json()["job"][
            "jobId"
        ],
    )
    assert job["status"] == "failure"
    assert job["metadata"]["hint"]
    assert (await stats(live_client))["jobs_failed_by_faults"] == 1


async def test_bad_fault_rules_are_refused(live_client: httpx.AsyncClient) -> None:
    for rule in (
        {"route": GENERATE, "kind": "explode"},
        {"route": "generate", "kind": "reset"},
        {"route": GENERATE, "kind": "reset", "count": 0},
    ):
        response = await live_client.post(control_url(live_client, "faults"), json=[rule])
        assert response.status_code == 400, rule
    assert (await live_client.get(control_url(live_client, "faults"))).json() == []


async def test_faults_can_be_cleared(live_client: httpx.AsyncClient) -> None:
    await add_faults(live_client, {"route": "*", "kind": "status", "count": 5})
    assert (await live_client.delete(control_url(live_client, "faults"))).json() == []
    assert (await live_client.get(f"models/{ALEPH_MODEL_ID}")).status_code == 200


async def test_a_drop_under_asgi_is_a_transport_error_too(
    asgi_client: httpx.AsyncClient, emulator_state: EmulatorState
) -> None:
    emulator_state.add_faults(
        [FaultRule(route=GET_JOB, kind="reset"), FaultRule(route=GET_JOB, kind="reset_after_accept")]
    )
    for _ in range(2):
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await asgi_client.get("jobs/job_x")
        assert isinstance(caught.value, ConnectionDropped)
    assert (await asgi_client.get("jobs/job_x")).status_code == 404


async def _wait_for_stat(client: httpx.AsyncClient, name: str, value: int, timeout: float = 10.0) -> int:
    """Poll ``/_emulator/stats`` until ``name`` reaches ``value`` (or the timeout); returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        seen = int((await stats(client))[name])
        if seen >= value or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.05)


async def test_a_delayed_generate_completes_after_the_client_gave_up(
    live_client: httpx.AsyncClient, live_emulator: RunningEmulator, sample_clip: Path
) -> None:
    live_emulator.state.configure(failure_rate=1.0)  # the job need not run its model here
    video_id = await upload_video(live_client, sample_clip)
    await add_faults(live_client, {"route": GENERATE, "kind": "delay", "seconds": 2.0})
    body = {"video": video_id, "separationInstruction": "the client is gone"}
    # The client stops waiting long before the answer and closes its connection, as a client with
    # a short read timeout does: a real server still completes the request it had received.
    with pytest.raises(httpx.ReadTimeout):
        await live_client.post(
            f"generate/custom/{VIDEO_LAYERS_MODEL_ID}", json=body, timeout=httpx.Timeout(10, read=0.3)
        )
    assert await _wait_for_stat(live_client, "jobs_created", 1) == 1
    listed = (await live_client.get("jobs", params={"pageSize": 100})).json()["jobs"]
    customs = [job for job in listed if job["jobType"] == "custom"]
    assert [job["metadata"]["input"] for job in customs] == [{**body, "modelId": VIDEO_LAYERS_MODEL_ID}]


async def test_a_delay_can_abandon_the_request_when_the_client_is_gone(
    live_client: httpx.AsyncClient, live_emulator: RunningEmulator, sample_clip: Path
) -> None:
    live_emulator.state.configure(failure_rate=1.0)
    video_id = await upload_video(live_client, sample_clip)
    await add_faults(
        live_client,
        {"route": GENERATE, "kind": "delay", "seconds": 0.6, "complete_after_disconnect": False},
    )
    body = {"video": video_id, "separationInstruction": "the server gives up too"}
    with pytest.raises(httpx.ReadTimeout):
        await live_client.post(
            f"generate/custom/{VIDEO_LAYERS_MODEL_ID}", json=body, timeout=httpx.Timeout(10, read=0.2)
        )
    await asyncio.sleep(1.2)  # past the delay: an abandoned request has had time to do its work
    assert (await stats(live_client))["jobs_created"] == 0
    # A client that stays gets its job: the rule only abandons the requests whose client left.
    await add_faults(
        live_client,
        {"route": GENERATE, "kind": "delay", "seconds": 0.1, "complete_after_disconnect": False},
    )
    assert (await submit(live_client, VIDEO_LAYERS_MODEL_ID, body)).status_code == 200
    assert (await stats(live_client))["jobs_created"] == 1


async def test_a_delayed_generate_completes_when_the_caller_is_cancelled_under_asgi(
    asgi_client: httpx.AsyncClient, emulator_state: EmulatorState, sample_clip: Path
) -> None:
    emulator_state.configure(failure_rate=1.0)
    video_id = await upload_video(asgi_client, sample_clip)
    emulator_state.add_faults([FaultRule(route=GENERATE, kind="delay", seconds=0.5)])
    body = {"video": video_id, "separationInstruction": "cancelled caller"}
    # Under ASGITransport the app runs in the caller's task: cancelling it is how the client leaves.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(submit(asgi_client, VIDEO_LAYERS_MODEL_ID, body), timeout=0.1)
    assert await _wait_for_stat(asgi_client, "jobs_created", 1) == 1


async def test_a_rule_with_a_probability_fires_on_that_share_of_requests(
    live_client: httpx.AsyncClient,
) -> None:
    """For soaks: ~25 % of matching requests get the fault, the others are served for real."""
    await add_faults(
        live_client, {"route": GET_JOB, "kind": "status", "status": 503, "count": 1000, "probability": 0.25}
    )
    codes = [(await live_client.get("jobs/job_whatever")).status_code for _ in range(200)]
    faulted = codes.count(503)
    assert codes.count(404) == 200 - faulted
    assert 25 <= faulted <= 75, faulted
    assert (await stats(live_client))["faults_fired"] == {"status": faulted}
    [rule] = (await live_client.get(control_url(live_client, "faults"))).json()
    assert rule["count"] == 1000 - faulted
