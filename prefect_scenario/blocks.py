"""Prefect blocks of prefect-scenario: the Scenario credentials, and how a task finds them.

Secrets stay ``SecretStr`` in the block; :meth:`ScenarioCredentials.get_client` is the only place
they are handed to the HTTP client (which builds the auth header). Reprs, logs, events, cache keys
and results never carry them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

from prefect.blocks.abstract import CredentialsBlock
from pydantic import (
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from prefect_scenario.errors import ScenarioConfigError
from prefect_scenario.models import DEFAULT_BASE_URL

if TYPE_CHECKING:
    from prefect_scenario.client import ScenarioClient

# The official SDK's variables (scenario-api.md section 1.1), so one shell setup serves both.
ENV_API_KEY = "SCENARIO_SDK_API_KEY"
ENV_API_SECRET = "SCENARIO_SDK_API_SECRET"
ENV_BEARER_TOKEN = "SCENARIO_SDK_JWT"
ENV_BASE_URL = "SCENARIO_BASE_URL"
ENV_PROJECT_ID = "SCENARIO_PROJECT_ID"

# Optional fields as Prefect's forms render them plainly: the schema of the value alone. The default
# JSON schema (``anyOf: [X, null]``) makes the UI open each field on a "X | null" type switch.
OptionalSecret = Annotated[
    SecretStr | None, WithJsonSchema({"type": "string", "format": "password", "writeOnly": True})
]
OptionalText = Annotated[str | None, WithJsonSchema({"type": "string"})]

_WHAT_TO_SET = (
    f"save a ScenarioCredentials block and pass its name, or set {ENV_API_KEY} and {ENV_API_SECRET} "
    f"(or {ENV_BEARER_TOKEN}) in the environment of the flow run"
)


class ScenarioCredentials(CredentialsBlock):
    """Credentials for the Scenario API, used to run Scenario's generative video models from Prefect.

    Authenticate with an API key and its secret (created in the Scenario web app, project settings,
    API keys), or with a bearer token. The block builds the HTTP client; secrets never leave it in
    logs, results or events.

    Examples:
        Load stored Scenario credentials and open a client:
        ```python
        from prefect_scenario import ScenarioCredentials

        scenario_credentials_block = ScenarioCredentials.load("BLOCK_NAME")
        async with scenario_credentials_block.get_client() as client:
            model = await client.models.get("model_runway-aleph-2")
        ```

        Build credentials from the official SDK's environment variables:
        ```python
        from prefect_scenario import ScenarioCredentials

        credentials = ScenarioCredentials.from_env()
        ```
    """

    # A validation error must not print the raw input: it holds the secrets as plain strings.
    model_config = ConfigDict(hide_input_in_errors=True)

    _block_type_name = "Scenario Credentials"
    # No logo: Scenario publishes none at a stable address, and a broken image is worse than none.
    _documentation_url = "https://docs.scenario.com/docs/api-authentication"  # type: ignore[assignment]
    # The catalogue card and the block page read these; the docstring's line breaks cut sentences there.
    _description = (
        "Credentials for the Scenario API, to run Scenario's generative video models (Video to Layers, "
        "Runway Aleph 2) from Prefect. Give an API key with its secret, or a bearer token."
    )
    _code_example = """```python
from prefect_scenario import ScenarioCredentials

credentials = ScenarioCredentials.load("BLOCK_NAME")
async with credentials.get_client() as client:
    model = await client.models.get("model_runway-aleph-2")

# Or from the official SDK's environment variables (SCENARIO_SDK_API_KEY, SCENARIO_SDK_API_SECRET):
credentials = ScenarioCredentials.from_env()
```"""

    api_key: OptionalSecret = Field(
        default=None,
        title="API key",
        description=(
            "Scenario API key (project settings, API keys), with its secret. Give a key and its secret, "
            "or a bearer token."
        ),
    )
    api_secret: OptionalSecret = Field(
        default=None,
        title="API secret",
        description="Secret of the Scenario API key; needed with the API key.",
    )
    bearer_token: OptionalSecret = Field(
        default=None,
        title="Bearer token",
        description="A bearer token (JWT), used instead of an API key and secret.",
    )
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        title="Base URL",
        description="Base URL of the Scenario API, including the version path.",
    )
    project_id: OptionalText = Field(
        default=None,
        title="Project ID",
        description=(
            "Scenario project that owns uploads and jobs. Optional with a project API key; set it when "
            "several projects share one base URL, so cached uploads and jobs stay per project."
        ),
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_complete_method(self) -> ScenarioCredentials:
        has_key = _present(self.api_key)
        has_secret = _present(self.api_secret)
        if has_key != has_secret:
            missing = "api_secret" if has_key else "api_key"
            raise ValueError(f"an API key and its secret go together: {missing} is missing")
        if not has_key and not _present(self.bearer_token):
            raise ValueError("give an api_key with its api_secret, or a bearer_token")
        return self

    @property
    def auth_method(self) -> str:
        """``"basic"`` (key and secret, preferred like the SDK does) or ``"bearer"``."""
        return "basic" if _present(self.api_key) else "bearer"

    def get_client(self, **overrides: Any) -> ScenarioClient:
        """An async Scenario client for these credentials (use it as an async context manager).

        Without overrides, inside a running event loop, the client is shared: one per credentials
        and event loop, as prefect-aws caches its boto clients per block. Every task of a flow run
        then reuses one connection pool; leaving ``async with`` does not close a shared client (it
        is closed when its event loop shuts down). With overrides, the client is new and the caller's.

        Args:
            **overrides: other ``ScenarioClient`` arguments (``timeout``, ``retry``, ``polling``,
                ``transport``), or a replacement ``base_url``/``project_id``.

        Returns:
            A ``ScenarioClient``.
        """
        if not overrides:
            shared = _shared_client(self)
            if shared is not None:
                return shared
        return self.new_client(**overrides)

    def new_client(self, **overrides: Any) -> ScenarioClient:
        """A client of the caller's own (closed when its ``async with`` ends), never shared.

        Args:
            **overrides: as :meth:`get_client`.
        """
        from prefect_scenario.client import ScenarioClient

        settings: dict[str, Any] = {"base_url": self.base_url, "project_id": self.project_id}
        if self.auth_method == "basic":
            settings["api_key"] = self.api_key
            settings["api_secret"] = self.api_secret
        else:
            settings["bearer_token"] = self.bearer_token
        settings.update(overrides)
        return ScenarioClient(**settings)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ScenarioCredentials:
        """Credentials from the environment variables of the official Scenario SDK.

        Reads ``SCENARIO_SDK_API_KEY``, ``SCENARIO_SDK_API_SECRET``, ``SCENARIO_SDK_JWT``,
        ``SCENARIO_BASE_URL`` and ``SCENARIO_PROJECT_ID``.

        Raises:
            ScenarioConfigError: no usable credentials are set.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            "api_key": env.get(ENV_API_KEY) or None,
            "api_secret": env.get(ENV_API_SECRET) or None,
            "bearer_token": env.get(ENV_BEARER_TOKEN) or None,
            "project_id": env.get(ENV_PROJECT_ID) or None,
        }
        if env.get(ENV_BASE_URL):
            values["base_url"] = env[ENV_BASE_URL]
        if not any(values[name] for name in ("api_key", "api_secret", "bearer_token")):
            raise ScenarioConfigError(f"No Scenario credentials found: {_WHAT_TO_SET}.")
        try:
            return cls(**values)
        except ValidationError as exc:
            reason = "; ".join(str(error["msg"]) for error in exc.errors())
            raise ScenarioConfigError(
                f"Scenario credentials in the environment are incomplete ({reason}): {_WHAT_TO_SET}."
            ) from None

    def cache_scope(self) -> str:
        """What cached uploads and jobs are valid for: the API endpoint and project, never a secret."""
        return f"{self.base_url}|project={self.project_id or '-'}"


