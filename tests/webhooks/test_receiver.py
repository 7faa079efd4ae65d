"""The receiver over ASGI: 401 for forgeries and replays, one hint per delivery, 503 keeps retries."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.routing import Mount

from prefect_scenario.errors import ScenarioConfigError
from prefect_scenario.webhooks import (
    HmacSha256Hex,
    JobHint,
    SeenDeliveries,
    StandardWebhooks,
    create_webhook_app,
    job_id_of,
)

NOW = 1_767_000_000
SECRET = SecretStr("whsec_" + base64.b64encode(b"canary-webhook-key-5e1f").decode())
WRONG = SecretStr("whsec_" + base64.b64encode(b"somebody else's key").decode())
SCHEME = StandardWebhooks(tolerance_seconds=300, clock=lambda: NOW)


def payload(
    delivery_id: str = "dlv_1", event_type: str | None = "generation.completed", job_id: str | None = "job_1"
) -> dict[str, Any]:
    """What the emulator sends: ``{id, type, createdAt, data: {job}}``."""
    body: dict[str, Any] = {"id": delivery_id, "createdAt": "2026-01-10T09:00:00.000Z", "data": {}}
    if event_type is not None:
        body["type"] = event_type
    if job_id is not None:
        body["data"]["job"] = {"jobId": job_id, "status": "success"}
    return body


def signed(
    body: dict[str, Any] | bytes,
    delivery_id: str = "dlv_1",
    *,
    secret: SecretStr = SECRET,
    timestamp: int = NOW,
) -> tuple[bytes, dict[str, str]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = SCHEME.sign(secret, raw, delivery_id=delivery_id, timestamp=timestamp)
    return raw, {**headers, "content-type": "application/json"}


class Hints:
    """The injected wake-up: records hints, fails the first ``failures`` calls, may hold calls open."""

    def __init__(self, failures: int = 0) -> None:
        self.calls: list[JobHint] = []
        self.failures = failures
        self.gate: asyncio.Event | None = None
        self.called = asyncio.Event()

    async def __call__(self, hint: JobHint) -> None:
        self.calls.append(hint)
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("the Prefect API is down")


@pytest.fixture
def hints() -> Hints:
    return Hints()


@pytest.fixture
async def post(hints: Hints) -> AsyncIterator[Any]:
    app = create_webhook_app(SECRET, hints, scheme=SCHEME)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://receiver"
    ) as client:

        async def send(raw: bytes, headers: dict[str, str], path: str = "/") -> httpx.Response:
            return await client.post(path, content=raw, headers=headers)

        yield send


async def test_a_valid_delivery_hands_on_one_hint(post: Any, hints: Hints) -> None:
    response = await post(*signed(payload()))
    assert response.status_code == 200
    assert response.json() == {"status": "accepted", "deliveryId": "dlv_1", "jobId": "job_1"}
    assert hints.calls == [JobHint(job_id="job_1", event_type="generation.completed", delivery_id="dlv_1")]


@pytest.mark.parametrize(
    ("headers_of", "reason"),
    [
        (lambda raw: signed(raw, secret=WRONG)[1], "signature does not match"),
        (lambda raw: signed(b'{"id": "dlv_1", "tampered": true}')[1], "signature does not match"),
        (lambda raw: signed(raw, timestamp=NOW - 301)[1], "timestamp outside tolerance"),
        (lambda raw: signed(raw, timestamp=NOW + 301)[1], "timestamp outside tolerance"),
        (lambda raw: {"content-type": "application/json"}, "missing signature headers"),
    ],
    ids=["wrong-key", "tampered-body", "stale", "future", "unsigned"],
)
async def test_forged_or_stale_deliveries_get_401_and_no_hint(
    post: Any, hints: Hints, headers_of: Any, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    raw = json.dumps(payload()).encode()
    headers = headers_of(raw)
    with caplog.at_level(logging.DEBUG, logger="prefect_scenario"):
        response = await post(raw, headers)
    assert response.status_code == 401
    assert response.json() == {"status": "refused", "reason": reason}
    assert hints.calls == []
    text = response.text + caplog.text
    assert SECRET.get_secret_value() not in text
    assert SECRET.get_secret_value().removeprefix("whsec_") not in text
    if "webhook-signature" in headers:
        assert headers["webhook-signature"][3:] not in text
    # A refused delivery is not remembered: the genuine one with that id is still handled.
    assert (await post(*signed(payload()))).json()["status"] == "accepted"


async def test_a_duplicate_answers_200_without_a_second_hint(post: Any, hints: Hints) -> None:
    first = await post(*signed(payload()))
    again = await post(*signed(payload(), timestamp=NOW + 60))  # a redelivery is signed anew
    assert first.json()["status"] == "accepted"
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "deliveryId": "dlv_1"}
    assert len(hints.calls) == 1
    assert (await post(*signed(payload("dlv_2"), "dlv_2"))).json()["status"] == "accepted"
    assert [hint.delivery_id for hint in hints.calls] == ["dlv_1", "dlv_2"]


async def test_a_failing_wake_up_answers_503_and_the_retry_is_handled(
    post: Any, hints: Hints, caplog: pytest.LogCaptureFixture
) -> None:
    hints.failures = 1
    with caplog.at_level(logging.INFO, logger="prefect_scenario.webhooks"):
        failed = await post(*signed(payload()))
        retried = await post(*signed(payload()))
        after = await post(*signed(payload()))
    assert failed.status_code == 503
    assert "the Prefect API is down" not in failed.text  # the wake-up's error stays in the log
    assert retried.status_code == 200
    assert retried.json()["status"] == "accepted"
    assert after.json()["status"] == "duplicate"
    assert len(hints.calls) == 2
    assert "the wake-up failed" in caplog.text


async def test_a_retry_arriving_while_the_first_is_handled_waits_for_its_outcome(
    post: Any, hints: Hints
) -> None:
    hints.gate = asyncio.Event()
    first = asyncio.ensure_future(post(*signed(payload())))
    await asyncio.wait_for(hints.called.wait(), 10)
    second = asyncio.ensure_future(post(*signed(payload())))
    await asyncio.sleep(0.05)
    assert not second.done()  # held until the first outcome is known
    hints.gate.set()
    assert (await first).json()["status"] == "accepted"
    assert (await second).json()["status"] == "duplicate"
    assert len(hints.calls) == 1


async def test_a_retry_in_flight_with_a_failing_first_gets_503_too(post: Any, hints: Hints) -> None:
    hints.gate = asyncio.Event()
    hints.failures = 1
    first = asyncio.ensure_future(post(*signed(payload())))
    await asyncio.wait_for(hints.called.wait(), 10)
    second = asyncio.ensure_future(post(*signed(payload())))
    await asyncio.sleep(0.05)
    hints.gate.set()
    assert (await first).status_code == 503
    assert (await second).status_code == 503
    assert (await post(*signed(payload()))).json()["status"] == "accepted"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (payload(event_type="generation.created"), "event type generation.created is not acted on"),
        (payload(event_type="team.credit.threshold.crossed", job_id=None), "not acted on"),
        (payload(job_id=None), "no job id in the payload"),
    ],
)
async def test_verified_deliveries_without_a_job_to_look_at_are_ignored(
    post: Any, hints: Hints, body: Any, reason: str
) -> None:
    response = await post(*signed(body))
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert reason in response.json()["reason"]
    assert hints.calls == []


@pytest.mark.parametrize("body", [b"not json at all", b'["job_1"]', b'"job_1"', b"\xff\xfe"])
async def test_a_signed_body_that_is_not_a_json_object_is_refused_400_and_wakes_nothing(
    post: Any, hints: Hints, body: bytes
) -> None:
    response = await post(*signed(body))
    assert response.status_code == 400
    assert response.json() == {"status": "refused", "reason": "the body is not a JSON object"}
    assert hints.calls == []


@pytest.mark.parametrize(
    "body",
    [
        {"type": "generation.failed", "data": {"job": {"jobId": "job_x"}}},
        {"type": "generation.failed", "data": {"jobId": "job_x"}},
        {"type": "generation.failed", "job": {"jobId": "job_x", "status": "failure"}},
        {"type": "generation.failed", "jobId": "job_x"},
    ],
    ids=["data.job.jobId", "data.jobId", "job.jobId", "jobId"],
)
async def test_the_job_id_is_found_at_each_plausible_place(post: Any, hints: Hints, body: Any) -> None:
    assert (await post(*signed(body, "dlv_9"))).json()["status"] == "accepted"
    assert hints.calls == [JobHint(job_id="job_x", event_type="generation.failed", delivery_id="dlv_9")]


async def test_a_payload_without_a_type_is_still_a_hint(post: Any, hints: Hints) -> None:
    assert (await post(*signed({"jobId": "job_7"}, "dlv_7"))).json()["status"] == "accepted"
    assert hints.calls == [JobHint(job_id="job_7", event_type=None, delivery_id="dlv_7")]


def test_job_id_of_prefers_the_most_specific_place() -> None:
    assert job_id_of({"jobId": "job_outer", "data": {"job": {"jobId": "job_inner"}}}) == "job_inner"
    assert job_id_of({"data": {"job": {"jobId": ""}}, "jobId": "job_2"}) == "job_2"
    assert job_id_of({"data": "job_1"}) is None
    assert job_id_of(None) is None


async def test_logs_name_the_delivery_type_and_job_and_never_the_secret(
    post: Any, caplog: pytest.LogCaptureFixture
) -> None:
    raw, headers = signed(payload("dlv_log", job_id="job_log"), "dlv_log")
    with caplog.at_level(logging.DEBUG, logger="prefect_scenario"):
        await post(raw, headers)
    (record,) = [r for r in caplog.records if r.name == "prefect_scenario.webhooks"]
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert "dlv_log" in message
    assert "generation.completed" in message
    assert "job_log" in message
    assert SECRET.get_secret_value() not in caplog.text
    assert headers["webhook-signature"][3:] not in caplog.text


async def test_hex_scheme_dedupes_by_the_payload_id() -> None:
    hints = Hints()
    scheme = HmacSha256Hex()
    app = create_webhook_app(SECRET, hints, scheme=scheme)
    raw = json.dumps(payload("dlv_hex")).encode()
    good = {"x-scenario-signature": scheme.signature(SECRET, raw)}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as client:
        first = await client.post("/", content=raw, headers=good)
        again = await client.post("/", content=raw, headers=good)
        forged = await client.post("/", content=raw, headers={"x-scenario-signature": "00" * 32})
    assert first.json() == {"status": "accepted", "deliveryId": "dlv_hex", "jobId": "job_1"}
    assert again.json()["status"] == "duplicate"
    assert forged.status_code == 401
    assert hints.calls == [JobHint(job_id="job_1", event_type="generation.completed", delivery_id="dlv_hex")]


async def test_mounted_under_a_path_with_health_and_size_limit() -> None:
    hints = Hints()
    receiver = create_webhook_app(SECRET, hints, scheme=SCHEME, max_body_bytes=2048)
    outer = Starlette(routes=[Mount("/hooks/scenario", app=receiver)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=outer), base_url="http://r") as client:
        health = await client.get("/hooks/scenario/healthz")
        raw, headers = signed(payload())
        accepted = await client.post("/hooks/scenario/", content=raw, headers=headers)
        big_raw, big_headers = signed({**payload("dlv_big"), "pad": "x" * 4096}, "dlv_big")
        too_big = await client.post("/hooks/scenario/", content=big_raw, headers=big_headers)
        wrong_method = await client.get("/hooks/scenario/")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert accepted.json()["status"] == "accepted"
    assert too_big.status_code == 413
    assert wrong_method.status_code == 405
    assert [hint.delivery_id for hint in hints.calls] == ["dlv_1"]
    assert receiver.state.seen is not None


def test_a_secret_the_scheme_cannot_use_fails_at_creation(hints: Hints) -> None:
    with pytest.raises(ScenarioConfigError, match="Standard Webhooks secret"):
        create_webhook_app(SecretStr("plain-text-secret!"), hints)


def test_seen_deliveries_forget_by_age_and_by_count() -> None:
    now = [0.0]
    seen = SeenDeliveries(max_entries=3, ttl_seconds=10, clock=lambda: now[0])
    for name in ("a", "b", "c"):
        seen.add(name)
    assert all(name in seen for name in "abc")
    seen.add("d")  # over the bound: the oldest goes
    assert "a" not in seen
    assert len(seen) == 3
    now[0] = 5.0
    seen.add("b")  # seen again: remembered from now
    now[0] = 10.5
    assert "c" not in seen
    assert "d" not in seen
    assert "b" in seen
    now[0] = 15.5
    assert len(seen) == 0
    with pytest.raises(ValueError, match="max_entries"):
        SeenDeliveries(max_entries=0)
