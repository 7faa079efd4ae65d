"""``/projects/{projectId}/webhook-endpoints``: register, list, change and remove webhook endpoints.

Wire models and the API of one resource (scenario-api.md section 8.1). Names follow the package's
vocabulary: what the API calls a "webhook event" (one payload sent to one endpoint, with its
attempts) is a :class:`WebhookDelivery` here, because Prefect owns the word *event*.

The endpoint's ``secret`` comes back once, from :meth:`WebhookEndpointsAPI.create`, as a
``SecretStr``; no other answer carries it, and a stray ``secret`` in any other answer is dropped
rather than kept as a plain extra field.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx
from pydantic import Field, SecretStr, model_validator

from prefect_scenario.errors import InputValidationError, ScenarioConfigError
from prefect_scenario.models import RequestModel, WireModel

from ._http import HttpCore, parse
from ._paging import every_page_item

# The ends of a custom job (both video models): what a waiting flow run needs to hear about.
JOB_END_EVENT_TYPES: tuple[str, ...] = ("generation.completed", "generation.failed")


# ---------------------------------------------------------------------------------------------
# Wire models
# ---------------------------------------------------------------------------------------------


class WebhookEndpoint(WireModel):
    """A webhook endpoint of a project (or a team): where Scenario POSTs the events it enables."""

    id: str
    url: str
    enabled: bool
    enabled_events: list[str]
    nb_total_calls: int = 0
    nb_failed_calls: int = 0
    owner_id: str
    owner_type: str
    created_at: str
    updated_at: str
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_stray_secret(cls, data: Any) -> Any:
        # Extra fields are kept (the API grows), which would keep a ``secret`` as a plain string in
        # the model's repr and dumps. Only a model that declares the field may hold it.
        if isinstance(data, dict) and "secret" in data and "secret" not in cls.model_fields:
            data = {name: value for name, value in data.items() if name != "secret"}
        return data


class CreatedWebhookEndpoint(WebhookEndpoint):
    """The answer of the create call: the endpoint and its signing secret, shown this once.

    Store ``secret`` at once (``register_webhook_endpoint`` puts it in a Prefect ``Secret``
    block): the API never returns it again, and losing it means recreating the endpoint.
    """

    secret: SecretStr = Field(repr=False)

    def without_secret(self) -> WebhookEndpoint:
        """The endpoint alone, safe to keep, print or return.

        Example:
            ```python
            created = await client.webhook_endpoints.create("https://hooks.example.com/scenario/")
            endpoint = created.without_secret()
            ```
        """
        return WebhookEndpoint.model_validate(self.model_dump(exclude={"secret"}))


class WebhookEndpointEnvelope(WireModel):
    """``{"webhookEndpoint": …}``: the answer of an update."""

    webhook_endpoint: WebhookEndpoint


class CreatedWebhookEndpointEnvelope(WireModel):
    """``{"webhookEndpoint": … + secret}``: the answer of the create call."""

    webhook_endpoint: CreatedWebhookEndpoint


class WebhookEndpointList(WireModel):
    """``{"webhookEndpoints": [...]}``: every endpoint of the project (not paginated)."""

    webhook_endpoints: list[WebhookEndpoint] = Field(default_factory=list)


class WebhookDelivery(WireModel):
    """One payload sent (or being sent) to an endpoint: the API's "webhook event".

    ``status`` is ``created``, ``retrying``, ``success`` or ``failed``; kept a string so a new
    status never breaks a listing.
    """

    id: str
    endpoint_id: str
    status: str
    type: str
    updated_at: str


class WebhookDeliveryAttempt(WireModel):
    """One attempt of a delivery: the status code the receiver answered, and when."""

    response_status_code: int
    sent_at: str


class WebhookDeliveryDetail(WebhookDelivery):
    """A delivery with the exact ``payload`` sent and every attempt.

    The payload is the one authoritative sample of what Scenario sends (it is not documented).
    """

    payload: Any = None
    attempts: list[WebhookDeliveryAttempt] = Field(default_factory=list)
    created_at: str
    sent_at: str | None = None


class WebhookDeliveryPage(WireModel):
    """One page of an endpoint's deliveries; a page may be short, even empty, while a token remains."""

    items: list[WebhookDelivery] = Field(default_factory=list)
    next_pagination_token: str | None = None


class WebhookDeliveryEnvelope(WireModel):
    """``{"webhookEvent": …}``: the answer for one delivery."""

    webhook_event: WebhookDeliveryDetail


class CreateWebhookEndpointRequest(RequestModel):
    """Body of ``POST /projects/{projectId}/webhook-endpoints``."""

    url: str
    enabled_events: list[str]
    description: str | None = None


class UpdateWebhookEndpointRequest(RequestModel):
    """Body of ``PUT /projects/{projectId}/webhook-endpoints/{id}``: only the fields to change."""

    url: str | None = None
    enabled: bool | None = None
    enabled_events: list[str] | None = None
    description: str | None = None


def _checked_url(url: str) -> str:
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InputValidationError(
            f"webhook URL {url!r} is not an absolute http(s) URL, e.g. https://hooks.example.com/scenario/",
            field="url",
        )
    return url


def _checked_events(events: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(events))
    if not chosen or not all(isinstance(name, str) and name for name in chosen):
        raise InputValidationError(
            "enabled_events needs at least one event name, e.g. generation.completed generation.failed "
            "(or * for every event)",
            field="enabled_events",
        )
    return chosen


# ---------------------------------------------------------------------------------------------
# The API
# ---------------------------------------------------------------------------------------------


