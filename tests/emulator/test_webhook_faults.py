"""Delivery faults from the control plane (``/_emulator/webhooks/faults``): drop, duplicate, delay, out of
order and bad signature, each seen by a real receiver, and what the delivery log and stats say."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from prefect_scenario.emulator import RunningEmulator
from support.emulator import GENERATE_ROUTE, control, faults
from support.webhook_receiver import ReceivedRequest, WebhookReceiver, standard_webhooks_valid

from .webhook_support import create_endpoint, event, submit, wait_idle, wait_job, webhook_stats


def webhook_faults(emulator: RunningEmulator, *rules: dict[str, Any]) -> list[dict[str, Any]]:
    """``POST /_emulator/webhooks/faults``; the rules now pending."""
    return list(control(emulator, "POST", "webhooks/faults", list(rules)))


def job_of(request: ReceivedRequest) -> str:
    return str(request.json()["data"]["job"]["jobId"])


def test_drop_loses_the_delivery_while_the_log_says_delivered(
    api: httpx.Client, hooks: RunningEmulator, receiver: WebhookReceiver
) -> None:
    endpoint = create_endpoint(api, receiver.url, ["generation.created"])
    pending = webhook_faults(hooks, {"kind": "drop"})
    assert [(rule["kind"], rule["count"]) for rule in pending] == [("drop", 1)]
    assert pending[0]["id"].startswith("rule_")
    lost = submit(api)
    stats = wait_idle(hooks)
    assert receiver.received() == []
    assert (stats["dropped"], stats["requests_sent"], stats["faults_fired"]) == (1, 0, {"drop": 1})
    [view] = control(hooks, "GET", "webhooks/deliveries")
    assert (view["fault"], view["requests_sent"], view["status"]) == ("drop", 0, "success")
    detail = event(api, endpoint["id"], view["id"])
    assert detail["payload"]["data"]["job"]["jobId"] == lost
    assert [a["responseStatusCode"] for a in detail["attempts"]] == [200]
    assert control(hooks, "GET", "webhooks/faults") == []  # spent: the next one arrives
    kept = submit(api)
    assert [job_of(r) for r in receiver.wait_for(1)] == [kept]


def test_duplicate_sends_the_same_request_twice(
    api: httpx.Client, hooks: RunningEmulator, receiver: WebhookReceiver
) -> None:
    endpoint = create_endpoint(api, receiver.url, ["generation.created"])
    webhook_faults(hooks, {"kind": "duplicate"})
    submit(api)
    first, second = receiver.wait_for(2)
    stats = wait_idle(hooks)
    assert first.body == second.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.headers["webhook-signature"] == second.headers["webhook-signature"]
    assert standard_webhooks_valid(second, endpoint["secret"])
    detail = event(api, endpoint["id"], first.headers["webhook-id"])
    assert [a["responseStatusCode"] for a in detail["attempts"]] == [200, 200]
    assert (stats["requests_sent"], stats["deliveries"], stats["faults_fired"]) == (2, 1, {"duplicate": 1})
    time.sleep(0.2)
    assert len(receiver.received()) == 2


def test_delay_holds_the_first_request_for_its_seconds(
    api: httpx.Client, hooks: RunningEmulator, receiver: WebhookReceiver
) -> None:
    create_endpoint(api, receiver.url, ["generation.created"])
    webhook_faults(hooks, {"kind": "delay", "seconds": 0.5})
    started = time.monotonic()
    submit(api)
    [request] = receiver.wait_for(1)
    assert request.received_at - started >= 0.45


def test_a_long_delay_is_released_by_advancing_the_clock(
    api: httpx.Client, hooks: RunningEmulator, receiver: WebhookReceiver
) -> None:
    endpoint = create_endpoint(api, receiver.url, ["generation.created"])
    webhook_faults(hooks, {"kind": "delay", "seconds": 3600})
    submit(api)
    time.sleep(0.3)
    assert receiver.received() == []
    [view] = control(hooks, "GET", "webhooks/deliveries")
    assert (view["status"], view["fault"]) == ("created", "delay")
    assert event(api, endpoint["id"], view["id"])["attempts"] == []
    hooks.state.clock.advance(3600)
    [request] = receiver.wait_for(1)
    assert request.headers["webhook-id"] == view["id"]


def test_out_of_order_holds_the_next_deliveries_and_sends_them_reversed(
    api: httpx.Client, hooks: RunningEmulator, receiver: WebhookReceiver
) -> None:
    create_endpoint(api, receiver.url, ["generation.created"])
    webhook_faults(hooks, {"kind": "out_of_order", "count": 3, "event_type": "generation.created"})
    jobs = [submit(api), submit(api)]
    time.sleep(0.3)
    assert receiver.received() == []  # two held, waiting for the third
    jobs.append(submit(api))
    received = receiver.wait_for(3)
    assert [job_of(r) for r in received] == jobs[::-1]
    after = submit(api)  # the rule is spent: in order again
    assert job_of(receiver.wait_for(4)[-1]) == after
    assert webhook_stats(hooks)["faults_fired"] == {"out_of_order": 3}


def test_held_deliveries_go_when_the_hold_expires_or_the_rules_are_cleared(
    api: httpx.Client, hooks: RunningEmulator, receiver: WebhookReceiver
) -> None:
    create_endpoint(api, receiver.url, ["generation.created"])
    webhook_faults(hooks, {"kind": "out_of_order", "count": 10, "hold_seconds": 0.4})
    jobs = [submit(api), submit(api)]
    assert [job_of(r) for r in receiver.wait_for(2)] == jobs[::-1]  # after 0.4 s, not ten deliveries
    control(hooks, "DELETE", "webhooks/faults")
    webhook_faults(hooks, {"kind": "out_of_order", "count": 10, "hold_seconds": 3600})
    more = [submit(api), submit(api)]
    time.sleep(0.3)
    assert len(receiver.received()) == 2
    assert control(hooks, "DELETE", "webhooks/faults") == []
    assert [job_of(r) for r in receiver.wait_for(4)[2:]] == more[::-1]


def test_bad_signature_fails_verification_then_the_retry_is_signed_right(
    api: httpx.Client, hooks: RunningEmulator
) -> None:
    secret: dict[str, str] = {}

    def verify(request: ReceivedRequest) -> int:
        return 200 if standard_webhooks_valid(request, secret["value"]) else 401

    with WebhookReceiver(respond=verify) as receiver:
        endpoint = create_endpoint(api, receiver.url, ["generation.created"])
        secret["value"] = endpoint["secret"]
        webhook_faults(hooks, {"kind": "bad_signature"})
        submit(api)
        forged, genuine = receiver.wait_for(2)
        wait_idle(hooks)
    assert not standard_webhooks_valid(forged, endpoint["secret"])
    assert standard_webhooks_valid(genuine, endpoint["secret"])
    assert forged.body == genuine.body
    assert forged.headers["webhook-id"] == genuine.headers["webhook-id"]
    detail = event(api, endpoint["id"], forged.headers["webhook-id"])
    assert [a["responseStatusCode"] for a in detail["attempts"]] == [401, 200]
    assert detail["status"] == "success"


def test_a_rule_can_target_one_event_type(
    api: httpx.Client, hooks: RunningEmulator, receiver: WebhookReceiver
) -> None:
    create_endpoint(api, receiver.url, ["*"])
    webhook_faults(hooks, {"kind": "drop", "event_type": "generation.failed", "count": 2})
    job_id = submit(api)
    wait_job(api, job_id)
    stats = wait_idle(hooks)
    assert [r.json()["type"] for r in receiver.received()] == ["generation.created"]
    assert stats["dropped"] == 1
    [rule] = control(hooks, "GET", "webhooks/faults")
    assert (rule["event_type"], rule["count"]) == ("generation.failed", 1)


def test_request_faults_and_delivery_faults_stay_apart(
    api: httpx.Client, hooks: RunningEmulator, receiver: WebhookReceiver
) -> None:
    create_endpoint(api, receiver.url, ["generation.created"])
    faults(hooks, {"route": GENERATE_ROUTE, "kind": "status", "status": 503})
    assert api.post("generate/custom/model_runway-aleph-2", json={}).status_code == 503
    submit(api)
    assert len(receiver.wait_for(1)) == 1
    assert hooks.state.stats()["faults_fired"] == {"status": 1}
    assert webhook_stats(hooks)["faults_fired"] == {}


@pytest.mark.parametrize(
    "rule",
    [
        {"kind": "explode"},
        {"kind": "drop", "event_type": "job.done"},
        {"kind": "drop", "event_type": "*"},
        {"kind": "drop", "count": 0},
        {"kind": "delay", "seconds": -1},
        {"kind": "drop", "route": "POST /v1/uploads"},
        {"kind": "drop", "id": "rule_mine"},
    ],
)
def test_bad_delivery_fault_rules_are_refused(hooks: RunningEmulator, rule: dict[str, Any]) -> None:
    response = httpx.post(f"{hooks.control_url}/webhooks/faults", json=[rule])
    assert response.status_code == 400, response.text
    assert control(hooks, "GET", "webhooks/faults") == []


def test_reset_forgets_endpoints_deliveries_and_rules(
    api: httpx.Client, hooks: RunningEmulator, receiver: WebhookReceiver
) -> None:
    create_endpoint(api, receiver.url, ["generation.created"])
    webhook_faults(hooks, {"kind": "delay", "seconds": 3600})
    submit(api)
    control(hooks, "POST", "reset")
    stats = webhook_stats(hooks)
    assert (stats["endpoints"], stats["deliveries"], stats["deliveries_pending"], stats["idle"]) == (
        0,
        0,
        0,
        True,
    )
    assert control(hooks, "GET", "webhooks/faults") == []
    assert api.get("projects/proj_EmuLatorProject1234567/webhook-endpoints").json() == {
        "webhookEndpoints": []
    }
    hooks.state.clock.advance(3600)
    time.sleep(0.2)
    assert receiver.received() == []