def _present(value: SecretStr | None) -> bool:
    return value is not None and bool(value.get_secret_value())


# -- one client per (credentials, event loop) ------------------------------------------------------

# Loop -> {identity: client}. Weak on the loop: a closed, collected loop takes its clients along.
_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, ScenarioClient]] = (
    weakref.WeakKeyDictionary()
)
_SHARED_LOCK = threading.Lock()


def _identity(credentials: ScenarioCredentials) -> str:
    """What makes two credentials the same client: endpoint, project and a digest of the secrets.

    The digest never leaves this process's memory (it keys a dict); it keeps two API keys on one
    project from sharing a client.
    """
    secrets = "|".join(
        value.get_secret_value() if value is not None else ""
        for value in (credentials.api_key, credentials.api_secret, credentials.bearer_token)
    )
    digest = hashlib.sha256(secrets.encode()).hexdigest()
    return f"{credentials.cache_scope()}|{digest}"


def _shared_client(credentials: ScenarioCredentials) -> ScenarioClient | None:
    """The running loop's client for ``credentials`` (made on first use); None outside a loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    key = _identity(credentials)
    with _SHARED_LOCK:
        clients = _SHARED.setdefault(loop, {})
        client = clients.get(key)
        if client is None:
            client = credentials.new_client()
            client.shared = True
            clients[key] = client
            if len(clients) == 1:
                _close_with_the_loop(loop)
    return client


def _close_with_the_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Close the loop's shared clients when it shuts down (``asyncio.run`` finalizes async generators).

    An async generator started here is finalized by the loop's ``shutdown_asyncgens``; its
    ``finally`` closes the clients while the loop can still run the close. A loop that is never shut
    down that way drops its connections when it is collected.
    """

    async def closer() -> AsyncIterator[None]:
        try:
            yield
        finally:
            with _SHARED_LOCK:
                clients = list(_SHARED.pop(loop, {}).values())
            for client in clients:
                with contextlib.suppress(Exception):
                    await client.aclose()

    generator = closer()
    started: asyncio.Future[None] = asyncio.ensure_future(generator.__anext__(), loop=loop)
    _STARTED_CLOSERS.add(started)
    started.add_done_callback(_STARTED_CLOSERS.discard)
    _CLOSERS[loop] = generator


