"""Prefect blocks of prefect-scenario: the Scenario credentials, and how a task finds them.

Secrets stay ``SecretStr`` in the block; :meth:`ScenarioCredentials.get_client` is the only place
they are handed to the HTTP client (which builds the auth header). Reprs, logs, events, cache keys
and results never carry them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from prefect.blocks.abstract import CredentialsBlock
from pydantic import ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

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
    _logo_url = "https://cdn.prod.website-files.com/63f4c7c3b1a2f4c8d5e5e9e1/scenario-logo-square.png"  # type: ignore[assignment]
    _documentation_url = "https://docs.scenario.com/docs/api-authentication"  # type: ignore[assignment]

    api_key: SecretStr | None = Field(
        default=None,
        description="Scenario API key (project settings, API keys). Needs the API secret.",
    )
    api_secret: SecretStr | None = Field(
        default=None,
        description="Secret of the Scenario API key.",
    )
    bearer_token: SecretStr | None = Field(
        default=None,
        description="A bearer token (JWT), used instead of an API key and secret.",
    )
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        title="Base URL",
        description="Base URL of the Scenario API, including the version path.",
    )
    project_id: str | None = Field(
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

        Args:
            **overrides: other ``ScenarioClient`` arguments (``timeout``, ``retry``, ``polling``,
                ``transport``), or a replacement ``base_url``/``project_id``.

        Returns:
            A ``ScenarioClient``.
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


async def resolve_credentials(credentials: ScenarioCredentials | str | None) -> ScenarioCredentials:
    """Turn what a flow was given into credentials.

    Args:
        credentials: a ``ScenarioCredentials`` instance (used as is), the name of a saved block
            (loaded), or None (read from the environment, see :meth:`ScenarioCredentials.from_env`).

    Raises:
        ScenarioConfigError: nothing usable was found; the message says what to set.
    """
    if isinstance(credentials, ScenarioCredentials):
        return credentials
    if credentials is None:
        return ScenarioCredentials.from_env()
    if isinstance(credentials, str):
        name = (
            credentials.split("/", 1)[1] if credentials.startswith("scenario-credentials/") else credentials
        )
        try:
            return await ScenarioCredentials.aload(name)
        except ValueError as exc:
            raise ScenarioConfigError(
                f"No ScenarioCredentials block named {name!r} ({exc}): {_WHAT_TO_SET}."
            ) from None
    kind = type(credentials).__name__
    raise ScenarioConfigError(
        f"credentials must be a ScenarioCredentials block, a block name or None, not {kind}"
    )