class WebhookEndpointsAPI:
    """Webhook endpoints of the client's project: ``client.webhook_endpoints``.

    Every path names the project (``/projects/{projectId}/…``): the client's ``project_id`` is
    used, or the ``project_id`` given to a call.
    """

    def __init__(self, http: HttpCore) -> None:
        self._http = http

    def _project(self, project_id: str | None) -> str:
        project = project_id or self._http.project_id
        if not project:
            raise ScenarioConfigError(
                "webhook endpoints belong to a Scenario project: set project_id on the credentials "
                "(SCENARIO_PROJECT_ID, or the block's Project ID) or pass project_id"
            )
        return project

    async def _send(
        self,
        method: str,
        segments: tuple[str, ...],
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        url = self._http.url(*segments)
        # The project is in the path; the ``projectId`` query the other resources carry would say
        # it twice, which the SDK never does for these routes.
        return await self._http.send(
            lambda: self._http.client.build_request(method, url, params=params, json=json),
            auth=True,
            idempotent=idempotent,
        )

    def _path(self, project_id: str | None, *rest: str) -> tuple[str, ...]:
        return ("projects", self._project(project_id), "webhook-endpoints", *rest)

    async def create(
        self,
        url: str,
        enabled_events: Iterable[str] = JOB_END_EVENT_TYPES,
        *,
        description: str | None = None,
        project_id: str | None = None,
    ) -> CreatedWebhookEndpoint:
        """Registers an endpoint; the answer carries its signing secret, this once.

        Not retried once the request may have reached the server: a second endpoint would hold a
        second secret nobody stored, and the receiver would refuse its deliveries forever.

        Args:
            url: an absolute http(s) URL Scenario will POST to.
            enabled_events: the event names to send (``*`` for all).
            description: shown in the Scenario app.
            project_id: the project, when not the client's.

        Example:
            ```python
            async with credentials.get_client() as client:
                created = await client.webhook_endpoints.create(
                    "https://hooks.example.com/scenario/", ["generation.completed", "generation.failed"]
                )
            ```

        Raises:
            InputValidationError: the URL is not absolute http(s), or no event is named.
            ScenarioConfigError: no project id.
            ScenarioAPIError: the API refused (subclass by status).
        """
        body = CreateWebhookEndpointRequest(
            url=_checked_url(url), enabled_events=_checked_events(enabled_events), description=description
        )
        response = await self._send("POST", self._path(project_id), json=body.to_body(), idempotent=False)
        return parse(CreatedWebhookEndpointEnvelope, response).webhook_endpoint

    async def list(self, *, project_id: str | None = None) -> builtins.list[WebhookEndpoint]:
        """Every endpoint of the project (the API does not paginate them; no secrets).

        Example:
            ```python
            for endpoint in await client.webhook_endpoints.list():
                print(endpoint.id, endpoint.url, endpoint.enabled_events)
            ```
        """
        response = await self._send("GET", self._path(project_id))
        return parse(WebhookEndpointList, response).webhook_endpoints

    async def update(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        enabled: bool | None = None,
        enabled_events: Iterable[str] | None = None,
        description: str | None = None,
        project_id: str | None = None,
    ) -> WebhookEndpoint:
        """Changes the given fields of an endpoint; the others stay as they are.

        Example:
            ```python
            await client.webhook_endpoints.update(endpoint.id, enabled=False)
            ```

        Raises:
            InputValidationError: nothing to change, a bad URL, or an empty event list.
            NotFoundError: no such endpoint.
        """
        body = UpdateWebhookEndpointRequest(
            url=None if url is None else _checked_url(url),
            enabled=enabled,
            enabled_events=None if enabled_events is None else _checked_events(enabled_events),
            description=description,
        )
        wire = body.to_body()
        if not wire:
            raise InputValidationError("update names nothing to change", field="endpoint_id")
        response = await self._send("PUT", self._path(project_id, endpoint_id), json=wire)
        return parse(WebhookEndpointEnvelope, response).webhook_endpoint

    async def delete(self, endpoint_id: str, *, project_id: str | None = None) -> None:
        """Removes an endpoint: Scenario stops sending to it.

        Example:
            ```python
            await client.webhook_endpoints.delete("whe_123")
            ```

        Raises:
            NotFoundError: no such endpoint (also when a retried delete had already succeeded).
        """
        await self._send("DELETE", self._path(project_id, endpoint_id))

    async def deliveries(
        self, endpoint_id: str, *, project_id: str | None = None
    ) -> AsyncIterator[WebhookDelivery]:
        """Every delivery of an endpoint (the API's webhook events), across all pages.

        Example:
            ```python
            async for delivery in client.webhook_endpoints.deliveries(endpoint.id):
                print(delivery.id, delivery.type, delivery.status)
            ```

        Raises:
            ScenarioAPIError: a page failed after retries, or the server repeated a token.
        """
        path = self._path(project_id, endpoint_id, "events")

        async def fetch(token: str | None) -> httpx.Response:
            return await self._send("GET", path, params={"paginationToken": token} if token else None)

        def read(response: httpx.Response) -> tuple[builtins.list[WebhookDelivery], str | None]:
            page = parse(WebhookDeliveryPage, response)
            return page.items, page.next_pagination_token

        async for delivery in every_page_item(fetch, read, "GET /webhook-endpoints/{id}/events"):
            yield delivery

    async def delivery(
        self, endpoint_id: str, delivery_id: str, *, project_id: str | None = None
    ) -> WebhookDeliveryDetail:
        """One delivery with the exact payload sent and its attempts.

        Example:
            ```python
            detail = await client.webhook_endpoints.delivery(endpoint.id, delivery.id)
            print(detail.payload, [attempt.response_status_code for attempt in detail.attempts])
            ```
        """
        response = await self._send("GET", self._path(project_id, endpoint_id, "events", delivery_id))
        return parse(WebhookDeliveryEnvelope, response).webhook_event
