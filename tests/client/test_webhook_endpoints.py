"""Webhook endpoints: wire names and paths, the once-shown secret, deliveries across pages."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from prefect_scenario.client.webhook_endpoints import (
    CreatedWebhookEndpoint,
    WebhookDeliveryEnvelope,
    WebhookDeliveryPage,
    WebhookEndpoint,
    WebhookEndpointList,
)
from prefect_scenario.errors import (
    InputValidationError,
    NotFoundError,
    ScenarioAPIError,
    ScenarioConfigError,
    ServerError,
)

from .conftest import iso

PROJECT = "proj_1"
WEBHOOK_SECRET = "whsec_Y2FuYXJ5LXdlYmhvb2stc2VjcmV0LTlmMmI="  # the canary: must never show


def endpoint_payload(
    endpoint_id: str = "whe_1", *, secret: str | None = None, **changes: Any
) -> dict[str, Any]:
    """An endpoint as the SDK's WebhookEndpoint model describes it (every required field)."""
    payload: dict[str, Any] = {
        "id": endpoint_id,
        "url": "https://hooks.example.com/scenario/",
        "enabled": True,
        "enabledEvents": ["generation.completed", "generation.failed"],
        "nbTotalCalls": 0,
        "nbFailedCalls": 0,
        "ownerId": PROJECT,
        "ownerType": "project",
        "createdAt": iso(0),
        "updatedAt": iso(0),
        "description": "receiver",
        **changes,
    }
    if secret is not None:
        payload["secret"] = secret
    return payload


def test_models_parse_the_sdk_shapes_and_agree_with_the_sdk() -> None:
    from scenario_sdk.types.projects import webhook_endpoint_create_response, webhook_endpoint_list_response
    from scenario_sdk.types.projects.webhook_endpoints import event_list_response, event_retrieve_response

    created_body = {"webhookEndpoint": endpoint_payload(secret=WEBHOOK_SECRET)}
    sdk_created = webhook_endpoint_create_response.WebhookEndpointCreateResponse.model_validate(created_body)
    ours = CreatedWebhookEndpoint.model_validate(created_body["webhookEndpoint"])
    assert ours.id == sdk_created.webhook_endpoint.id
    assert ours.enabled_events == sdk_created.webhook_endpoint.enabled_events
    assert ours.owner_type == sdk_created.webhook_endpoint.owner_type
    assert ours.secret.get_secret_value() == sdk_created.webhook_endpoint.secret

    list_body = {"webhookEndpoints": [endpoint_payload("whe_1"), endpoint_payload("whe_2", enabled=False)]}
    webhook_endpoint_list_response.WebhookEndpointListResponse.model_validate(list_body)
    listed = WebhookEndpointList.model_validate(list_body).webhook_endpoints
    assert [(e.id, e.enabled) for e in listed] == [("whe_1", True), ("whe_2", False)]

    page_body = {
        "items": [
            {"id": "wev_1", "endpointId": "whe_1", "status": "success", "type": "generation.completed",
             "updatedAt": iso(1)}
        ],
        "nextPaginationToken": "t1",
    }  # fmt: skip
    event_list_response.EventListResponse.model_validate(page_body)
    page = WebhookDeliveryPage.model_validate(page_body)
    assert page.items[0].endpoint_id == "whe_1"
    assert page.next_pagination_token == "t1"

    detail_body = {
        "webhookEvent": {
            "id": "wev_1",
            "endpointId": "whe_1",
            "type": "generation.completed",
            "status": "retrying",
            "payload": {"id": "wev_1", "data": {"job": {"jobId": "job_1"}}},
            "attempts": [
                {"responseStatusCode": 503, "sentAt": iso(1)},
                {"responseStatusCode": 200, "sentAt": iso(5)},
            ],
            "createdAt": iso(0),
            "sentAt": iso(5),
            "updatedAt": iso(5),
        }
    }
    event_retrieve_response.EventRetrieveResponse.model_validate(detail_body)
    detail = WebhookDeliveryEnvelope.model_validate(detail_body).webhook_event
    assert [a.response_status_code for a in detail.attempts] == [503, 200]
    assert detail.payload["data"]["job"]["jobId"] == "job_1"


def test_the_secret_is_secret_and_never_kept_where_it_is_not_declared() -> None:
    created = CreatedWebhookEndpoint.model_validate(endpoint_payload(secret=WEBHOOK_SECRET))
    assert isinstance(created.secret, SecretStr)
    for text in (repr(created), str(created), created.model_dump_json(), json.dumps(created.to_wire())):
        assert WEBHOOK_SECRET not in text
    plain = created.without_secret()
    assert type(plain) is WebhookEndpoint
    assert WEBHOOK_SECRET not in repr(plain.model_dump())
    # An answer that carries a secret where none is expected: dropped, not kept as a plain extra.
    stray = WebhookEndpoint.model_validate(endpoint_payload(secret=WEBHOOK_SECRET, futureField=1))
    assert "secret" not in (stray.model_extra or {})
    assert stray.model_extra == {"futureField": 1}
    assert WEBHOOK_SECRET not in repr(stray)


async def test_create_posts_the_wire_body_to_the_project_path(make_client: Any) -> None:
    log: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        log.append(request)
        return httpx.Response(200, json={"webhookEndpoint": endpoint_payload(secret=WEBHOOK_SECRET)})

    async with make_client(handler, project_id=PROJECT) as client:
        created = await client.webhook_endpoints.create(
            "https://hooks.example.com/scenario/",
            ["generation.completed", "generation.failed", "generation.completed"],
            description="receiver",
        )
    assert created.secret.get_secret_value() == WEBHOOK_SECRET
    (request,) = log
    assert request.method == "POST"
    assert request.url.path == "/v1/projects/proj_1/webhook-endpoints"
    assert "projectId" not in request.url.params  # the path names the project
    assert request.headers["Authorization"].startswith("Basic ")
    assert json.loads(request.content) == {
        "url": "https://hooks.example.com/scenario/",
        "enabledEvents": ["generation.completed", "generation.failed"],
        "description": "receiver",
    }


