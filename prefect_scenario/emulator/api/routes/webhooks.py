"""``/v1/projects/{projectId}/webhook-endpoints`` and ``/v1/teams/{teamId}/webhook-endpoints``.

The same six routes under both owners, with the same shapes (scenario-api.md 8.1): create (the
only answer with the ``secret``), list, update (PUT), delete, the endpoint's events (cursor
pages) and one event with its payload and attempts. Any project or team id is accepted, as any
credentials are; an endpoint is only found under the owner it was created under (404 elsewhere).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from prefect_scenario.emulator.api import paging
from prefect_scenario.emulator.api.auth import require_auth
from prefect_scenario.emulator.api.deps import get_state, json_object
from prefect_scenario.emulator.api.errors import not_found
from prefect_scenario.emulator.api.webhook_wire import (
    checked_create,
    checked_update,
    delivery_detail_wire,
    delivery_item_wire,
    endpoint_wire,
)
from prefect_scenario.emulator.service.webhooks.records import DeliveryRecord, EndpointRecord, OwnerType

router = APIRouter(dependencies=[Depends(require_auth)])

# (owner type, path prefix, name of the owner's path parameter)
OWNERS: tuple[tuple[OwnerType, str, str], ...] = (
    ("project", "/projects/{projectId}/webhook-endpoints", "projectId"),
    ("team", "/teams/{teamId}/webhook-endpoints", "teamId"),
)
ENDPOINT_ID = "webhookEndpointId"
EVENT_ID = "eventId"

Handler = Callable[[Request, OwnerType, str], Awaitable[JSONResponse]]


def _endpoint_or_404(request: Request, owner_type: OwnerType, owner_id: str) -> EndpointRecord:
    endpoint_id = request.path_params[ENDPOINT_ID]
    endpoint = get_state(request).webhooks.endpoint(owner_type, owner_id, endpoint_id)
    if endpoint is None:
        raise not_found(f"Webhook endpoint {endpoint_id} not found")
    return endpoint


async def create_endpoint(request: Request, owner_type: OwnerType, owner_id: str) -> JSONResponse:
    """Register an endpoint; the answer carries its secret, this once."""
    url, events, description = checked_create(await json_object(request))
    endpoint = get_state(request).webhooks.create_endpoint(
        owner_type, owner_id, url=url, enabled_events=events, description=description
    )
    return JSONResponse({"webhookEndpoint": endpoint_wire(endpoint, with_secret=True)})


async def list_endpoints(request: Request, owner_type: OwnerType, owner_id: str) -> JSONResponse:
    """Every endpoint of the owner, without secrets (not paginated, as the SDK's model says)."""
    endpoints = get_state(request).webhooks.endpoints_of(owner_type, owner_id)
    return JSONResponse({"webhookEndpoints": [endpoint_wire(endpoint) for endpoint in endpoints]})


async def update_endpoint(request: Request, owner_type: OwnerType, owner_id: str) -> JSONResponse:
    """Change the fields given; the others stay."""
    changes = checked_update(await json_object(request))
    state = get_state(request)
    with state.lock:
        endpoint = state.webhooks.update_endpoint(_endpoint_or_404(request, owner_type, owner_id), **changes)
        return JSONResponse({"webhookEndpoint": endpoint_wire(endpoint)})


async def delete_endpoint(request: Request, owner_type: OwnerType, owner_id: str) -> JSONResponse:
    """Remove an endpoint: nothing more is sent to it. Answers ``{}`` (the SDK types it as any object)."""
    state = get_state(request)
    with state.lock:
        state.webhooks.delete_endpoint(_endpoint_or_404(request, owner_type, owner_id))
    return JSONResponse({})


async def list_events(request: Request, owner_type: OwnerType, owner_id: str) -> JSONResponse:
    """The endpoint's deliveries, newest first, in cursor pages (short pages as ``GET /jobs``)."""
    token = request.query_params.get("paginationToken")
    # Not in the SDK's parameters; taken as GET /jobs takes it, for tests of paging.
    size = paging.parse_page_size(request.query_params.get("pageSize"))
    state = get_state(request)
    with state.lock:
        endpoint = _endpoint_or_404(request, owner_type, owner_id)
        deliveries = state.webhooks.deliveries_of(endpoint.id)

        def sort_key(delivery: DeliveryRecord) -> tuple[float, int]:
            return (delivery.created_at, delivery.seq)

        page, next_token = paging.paginate(
            deliveries, sort_key, token=token, page_size=size, short_pages=state.config.short_pages
        )
        body: dict[str, Any] = {"items": [delivery_item_wire(delivery) for delivery in page]}
    if next_token is not None:
        body["nextPaginationToken"] = next_token
    return JSONResponse(body)


async def get_event(request: Request, owner_type: OwnerType, owner_id: str) -> JSONResponse:
    """One delivery with the exact payload sent and every attempt."""
    state = get_state(request)
    event_id = request.path_params[EVENT_ID]
    with state.lock:
        endpoint = _endpoint_or_404(request, owner_type, owner_id)
        delivery = state.webhooks.delivery(endpoint.id, event_id)
        if delivery is None:
            raise not_found(f"Webhook event {event_id} not found")
        return JSONResponse({"webhookEvent": delivery_detail_wire(delivery)})


ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("POST", "", create_endpoint),
    ("GET", "", list_endpoints),
    ("PUT", f"/{{{ENDPOINT_ID}}}", update_endpoint),
    ("DELETE", f"/{{{ENDPOINT_ID}}}", delete_endpoint),
    ("GET", f"/{{{ENDPOINT_ID}}}/events", list_events),
    ("GET", f"/{{{ENDPOINT_ID}}}/events/{{{EVENT_ID}}}", get_event),
)


def _bound(
    handler: Handler, owner_type: OwnerType, owner_param: str
) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def route(request: Request) -> JSONResponse:
        return await handler(request, owner_type, request.path_params[owner_param])

    route.__name__ = f"{handler.__name__}_of_{owner_type}"
    route.__doc__ = handler.__doc__
    return route


def _register() -> None:
    for owner_type, prefix, owner_param in OWNERS:
        for method, suffix, handler in ROUTES:
            router.add_api_route(prefix + suffix, _bound(handler, owner_type, owner_param), methods=[method])


_register()
