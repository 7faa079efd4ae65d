"""The :class:`ScenarioClient`: one object, six resource APIs, one HTTP core."""

from __future__ import annotations

import asyncio
import importlib.metadata
import random
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

import httpx
from pydantic import SecretStr

from prefect_scenario.models import DEFAULT_BASE_URL

from ._http import HttpCore, ScenarioAuth
from .assets import AssetsAPI
from .generate import GenerateAPI
from .jobs import JobsAPI
from .models_api import ModelsAPI
from .policies import PollPolicy, RetryPolicy
from .uploads import UploadsAPI
from .webhook_endpoints import WebhookEndpointsAPI


def _user_agent(suffix: str | None) -> str:
    try:
        version = importlib.metadata.version("prefect-scenario")
    except importlib.metadata.PackageNotFoundError:
        version = "0+unknown"
    agent = f"prefect-scenario/{version} httpx/{httpx.__version__}"
    return f"{agent} {suffix}" if suffix else agent


class ScenarioClient:
    """Async client of the Scenario API.

    Use it as an async context manager (``async with ScenarioClient(...) as client``) or call
    :meth:`aclose` when done; each lifecycle owns one ``httpx.AsyncClient``.

    Attributes:
        uploads: multipart uploads of local files.
        assets: assets, small images, downloads.
        generate: estimates and paid runs.
        jobs: read, list, cancel, wait.
        models: model descriptors.
        webhook_endpoints: the project's webhook endpoints and their deliveries.
        base_url: the API root, e.g. ``https://api.cloud.scenario.com/v1``.
        project_id: sent as ``projectId`` on every API request when set.
    """

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | SecretStr | None = None,
        api_secret: str | SecretStr | None = None,
        bearer_token: str | SecretStr | None = None,
        project_id: str | None = None,
        timeout: float | httpx.Timeout = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, shared safely
        polling: PollPolicy = PollPolicy(),  # noqa: B008 - frozen, shared safely
        user_agent_suffix: str | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        """Builds a client; nothing is sent until the first call.

        Args:
            base_url: the API root.
            api_key: API key (with ``api_secret``: Basic auth, which wins over a bearer token).
            api_secret: API secret.
            bearer_token: a JWT, used when no key and secret are given.
            project_id: the project, sent as ``projectId``.
            timeout: seconds (connect capped at 10 s), or an ``httpx.Timeout``.
            transport: an httpx transport (``httpx.MockTransport``, ``httpx.ASGITransport``...).
            retry: the retry policy of idempotent requests.
            polling: the poll policy of :meth:`JobsAPI.wait`.
            user_agent_suffix: appended to the User-Agent (e.g. the Prefect integration's name).
            sleep: how the retry layer waits (tests pass a fake that records delays).
            clock: monotonic clock of the retry budgets (matching ``sleep``).
            rng: source of jitter (seed it for reproducible delays).

        Raises:
            ScenarioConfigError: no usable credentials.
        """
        auth = ScenarioAuth(api_key=api_key, api_secret=api_secret, bearer_token=bearer_token)
        self._http = HttpCore(
            base_url=base_url,
            auth=auth,
            project_id=project_id,
            timeout=timeout,
            transport=transport,
            retry=retry,
            user_agent=_user_agent(user_agent_suffix),
            sleep=sleep,
            clock=clock,
            rng=rng or random.Random(),
        )
        self.uploads = UploadsAPI(self._http)
        self.assets = AssetsAPI(self._http, self.uploads)
        self.jobs = JobsAPI(self._http, polling)
        self.generate = GenerateAPI(self._http, self.jobs)
        self.models = ModelsAPI(self._http)
        self.webhook_endpoints = WebhookEndpointsAPI(self._http)
        # A shared client (one per credentials and event loop, see ScenarioCredentials.get_client)
        # outlives each ``async with``: only aclose() closes it.
        self.shared = False

    @property
    def base_url(self) -> str:
        """The API root, without a trailing slash."""
        return self._http.base_url

    @property
    def project_id(self) -> str | None:
        """The project sent as ``projectId``, if any."""
        return self._http.project_id

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy in force."""
        return self._http.retry

    async def __aenter__(self) -> ScenarioClient:
        """Opens the HTTP client of this lifecycle."""
        _ = self._http.client
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Closes the HTTP client, unless the client is shared (then its owner closes it)."""
        if not self.shared:
            await self.aclose()

    async def aclose(self) -> None:
        """Closes the HTTP client; a later call opens a new one."""
        await self._http.aclose()

    def __repr__(self) -> str:
        return (
            f"ScenarioClient(base_url={self.base_url!r}, project_id={self.project_id!r}, "
            f"auth={self._http.auth.scheme!r})"
        )
