"""Webhook endpoints and their deliveries in the API's JSON shape, and the checks of their bodies.

Shapes follow scenario-sdk 2.4.0's models (scenario-api.md 8.1): a ``WebhookEndpoint``
(``secret`` only in the create call's answer), the events list's items ``{id, endpointId,
status, type, updatedAt}`` and one ``webhookEvent`` with its ``payload`` and ``attempts``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import Field

from prefect_scenario.emulator.api.errors import bad_request
from prefect_scenario.emulator.service.clock import iso_utc
from prefect_scenario.emulator.service.webhooks.records import EVENT_TYPES, DeliveryRecord, EndpointRecord
from prefect_scenario.models import WireModel

CREATE_FIELDS = frozenset({"url", "enabledEvents", "description"})
UPDATE_FIELDS = frozenset({"url", "enabled", "enabledEvents", "description"})


class WebhookEndpointWire(WireModel):
    """A webhook endpoint as every answer but the create call's shows it."""

    id: str
    url: str
    enabled: bool
    enabled_events: list[str]
    nb_total_calls: int
    nb_failed_calls: int
    owner_id: str
    owner_type: str
    created_at: str
    updated_at: str
    description: str | None = None


class CreatedWebhookEndpointWire(WebhookEndpointWire):
    """The create call's answer: the endpoint and its secret, this once."""

    secret: str = Field(repr=False)


def endpoint_wire(endpoint: EndpointRecord, *, with_secret: bool = False) -> dict[str, Any]:
    """The JSON of an endpoint (with its ``secret`` only for the create call's answer)."""
    fields: dict[str, Any] = {
        "id": endpoint.id,
        "url": endpoint.url,
        "enabled": endpoint.enabled,
        "enabled_events": list(endpoint.enabled_events),
        "nb_total_calls": endpoint.nb_total_calls,
        "nb_failed_calls": endpoint.nb_failed_calls,
        "owner_id": endpoint.owner_id,
        "owner_type": endpoint.owner_type,
        "created_at": iso_utc(endpoint.created_at),
        "updated_at": iso_utc(endpoint.updated_at),
        "description": endpoint.description,
    }
    if with_secret:
        return CreatedWebhookEndpointWire(**fields, secret=endpoint.secret).to_wire()
    return WebhookEndpointWire(**fields).to_wire()


def delivery_item_wire(delivery: DeliveryRecord) -> dict[str, Any]:
    """An item of an endpoint's events list."""
    return {
        "id": delivery.id,
        "endpointId": delivery.endpoint_id,
        "status": delivery.status,
        "type": delivery.event_type,
        "updatedAt": iso_utc(delivery.updated_at),
    }


def delivery_detail_wire(delivery: DeliveryRecord) -> dict[str, Any]:
    """One event with the exact payload sent and every attempt (``responseStatusCode`` 0: no answer)."""
    return {
        **delivery_item_wire(delivery),
        # The parsed body as sent, untouched (no null-dropping of a model dump reaches into it).
        "payload": delivery.payload,
        "attempts": [
            {"responseStatusCode": attempt.status_code, "sentAt": iso_utc(attempt.sent_at)}
            for attempt in delivery.attempts
        ],
        "createdAt": iso_utc(delivery.created_at),
        "sentAt": iso_utc(delivery.sent_at),
    }


# -- request bodies ---------------------------------------------------------------------------


def _check_fields(body: dict[str, Any], allowed: frozenset[str]) -> None:
    for name in body:
        if name not in allowed:
            raise bad_request(
                f'Unknown field "{name}"; expected one of: {", ".join(sorted(allowed))}', field=name
            )


def checked_url(value: Any) -> str:
    """``url``: an absolute http(s) URL.

    Raises:
        ApiError: 400 naming ``url``.
    """
    if not isinstance(value, str) or not value.strip():
        raise bad_request('"url" must be a non-empty string', field="url")
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise bad_request(
            f'"url" must be an absolute http(s) URL (https://hooks.example.com/scenario), got {value!r}',
            field="url",
        )
    return value


def checked_events(value: Any) -> list[str]:
    """``enabledEvents``: a non-empty list of the SDK's event names (``*`` for all).

    Raises:
        ApiError: 400 naming ``enabledEvents`` (or the item at fault).
    """
    if not isinstance(value, list) or not value:
        raise bad_request(
            '"enabledEvents" must be a non-empty list of event names (["*"] for every event)',
            field="enabledEvents",
        )
    for index, name in enumerate(value):
        if name not in EVENT_TYPES:
            raise bad_request(
                f"Invalid enabledEvents[{index}] {name!r}: expected one of {', '.join(EVENT_TYPES)}",
                field=f"enabledEvents[{index}]",
            )
    # Each name once, in the order given.
    return list(dict.fromkeys(value))


def checked_description(value: Any) -> str | None:
    """``description``: a string when given.

    Raises:
        ApiError: 400 naming ``description``.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request('"description" must be a string', field="description")
    return value


def checked_create(body: dict[str, Any]) -> tuple[str, list[str], str | None]:
    """``(url, enabledEvents, description)`` of a create body.

    Raises:
        ApiError: 400 for an unknown field, a missing or invalid one.
    """
    _check_fields(body, CREATE_FIELDS)
    for name in ("url", "enabledEvents"):
        if name not in body:
            raise bad_request(f'"{name}" is required', field=name)
    return (
        checked_url(body["url"]),
        checked_events(body["enabledEvents"]),
        checked_description(body.get("description")),
    )


def checked_update(body: dict[str, Any]) -> dict[str, Any]:
    """The changes of an update body, as keyword arguments of ``WebhookStore.update_endpoint``.

    Raises:
        ApiError: 400 for an unknown or invalid field.
    """
    _check_fields(body, UPDATE_FIELDS)
    changes: dict[str, Any] = {}
    if body.get("url") is not None:
        changes["url"] = checked_url(body["url"])
    if body.get("enabledEvents") is not None:
        changes["enabled_events"] = checked_events(body["enabledEvents"])
    if body.get("enabled") is not None:
        if not isinstance(body["enabled"], bool):
            raise bad_request('"enabled" must be true or false', field="enabled")
        changes["enabled"] = body["enabled"]
    if body.get("description") is not None:
        changes["description"] = checked_description(body["description"])
    return changes