# Strong references: a started closer must not be collected before its loop shuts down.
_CLOSERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncIterator[None]] = (
    weakref.WeakKeyDictionary()
)
_STARTED_CLOSERS: set[asyncio.Future[None]] = set()


def shared_clients_count() -> int:
    """How many shared clients the running loop holds (0 outside a loop): for diagnostics."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return 0
    return len(_SHARED.get(loop, {}))


BLOCK_TYPE_PREFIX = "scenario-credentials/"


def _block_name(value: str) -> str:
    """A saved block's name, given as ``my-creds`` or ``scenario-credentials/my-creds``."""
    return value.split("/", 1)[1] if value.startswith(BLOCK_TYPE_PREFIX) else value


def _block_document_id(value: dict[str, Any]) -> str | None:
    """The block document id of a flow parameter Prefect stored as a reference (``{"$ref": …}``)."""
    reference = value.get("$ref")
    document_id = reference.get("block_document_id") if isinstance(reference, dict) else None
    return str(document_id) if document_id else None


def _no_block_named(name: str, exc: Exception) -> ScenarioConfigError:
    return ScenarioConfigError(f"No ScenarioCredentials block named {name!r} ({exc}): {_WHAT_TO_SET}.")


def _wrong_kind(credentials: object) -> ScenarioConfigError:
    kind = type(credentials).__name__
    return ScenarioConfigError(
        f"credentials must be a ScenarioCredentials block, a block name or None, not {kind}"
    )


def _given(credentials: object) -> ScenarioCredentials | str | dict[str, Any]:
    """Where both resolvers start: credentials ready to use, a block name to load, or a block reference."""
    if isinstance(credentials, ScenarioCredentials):
        return credentials
    if credentials is None:
        return ScenarioCredentials.from_env()
    if isinstance(credentials, str):
        return _block_name(credentials)
    if isinstance(credentials, dict):
        return credentials
    raise _wrong_kind(credentials)


async def resolve_credentials(
    credentials: ScenarioCredentials | str | dict[str, Any] | None,
) -> ScenarioCredentials:
    """Turn what a flow was given into credentials: the one resolver of the package.

    Flows call it once at their door and hand the result to every task; the cancel hook calls it
    on the flow run's parameter.

    Args:
        credentials: a ``ScenarioCredentials`` instance (used as is), the name of a saved block
            (loaded; ``scenario-credentials/<name>`` works too), a block reference as Prefect stores
            a block parameter (``{"$ref": {"block_document_id": …}}``), or None (read from the
            environment, see :meth:`ScenarioCredentials.from_env`).

    Raises:
        ScenarioConfigError: nothing usable was found; the message says what to set.
    """
    given = _given(credentials)
    if isinstance(given, ScenarioCredentials):
        return given
    if isinstance(given, str):
        try:
            return await ScenarioCredentials.aload(given)
        except ValueError as exc:
            raise _no_block_named(given, exc) from None
    document_id = _block_document_id(given)
    if document_id is None:
        raise _wrong_kind(given)
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        document = await client.read_block_document(UUID(document_id), include_secrets=True)
    block = ScenarioCredentials._from_block_document(document)
    if not isinstance(block, ScenarioCredentials):
        raise _wrong_kind(block)
    return block


def resolve_credentials_sync(credentials: ScenarioCredentials | str | None) -> ScenarioCredentials:
    """:func:`resolve_credentials` for synchronous callers (a cache policy computing its key).

    Raises:
        ScenarioConfigError: as :func:`resolve_credentials`.
    """
    given = _given(credentials)
    if isinstance(given, ScenarioCredentials):
        return given
    if not isinstance(given, str):
        raise _wrong_kind(given)
    try:
        loaded: ScenarioCredentials = ScenarioCredentials.load(given, _sync=True)  # type: ignore[call-arg,assignment]
    except ValueError as exc:
        raise _no_block_named(given, exc) from None
    return loaded
