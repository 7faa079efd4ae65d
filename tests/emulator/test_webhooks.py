"""Webhooks: endpoint CRUD through the vendor's SDK (strict), signed deliveries of job events to a real
receiver, retries and the delivery log, signature schemes, and the emulator's threads and secrets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
import scenario_sdk
from scenario_sdk import Scenario

from prefect_scenario.emulator import EmulatorState, RunningEmulator, create_app
from support.emulator import GENERATE_ROUTE, faults
from support.net import free_port
from support.webhook_receiver import WebhookReceiver, hex_hmac_valid, standard_webhooks_valid

from .webhook_support import (
    PROJECT,
    SECRET_PATTERN,
    create_endpoint,
    event,
    submit,
    wait_idle,
    wait_job,
    webhook_stats,
)

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# -- endpoint management, through the SDK ------------------------------------------------------


def test_the_sdk_manages_project_endpoints_in_strict_mode(
    sdk: Scenario, api: httpx.Client, receiver: WebhookReceiver
) -> None:
    endpoints = sdk.projects.webhook_endpoints
    created = endpoints.create(
        PROJECT,
        url=f"{receiver.url}/hooks",
        enabled_events=["generation.completed", "generation.failed"],
        description="flows wake up",
    ).webhook_endpoint
    assert re.fullmatch(SECRET_PATTERN, created.secret)
    assert len(base64.b64decode(created.secret.removeprefix("whsec_"))) == 24
    assert created.id.startswith("webhook_")
    assert (created.owner_type, created.owner_id, created.enabled) == ("project", PROJECT, True)
    assert created.enabled_events == ["generation.completed", "generation.failed"]
    assert (created.nb_total_calls, created.nb_failed_calls) == (0, 0)
    assert created.description == "flows wake up"
    assert ISO_MS.match(created.created_at)
    assert created.updated_at == created.created_at

    listed = endpoints.list(PROJECT).webhook_endpoints
    assert [endpoint.id for endpoint in listed] == [created.id]
    assert listed[0].url == f"{receiver.url}/hooks"
    # The secret comes back once: never in a listing or an update.
    raw_list = api.get(f"projects/{PROJECT}/webhook-endpoints").text
    assert "secret" not in raw_list
    assert created.secret not in raw_list

    time.sleep(0.002)  # a later millisecond, so updatedAt moves
    updated = endpoints.update(
        created.id,
        project_id=PROJECT,
        enabled=False,
        enabled_events=["*"],
        url=f"{receiver.url}/v2",
        description="paused",
    ).webhook_endpoint
    assert (updated.enabled, updated.enabled_events, updated.url, updated.description) == (
        False,
        ["*"],
        f"{receiver.url}/v2",
        "paused",
    )
    assert updated.created_at == created.created_at
    assert updated.updated_at > created.updated_at
    raw_update = api.put(f"projects/{PROJECT}/webhook-endpoints/{created.id}", json={"enabled": True})
    assert raw_update.status_code == 200
    assert "secret" not in raw_update.json()["webhookEndpoint"]
    assert raw_update.json()["webhookEndpoint"]["enabledEvents"] == ["*"]  # the rest unchanged

    events = endpoints.events.list(created.id, project_id=PROJECT)
    assert (events.items, events.next_pagination_token) == ([], None)
    assert endpoints.list("proj_someoneElse").webhook_endpoints == []

    assert endpoints.delete(created.id, project_id=PROJECT) == {}
    assert endpoints.list(PROJECT).webhook_endpoints == []
    with pytest.raises(scenario_sdk.NotFoundError):
        endpoints.update(created.id, project_id=PROJECT, enabled=True)
    with pytest.raises(scenario_sdk.NotFoundError):
        endpoints.delete(created.id, project_id=PROJECT)


def test_team_endpoints_have_the_same_shapes_and_are_kept_apart(
    sdk: Scenario, receiver: WebhookReceiver
) -> None:
    team = sdk.teams.webhook_endpoints.create(
        "team_Alerts", url=receiver.url, enabled_events=["team.credit.threshold.crossed"]
    ).webhook_endpoint
    assert (team.owner_type, team.owner_id) == ("team", "team_Alerts")
    assert re.fullmatch(SECRET_PATTERN, team.secret)
    assert [e.id for e in sdk.teams.webhook_endpoints.list("team_Alerts").webhook_endpoints] == [team.id]
    assert sdk.projects.webhook_endpoints.list(PROJECT).webhook_endpoints == []
    # Under another owner the endpoint does not exist.
    with pytest.raises(scenario_sdk.NotFoundError):
        sdk.projects.webhook_endpoints.events.list(team.id, project_id=PROJECT)
    updated = sdk.teams.webhook_endpoints.update(team.id, team_id="team_Alerts", enabled=False)
    assert updated.webhook_endpoint.enabled is False
    assert sdk.teams.webhook_endpoints.events.list(team.id, team_id="team_Alerts").items == []
    sdk.teams.webhook_endpoints.delete(team.id, team_id="team_Alerts")
    assert sdk.teams.webhook_endpoints.list("team_Alerts").webhook_endpoints == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "/relative/path", "enabledEvents": ["*"]}, "url"),
        ({"url": "ftp://hooks.example.com/x", "enabledEvents": ["*"]}, "url"),
        ({"url": "https://", "enabledEvents": ["*"]}, "url"),
        ({"enabledEvents": ["*"]}, "url"),
        ({"url": "https://hooks.example.com"}, "enabledEvents"),
        ({"url": "https://hooks.example.com", "enabledEvents": []}, "enabledEvents"),
        ({"url": "https://hooks.example.com", "enabledEvents": ["job.done"]}, "enabledEvents[0]"),
        ({"url": "https://hooks.example.com", "enabledEvents": ["*"], "secret": "mine"}, "secret"),
        ({"url": "https://hooks.example.com", "enabledEvents": ["*"], "description": 3}, "description"),
    ],
)
def test_bad_endpoint_bodies_are_refused_naming_the_field(
    api: httpx.Client, body: dict[str, object], field: str
) -> None:
    response = api.post(f"projects/{PROJECT}/webhook-endpoints", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["details"]["field"] == field
    assert response.json()["traceId"]
    assert api.get(f"projects/{PROJECT}/webhook-endpoints").json() == {"webhookEndpoints": []}


def test_auth_and_unknown_ids_answer_as_the_rest_of_the_api(
    api: httpx.Client, hooks: RunningEmulator, receiver: WebhookReceiver
) -> None:
    anonymous = httpx.get(f"{hooks.base_url}/projects/{PROJECT}/webhook-endpoints")
    assert anonymous.status_code == 401
    assert anonymous.json()["reason"].startswith("Unauthorized")
    endpoint = create_endpoint(api, receiver.url, ["*"])
    bad_update = api.put(f"projects/{PROJECT}/webhook-endpoints/{endpoint['id']}", json={"enabled": "yes"})
    assert (bad_update.status_code, bad_update.json()["details"]["field"]) == (400, "enabled")
    missing = api.get(f"projects/{PROJECT}/webhook-endpoints/webhook_Nope/events")
    assert (missing.status_code, missing.json()["reason"]) == (404, "Webhook endpoint webhook_Nope not found")
    no_event = api.get(f"projects/{PROJECT}/webhook-endpoints/{endpoint['id']}/events/event_Nope")
    assert (no_event.status_code, no_event.json()["reason"]) == (404, "Webhook event event_Nope not found")
    assert api.delete(f"projects/{PROJECT}/webhook-endpoints/{endpoint['id']}").json() == {}
    # Requests are counted by route template, for stats and fault rules alike.
    requests = hooks.state.stats()["requests"]
    assert requests["POST /v1/projects/{projectId}/webhook-endpoints"] == 1
    assert requests["DELETE /v1/projects/{projectId}/webhook-endpoints/{webhookEndpointId}"] == 1


# -- deliveries of job events --------------------------------------------------------------------


def test_a_job_that_succeeds_is_delivered_signed_with_the_job_as_get_returns_it(
    sdk: Scenario, api: httpx.Client, hooks: RunningEmulator, receiver: WebhookReceiver
) -> None:
    hooks.state.configure(failure_rate=0.0)  # this job runs its model and succeeds
    endpoint = sdk.projects.webhook_endpoints.create(
        PROJECT, url=f"{receiver.url}/scenario", enabled_events=["generation.created", "generation.completed"]
    ).webhook_endpoint
    job_id = submit(api, layers=True)
    job = wait_job(api, job_id)
    assert job["status"] == "success"
    created, completed = receiver.wait_for(2)
    wait_idle(hooks)

    for request in (created, completed):
        assert request.path == "/scenario"
        assert request.headers["content-type"] == "application/json"
        assert standard_webhooks_valid(request, endpoint.secret)
        assert not standard_webhooks_valid(request, "whsec_" + base64.b64encode(b"x" * 24).decode())
        body = request.json()
        assert set(body) == {"id", "type", "createdAt", "data"}
        assert request.headers["webhook-id"] == body["id"]
        assert body["id"].startswith("event_")
        assert ISO_MS.match(body["createdAt"])
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 30
    assert created.json()["type"] == "generation.created"
    assert created.json()["data"]["job"]["jobId"] == job_id
    assert created.json()["data"]["job"]["status"] == "queued"
    assert completed.json()["type"] == "generation.completed"
    # Exactly GET /jobs/{jobId}'s "job", output assets included.
    assert completed.json()["data"]["job"] == api.get(f"jobs/{job_id}").json()["job"]
    assert completed.json()["data"]["job"]["metadata"]["assetIds"]

    # The delivery log, through the SDK's own models.
    items = sdk.projects.webhook_endpoints.events.list(endpoint.id, project_id=PROJECT).items
    assert [(item.type, item.status) for item in items] == [
        ("generation.completed", "success"),
        ("generation.created", "success"),
    ]
    assert {item.endpoint_id for item in items} == {endpoint.id}
    for item, request in zip(items, (completed, created), strict=True):
        detail = sdk.projects.webhook_endpoints.events.retrieve(
            item.id, project_id=PROJECT, webhook_endpoint_id=endpoint.id
        ).webhook_event
        assert detail.id == item.id == request.headers["webhook-id"]
        assert detail.payload == request.json()
        assert [attempt.response_status_code for attempt in detail.attempts] == [200]
        assert detail.sent_at == detail.attempts[0].sent_at
    listed = sdk.projects.webhook_endpoints.list(PROJECT).webhook_endpoints[0]
    assert (listed.nb_total_calls, listed.nb_failed_calls) == (2, 0)
    stats = webhook_stats(hooks)
    assert (stats["deliveries"], stats["requests_sent"], stats["requests_succeeded"]) == (2, 2, 2)


def test_a_failed_job_reaches_the_endpoints_that_enable_it_and_no_others(
    api: httpx.Client, hooks: RunningEmulator, receiver: WebhookReceiver
) -> None:
    create_endpoint(api, f"{receiver.url}/failed", ["generation.failed"])
    create_endpoint(api, f"{receiver.url}/completed", ["generation.completed"])
    create_endpoint(api, f"{receiver.url}/everything", ["*"])
    disabled = create_endpoint(api, f"{receiver.url}/disabled", ["*"])
    api.put(f"projects/{PROJECT}/webhook-endpoints/{disabled['id']}", json={"enabled": False})
    create_endpoint(api, f"{receiver.url}/other-project", ["*"], owner="projects/proj_Other")
    hooks.state.configure(failure_rate=0.0)
    faults(hooks, {"route": GENERATE_ROUTE, "kind": "fail_job", "error": "GPU on fire", "hint": "again"})
    job_id = submit(api)
    assert wait_job(api, job_id)["status"] == "failure"
    wait_idle(hooks)

    [failed] = receiver.received("/failed")
    assert failed.json()["type"] == "generation.failed"
    job = failed.json()["data"]["job"]
    assert (job["jobId"], job["status"], job["metadata"]["error"], job["metadata"]["hint"]) == (
        job_id,
        "failure",
        "GPU on fire",
        "again",
    )
    assert job == api.get(f"jobs/{job_id}").json()["job"]
    assert [r.json()["type"] for r in receiver.received("/everything")] == [
        "generation.created",
        "generation.failed",
    ]
    assert receiver.received("/completed") == []
    assert receiver.received("/disabled") == []
    assert receiver.received("/other-project") == []
    assert len(receiver.received()) == 3


def test_jobs_go_to_the_endpoints_of_their_project_id(
    api: httpx.Client, hooks: RunningEmulator, receiver: WebhookReceiver
) -> None:
    create_endpoint(api, f"{receiver.url}/mine", ["generation.created"])
    create_endpoint(api, f"{receiver.url}/theirs", ["generation.created"], owner="projects/proj_Theirs")
    mine, theirs = submit(api), submit(api, project="proj_Theirs")
    wait_idle(hooks)
    assert [r.json()["data"]["job"]["jobId"] for r in receiver.received("/mine")] == [mine]
    assert [r.json()["data"]["job"]["jobId"] for r in receiver.received("/theirs")] == [theirs]


def test_an_endpoint_hears_only_of_what_happens_after_it_exists(
    api: httpx.Client, hooks: RunningEmulator, receiver: WebhookReceiver
) -> None:
    hooks.state.configure(job_seconds=0.5)
    early = submit(api)  # created before any endpoint: its creation is not delivered, its end is
    create_endpoint(api, receiver.url, ["*"])
    wait_job(api, early)
    wait_idle(hooks)
    assert [(r.json()["type"], r.json()["data"]["job"]["jobId"]) for r in receiver.received()] == [
        ("generation.failed", early)
    ]


def test_a_receiver_answering_500_twice_gets_the_same_delivery_until_it_accepts(
    api: httpx.Client, hooks: RunningEmulator, receiver: WebhookReceiver
) -> None:
    hooks.state.configure(webhook_retry_seconds=0.1, webhook_retry_factor=2.0)
    endpoint = create_endpoint(api, receiver.url, ["generation.created"])
    receiver.answer_with(500, 500)
    submit(api)
    first, second, third = receiver.wait_for(3)
    stats = wait_idle(hooks)

    assert first.body == second.body == third.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == third.headers["webhook-id"]
    for request in (first, second, third):
        assert standard_webhooks_valid(request, endpoint["secret"])
    # Backoff: 0.1 s, then 0.2 s (the emulator clock runs at real speed here).
    assert second.received_at - first.received_at >= 0.09
    assert third.received_at - second.received_at >= 0.19
    detail = event(api, endpoint["id"], first.headers["webhook-id"])
    assert detail["status"] == "success"
    assert [attempt["responseStatusCode"] for attempt in detail["attempts"]] == [500, 500, 200]
    sent = [attempt["sentAt"] for attempt in detail["attempts"]]
    assert sent == sorted(sent)
    assert detail["sentAt"] == sent[-1]
    [listed] = api.get(f"projects/{PROJECT}/webhook-endpoints").json()["webhookEndpoints"]
    assert (listed["nbTotalCalls"], listed["nbFailedCalls"]) == (3, 2)
    assert (stats["requests_sent"], stats["requests_failed"], stats["deliveries_succeeded"]) == (3, 2, 1)


def test_retries_wait_on_the_emulator_clock_and_stop_at_max_attempts(
    sdk: Scenario, api: httpx.Client, hooks: RunningEmulator, receiver: WebhookReceiver
) -> None:
    hooks.state.configure(webhook_retry_seconds=600, webhook_max_attempts=3)
    endpoint = create_endpoint(api, receiver.url, ["generation.created"])
    receiver.answer_with(503, 503, 503, 503)
    submit(api)
    [first] = receiver.wait_for(1)
    event_id = first.headers["webhook-id"]

    def logged(attempts: int) -> None:
        # The answer is logged once the emulator has read it, a moment after the receiver saw the
        # request: the retry's due time is set from then, so the clock moves only after that.
        deadline = time.monotonic() + 10
        while len(event(api, endpoint["id"], event_id)["attempts"]) < attempts:
            assert time.monotonic() < deadline
            time.sleep(0.02)

    logged(1)
    time.sleep(0.3)
    assert len(receiver.received()) == 1  # the retry waits ten minutes...
    retrying = sdk.projects.webhook_endpoints.events.retrieve(
        event_id, project_id=PROJECT, webhook_endpoint_id=endpoint["id"]
    ).webhook_event
    assert retrying.status == "retrying"
    hooks.state.clock.advance(600)  # ...of emulator time
    receiver.wait_for(2)
    logged(2)
    hooks.state.clock.advance(1199)  # the second retry waits twice as long
    time.sleep(0.3)
    assert len(receiver.received()) == 2
    hooks.state.clock.advance(1)
    receiver.wait_for(3)
    stats = wait_idle(hooks)
    hooks.state.clock.advance(10_000)
    time.sleep(0.1)
    assert len(receiver.received()) == 3  # three attempts, then it gives up
    failed = event(api, endpoint["id"], event_id)
    assert failed["status"] == "failed"
    assert [a["responseStatusCode"] for a in failed["attempts"]] == [503, 503, 503]
    assert (stats["deliveries_failed"], stats["requests_failed"]) == (1, 3)


def test_no_answer_is_logged_as_status_0(sdk: Scenario, api: httpx.Client, hooks: RunningEmulator) -> None:
    hooks.state.configure(webhook_max_attempts=2, webhook_timeout_seconds=2)
    nobody = f"http://127.0.0.1:{free_port()}/hooks"  # a port nothing listens on
    endpoint = create_endpoint(api, nobody, ["generation.created"])
    submit(api)
    stats = wait_idle(hooks)
    [item] = sdk.projects.webhook_endpoints.events.list(endpoint["id"], project_id=PROJECT).items
    detail = sdk.projects.webhook_endpoints.events.retrieve(
        item.id, project_id=PROJECT, webhook_endpoint_id=endpoint["id"]
    ).webhook_event
    assert detail.status == "failed"
    assert [attempt.response_status_code for attempt in detail.attempts] == [0, 0]
    assert (stats["requests_sent"], stats["requests_failed"], stats["deliveries_failed"]) == (2, 2, 1)


def test_the_events_list_pages_with_tokens_short_pages_included(
    sdk: Scenario, api: httpx.Client, hooks: RunningEmulator, receiver: WebhookReceiver
) -> None:
    endpoint = create_endpoint(api, receiver.url, ["generation.created"])
    for _ in range(5):
        submit(api)
    wait_idle(hooks)
    seen: list[str] = []
    sizes: list[int] = []
    token: str | None = None
    for _ in range(20):
        extra: dict[str, object] = {"pageSize": 2}
        if token:
            extra["paginationToken"] = token
        page = sdk.projects.webhook_endpoints.events.list(
            endpoint["id"], project_id=PROJECT, extra_query=extra
        )
        seen += [item.id for item in page.items]
        sizes.append(len(page.items))
        token = page.next_pagination_token
        if not token:
            break
    assert sorted(seen) == sorted(r.headers["webhook-id"] for r in receiver.received())
    assert len(seen) == len(set(seen)) == 5
    assert 0 in sizes  # a short page: empty while a token remains
    bad = api.get(f"projects/{PROJECT}/webhook-endpoints/{endpoint['id']}/events?paginationToken=garbage!")
    assert (bad.status_code, bad.json()["details"]["field"]) == (400, "paginationToken")


# -- signature schemes ---------------------------------------------------------------------------


def test_the_hex_scheme_signs_the_body_with_the_secret_string(
    api: httpx.Client, hooks: RunningEmulator, receiver: WebhookReceiver
) -> None:
    hooks.state.configure(webhook_signature_scheme="hmac-sha256-hex")
    endpoint = create_endpoint(api, receiver.url, ["generation.created"])
    submit(api)
    [request] = receiver.wait_for(1)
    expected = hmac.new(endpoint["secret"].encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-scenario-signature"] == expected
    assert hex_hmac_valid(request, endpoint["secret"])
    assert not {"webhook-id", "webhook-timestamp", "webhook-signature"} & set(request.headers)


def test_scheme_none_sends_no_signature_headers(
    api: httpx.Client, hooks: RunningEmulator, receiver: WebhookReceiver
) -> None:
    hooks.state.configure(webhook_signature_scheme="none")
    create_endpoint(api, receiver.url, ["generation.created"])
    job_id = submit(api)
    [request] = receiver.wait_for(1)
    assert request.json()["data"]["job"]["jobId"] == job_id
    assert not {"webhook-id", "webhook-timestamp", "webhook-signature", "x-scenario-signature"} & set(
        request.headers
    )
    assert (
        api.post(f"{hooks.root_url}/_emulator/config", json={"webhook_signature_scheme": "md5"}).status_code
        == 400
    )


# -- threads and secrets ---------------------------------------------------------------------------


def _webhook_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "emulator-webhooks"]


async def test_the_sending_thread_starts_with_the_first_endpoint_and_ends_with_the_state(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    before = len(_webhook_threads())
    with EmulatorState(storage_dir=tmp_path) as state:
        app = create_app(state)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://e/v1/", auth=("k", "s")
        ) as client:
            await client.get(f"projects/{PROJECT}/webhook-endpoints")
            assert len(_webhook_threads()) == before  # no endpoint, no thread
            response = await client.post(
                f"projects/{PROJECT}/webhook-endpoints", json={"url": receiver.url, "enabledEvents": ["*"]}
            )
            assert response.status_code == 200
            assert len(_webhook_threads()) == before + 1
    assert len(_webhook_threads()) == before


def test_secrets_stay_out_of_logs_reprs_and_the_control_plane(
    api: httpx.Client, hooks: RunningEmulator, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hooks.state.configure(webhook_max_attempts=2)
    endpoint = create_endpoint(api, receiver.url, ["generation.created"])
    unreachable = create_endpoint(api, f"http://127.0.0.1:{free_port()}/x", ["generation.created"])
    receiver.answer_with(500)
    submit(api)
    wait_idle(hooks)
    control_texts = [
        httpx.get(f"{hooks.control_url}/{path}").text for path in ("stats", "config", "webhooks/deliveries")
    ]
    records = list(hooks.state.webhooks.endpoints.values())
    for secret in (endpoint["secret"], unreachable["secret"]):
        assert secret not in caplog.text
        assert all(secret not in text for text in control_texts)
        assert all(secret not in repr(record) for record in records)
    assert "webhook delivery" in caplog.text  # the unreachable one was logged, without its secret
