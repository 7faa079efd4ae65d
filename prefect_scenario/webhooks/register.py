"""Registering the receiver with Scenario, and keeping the once-shown secret in a Prefect ``Secret`` block.

Scenario shows an endpoint's signing secret once, in the answer that creates the endpoint. It goes
straight into a ``prefect.blocks.system.Secret`` block and nowhere else: not a log, not the
terminal, not an exception. If it cannot be stored, the endpoint is deleted again (an endpoint
whose secret nobody holds only produces deliveries that the receiver must refuse).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from pydantic import SecretStr

from prefect_scenario.blocks import ScenarioCredentials, resolve_credentials
from prefect_scenario.client import ScenarioClient
from prefect_scenario.client.webhook_endpoints import JOB_END_EVENT_TYPES, WebhookEndpoint
from prefect_scenario.errors import ScenarioConfigError, ScenarioError

logger = logging.getLogger("prefect_scenario.webhooks")

DEFAULT_SECRET_BLOCK = "scenario-webhook-secret"
DEFAULT_DESCRIPTION = "prefect-scenario webhook receiver (wakes Prefect flow runs waiting for jobs)"
_SECRET_BLOCK_PREFIX = "secret/"
_REDACTED = "**********"


class WebhookSecretNotStoredError(ScenarioError):
    """An endpoint was created but its secret could not be stored in the Secret block.

    Attributes:
        endpoint_id: the endpoint that was created.
        endpoint_deleted: True when it was deleted again (nothing remains); False when it still
            exists, with a secret nobody holds: delete it in the Scenario app.
    """

    def __init__(self, message: str, *, endpoint_id: str, endpoint_deleted: bool) -> None:
        super().__init__(message)
        self.endpoint_id = endpoint_id
        self.endpoint_deleted = endpoint_deleted


def checked_secret_block_name(value: str) -> str:
    """A Secret block's name, given as ``my-secret`` or ``secret/my-secret``, checked as Prefect checks it.

    Example:
        ```python
        assert checked_secret_block_name("secret/scenario-webhook-secret") == "scenario-webhook-secret"
        ```

    Raises:
        ScenarioConfigError: not lower-case letters, digits and dashes.
    """
    from prefect.types.names import raise_on_name_alphanumeric_dashes_only

    name = value.removeprefix(_SECRET_BLOCK_PREFIX)
    try:
        raise_on_name_alphanumeric_dashes_only(name, field_name="the Secret block name")
    except ValueError as exc:
        raise ScenarioConfigError(f"{name!r}: {exc}") from None
    if not name:
        raise ScenarioConfigError("the Secret block name is empty")
    return name


async def _secret_block_exists(name: str) -> bool:
    import prefect.exceptions
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client

    try:
        async with get_client() as client:
            await client.read_block_document_by_name(
                name=name, block_type_slug=Secret.get_block_type_slug(), include_secrets=False
            )
    except prefect.exceptions.ObjectNotFound:
        return False
    except Exception as exc:
        # Asked before anything is created at Scenario: failing here costs nothing.
        raise ScenarioConfigError(
            f"the Prefect API could not be asked for the Secret block {name!r} "
            f"({type(exc).__name__}: {exc}); check PREFECT_API_URL: nothing was registered at Scenario"
        ) from None
    return True


def _redacted(text: str, secret: SecretStr) -> str:
    value = secret.get_secret_value()
    return text.replace(value, _REDACTED) if value else text


async def _store(name: str, secret: SecretStr, *, overwrite: bool) -> None:
    from prefect.blocks.system import Secret

    block: Secret[Any] = Secret(value=secret)
    await block.asave(name, overwrite=overwrite)


async def register_webhook_endpoint(
    url: str,
    credentials: ScenarioCredentials | str | None = None,
    secret_block_name: str = DEFAULT_SECRET_BLOCK,
    *,
    enabled_events: Iterable[str] = JOB_END_EVENT_TYPES,
    description: str | None = DEFAULT_DESCRIPTION,
    overwrite: bool = False,
    client: ScenarioClient | None = None,
) -> WebhookEndpoint:
    """Registers ``url`` as a webhook endpoint of the project and stores its secret in a Secret block.

    The block is checked first: an existing one is refused unless ``overwrite`` (overwriting
    leaves the endpoint the old secret belonged to unverifiable). If the block cannot be saved
    after the endpoint was created, the endpoint is deleted again; if even that fails, the error
    names the endpoint to delete by hand.

    Args:
        url: the receiver's public URL (with the trailing slash when it is mounted under a path).
        credentials: a ``ScenarioCredentials`` block, its name, or None for the environment; the
            credentials need a ``project_id``.
        secret_block_name: the Prefect ``Secret`` block to store the secret in.
        enabled_events: the events Scenario should send.
        description: shown in the Scenario app.
        overwrite: replace an existing Secret block of that name.
        client: an open ``ScenarioClient`` to use instead of one built from ``credentials``.

    Example:
        ```python
        endpoint = await register_webhook_endpoint(
            "https://hooks.example.com/scenario/", "scenario-prod", "scenario-webhook-secret"
        )
        print(endpoint.id, endpoint.enabled_events)
        ```

    Returns:
        The endpoint, without its secret.

    Raises:
        ScenarioConfigError: a bad block name, an existing block, no project id, no Prefect API.
        InputValidationError: the URL is not absolute http(s), or no event is named.
        ScenarioAPIError: Scenario refused the endpoint (nothing was stored).
        WebhookSecretNotStoredError: the endpoint was created but its secret could not be stored.
    """
    name = checked_secret_block_name(secret_block_name)
    if not overwrite and await _secret_block_exists(name):
        raise ScenarioConfigError(
            f"a Secret block named {name!r} already exists: choose another name, or overwrite it "
            "(the endpoint its secret belongs to then fails verification): nothing was registered"
        )
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            creds = await resolve_credentials(credentials)
            client = await stack.enter_async_context(creds.get_client())
        created = await client.webhook_endpoints.create(url, enabled_events, description=description)
        try:
            await _store(name, created.secret, overwrite=overwrite)
        except Exception as exc:
            # The message of a failed save may quote the request (a 422 echoes its input): redact.
            reason = _redacted(f"{type(exc).__name__}: {exc}", created.secret)
            try:
                await client.webhook_endpoints.delete(created.id)
            except ScenarioError as failed:
                raise WebhookSecretNotStoredError(
                    f"the webhook endpoint {created.id} ({created.url}) was created, but its secret "
                    f"could not be stored in the Secret block {name!r} ({reason}) and deleting the "
                    f"endpoint failed ({failed}): endpoint {created.id} exists and its secret is lost; "
                    "delete it in the Scenario app, then register again",
                    endpoint_id=created.id,
                    endpoint_deleted=False,
                ) from None
            raise WebhookSecretNotStoredError(
                f"the secret of the new webhook endpoint {created.id} could not be stored in the Secret "
                f"block {name!r} ({reason}); the endpoint was deleted again: nothing remains, register again",
                endpoint_id=created.id,
                endpoint_deleted=True,
            ) from None
    endpoint = created.without_secret()
    logger.info(
        "Registered Scenario webhook endpoint %s for %s (%s); its secret is in the Secret block %r",
        endpoint.id,
        endpoint.url,
        ", ".join(endpoint.enabled_events),
        name,
    )
    return endpoint


async def load_webhook_secret(block_name: str = DEFAULT_SECRET_BLOCK) -> SecretStr:
    """The webhook secret stored by :func:`register_webhook_endpoint`, from its Secret block.

    Example:
        ```python
        secret = await load_webhook_secret("scenario-webhook-secret")
        app = create_webhook_app(secret, on_job_hint)
        ```

    Raises:
        ScenarioConfigError: no such block, or it holds no text.
    """
    from prefect.blocks.system import Secret

    name = checked_secret_block_name(block_name)
    try:
        loaded: object = await Secret.aload(name)
    except ValueError:
        raise ScenarioConfigError(
            f"no Secret block named {name!r}: register the endpoint first "
            f"(prefect-scenario webhooks register URL --secret-block {name})"
        ) from None
    if not isinstance(loaded, Secret):
        raise ScenarioConfigError(f"the block {name!r} is not a Secret block")
    value = loaded.value.get_secret_value()
    if not isinstance(value, str) or not value:
        raise ScenarioConfigError(f"the Secret block {name!r} holds no text secret")
    return SecretStr(value)