async def test_create_is_never_retried_after_it_may_have_arrived(make_client: Any) -> None:
    log: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        log.append(request)
        return httpx.Response(503, json={"reason": "busy"})

    async with make_client(handler, project_id=PROJECT) as client:
        with pytest.raises(ServerError, match="503"):
            await client.webhook_endpoints.create("https://hooks.example.com/", ["*"])
    assert len(log) == 1


async def test_bad_input_and_missing_project_fail_before_sending(make_client: Any) -> None:
    log: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:  # pragma: no cover - must not be called
        log.append(request)
        return httpx.Response(500)

    async with make_client(handler, project_id=PROJECT) as client:
        with pytest.raises(InputValidationError, match="absolute http"):
            await client.webhook_endpoints.create("hooks.example.com/scenario", ["*"])
        with pytest.raises(InputValidationError, match="at least one event"):
            await client.webhook_endpoints.create("https://hooks.example.com/", [])
        with pytest.raises(InputValidationError, match="nothing to change"):
            await client.webhook_endpoints.update("whe_1")
    async with make_client(handler) as client:
        with pytest.raises(ScenarioConfigError, match="project"):
            await client.webhook_endpoints.list()
    assert log == []


async def test_list_update_delete_and_an_explicit_project(make_client: Any) -> None:
    log: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        log.append(request)
        if request.method == "GET":
            return httpx.Response(200, json={"webhookEndpoints": [endpoint_payload("whe_1")]})
        if request.method == "PUT":
            body = json.loads(request.content)
            return httpx.Response(200, json={"webhookEndpoint": endpoint_payload("whe_1", **body)})
        if request.url.path.endswith("whe_gone"):
            return httpx.Response(404, json={"reason": "Webhook endpoint not found"})
        return httpx.Response(200, json={})

    async with make_client(handler, project_id=PROJECT) as client:
        listed = await client.webhook_endpoints.list(project_id="proj_other")
        updated = await client.webhook_endpoints.update("whe_1", enabled=False, enabled_events=["*"])
        await client.webhook_endpoints.delete("whe_1")
        with pytest.raises(NotFoundError, match="not found"):
            await client.webhook_endpoints.delete("whe_gone")
    assert [e.id for e in listed] == ["whe_1"]
    assert updated.enabled is False
    assert updated.enabled_events == ["*"]
    assert [(r.method, r.url.path) for r in log] == [
        ("GET", "/v1/projects/proj_other/webhook-endpoints"),
        ("PUT", "/v1/projects/proj_1/webhook-endpoints/whe_1"),
        ("DELETE", "/v1/projects/proj_1/webhook-endpoints/whe_1"),
        ("DELETE", "/v1/projects/proj_1/webhook-endpoints/whe_gone"),
    ]
    assert json.loads(log[1].content) == {"enabled": False, "enabledEvents": ["*"]}  # only what changes


def _delivery(delivery_id: str) -> dict[str, Any]:
    return {"id": delivery_id, "endpointId": "whe_1", "status": "success", "type": "generation.completed",
            "updatedAt": iso(0)}  # fmt: skip


async def test_deliveries_follow_tokens_through_empty_pages(make_client: Any) -> None:
    log: list[httpx.Request] = []
    pages: dict[str | None, tuple[list[str], str | None]] = {
        None: (["wev_a", "wev_b"], "t1"),
        "t1": ([], "t2"),
        "t2": (["wev_c"], None),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        log.append(request)
        ids, token = pages[request.url.params.get("paginationToken")]
        body: dict[str, Any] = {"items": [_delivery(i) for i in ids]}
        if token is not None:
            body["nextPaginationToken"] = token
        return httpx.Response(200, json=body)

    async with make_client(handler, project_id=PROJECT) as client:
        found = [d.id async for d in client.webhook_endpoints.deliveries("whe_1")]
    assert found == ["wev_a", "wev_b", "wev_c"]
    assert {r.url.path for r in log} == {"/v1/projects/proj_1/webhook-endpoints/whe_1/events"}
    assert [r.url.params.get("paginationToken") for r in log] == [None, "t1", "t2"]


async def test_deliveries_refuse_a_repeated_token(make_client: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"items": [_delivery("wev_a")], "nextPaginationToken": "same"})

    async with make_client(handler, project_id=PROJECT) as client:
        with pytest.raises(ScenarioAPIError, match="pagination token"):
            _ = [d async for d in client.webhook_endpoints.deliveries("whe_1")]


async def test_one_delivery_with_its_payload(make_client: Any) -> None:
    log: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        log.append(request)
        return httpx.Response(
            200,
            json={
                "webhookEvent": {
                    **_delivery("wev_a"),
                    "payload": {"type": "generation.completed"},
                    "attempts": [{"responseStatusCode": 200, "sentAt": iso(1)}],
                    "createdAt": iso(0),
                    "sentAt": iso(1),
                }
            },
        )

    async with make_client(handler, project_id=PROJECT) as client:
        detail = await client.webhook_endpoints.delivery("whe_1", "wev_a")
    assert detail.payload == {"type": "generation.completed"}
    assert log[0].url.path == "/v1/projects/proj_1/webhook-endpoints/whe_1/events/wev_a"
