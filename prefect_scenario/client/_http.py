"""The HTTP core of the client: authentication, the one retry layer, error mapping.

Everything that touches the wire goes through :class:`HttpCore`; the resource APIs above it only
build paths and parse models.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import logging
import os
import random
import ssl
from collections.abc import Awaitable, Callable, Generator, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pydantic
from pydantic import SecretStr

from prefect_scenario.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ScenarioAPIError,
    ScenarioConfigError,
    ScenarioTransportError,
    ServerError,
)
from prefect_scenario.models import ApiErrorBody

from .policies import RetryPolicy

logger = logging.getLogger("prefect_scenario.client")


def shared_ssl_context() -> ssl.SSLContext:
    """The TLS context httpx would build by default, built once per process and CA setting.

    httpx creates a new context (and parses the CA bundle) for every ``AsyncClient``: a Prefect
    batch opens a client per task, and the benchmarks found 45 % of a 1,000-job flow's CPU there.
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` are honoured as httpx honours them.
    """
    return _ssl_context_for(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _ssl_context_for(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    # The arguments only key the cache: create_ssl_context reads the same variables itself.
    return httpx.create_ssl_context()


Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)

# Exceptions raised before a single byte of the request left: sending again cannot duplicate work.
_NOT_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
# Exceptions that say the request itself is unusable: another attempt would fail the same way.
_NOT_RETRYABLE: tuple[type[httpx.TransportError], ...] = (
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.ProxyError,
)

_STATUS_ERRORS: dict[int, type[ScenarioAPIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    # The API's validation failures; retrying never helps, exactly like a 400.
    422: BadRequestError,
    429: RateLimitError,
}


def _as_secret(value: str | SecretStr | None) -> SecretStr | None:
    if value is None:
        return None
    secret = value if isinstance(value, SecretStr) else SecretStr(value)
    return secret if secret.get_secret_value() else None


class ScenarioAuth(httpx.Auth):
    """Scenario credentials, kept as ``SecretStr``; Basic (key and secret) wins over Bearer.

    Attached to API requests only: presigned upload URLs and signed file URLs never see it.
    """

    def __init__(
        self,
        *,
        api_key: str | SecretStr | None,
        api_secret: str | SecretStr | None,
        bearer_token: str | SecretStr | None,
    ) -> None:
        self._key = _as_secret(api_key)
        self._secret = _as_secret(api_secret)
        self._bearer = _as_secret(bearer_token)
        if self._key is not None and self._secret is not None:
            self.scheme = "basic"
        elif self._bearer is not None:
            self.scheme = "bearer"
        elif self._key is not None or self._secret is not None:
            raise ScenarioConfigError(
                "Scenario credentials are incomplete: an API key needs its API secret "
                "(Project settings -> API keys), or pass a bearer token"
            )
        else:
            raise ScenarioConfigError(
                "no Scenario credentials: pass api_key and api_secret (or a bearer_token)"
            )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Sets the Authorization header of an API request."""
        request.headers["Authorization"] = self._header_value()
        yield request

    def _header_value(self) -> str:
        # The one place where secrets are unwrapped. Nothing here may be logged or raised.
        if self.scheme == "basic":
            assert self._key is not None
            assert self._secret is not None
            key = self._key.get_secret_value()
            if ":" in key:
                raise ScenarioConfigError("the Scenario API key contains ':', which Basic auth cannot carry")
            pair = f"{key}:{self._secret.get_secret_value()}".encode()
            return "Basic " + base64.b64encode(pair).decode("ascii")
        assert self._bearer is not None
        return "Bearer " + self._bearer.get_secret_value()

    def __repr__(self) -> str:
        return f"ScenarioAuth(scheme={self.scheme!r})"


def utc_iso(moment: datetime) -> str:
    """A datetime in the API's form: ISO 8601 UTC with milliseconds and ``Z``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def retry_after_seconds(response: httpx.Response) -> float | None:
    """What the server asks us to wait: ``retry-after-ms``, ``Retry-After``, or a 429's body."""
    headers = response.headers
    try:
        if "retry-after-ms" in headers:
            return max(float(headers["retry-after-ms"]) / 1000.0, 0.0)
        if "retry-after" in headers:
            raw = headers["retry-after"].strip()
            try:
                return max(float(raw), 0.0)
            except ValueError:
                when = email.utils.parsedate_to_datetime(raw)
                return max((when - datetime.now(UTC)).total_seconds(), 0.0)
    except (ValueError, TypeError, OverflowError):
        return None
    if response.status_code == 429:
        # Cooldown 429s carry remainingSeconds in the body (scenario-api.md 9.1).
        body = _error_body(response)
        if body.remaining_seconds is not None:
            return max(body.remaining_seconds, 0.0)
    return None


def _error_body(response: httpx.Response) -> ApiErrorBody:
    try:
        payload = response.json()
    except (ValueError, UnicodeDecodeError):
        return ApiErrorBody()
    if not isinstance(payload, dict):
        return ApiErrorBody()
    try:
        return ApiErrorBody.model_validate(payload)
    except pydantic.ValidationError:
        return ApiErrorBody()


def describe(method: str, url: httpx.URL) -> str:
    """``METHOD /path``: never the query string (it may carry URL signatures)."""
    return f"{method} {url.path}"


def error_for_response(
    response: httpx.Response, *, retry_after: float | None = None, note: str = ""
) -> ScenarioAPIError:
    """The exception of the tree in ``errors.py`` for an error response."""
    request = response.request
    body = _error_body(response)
    reason = body.text or response.reason_phrase or "error"
    message = f"{describe(request.method, request.url)} answered {response.status_code}: {reason}"
    if body.trace_id:
        message += f" (trace {body.trace_id})"
    if note:
        message += f" {note}"
    status = response.status_code
    cls = _STATUS_ERRORS.get(status, ServerError if status >= 500 else ScenarioAPIError)
    return cls(
        message,
        status_code=status,
        method=request.method,
        url=str(request.url.copy_with(query=None)),
        reason=body.text,
        trace_id=body.trace_id,
        details=body.details,
        retry_after_seconds=retry_after if retry_after is not None else retry_after_seconds(response),
    )


def transport_error(
    exc: httpx.TransportError, request: httpx.Request, *, attempts: int = 1
) -> ScenarioTransportError:
    """A :class:`ScenarioTransportError` saying whether the request may have reached the server."""
    sent = not isinstance(exc, _NOT_SENT)
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    detail = str(exc) or type(exc).__name__
    message = (
        f"{describe(request.method, request.url)} got no answer{tried}: {type(exc).__name__}: {detail} "
        f"({'the request may have reached the server' if sent else 'the request was not sent'})"
    )
    return ScenarioTransportError(
        message, method=request.method, url=str(request.url.copy_with(query=None)), request_sent=sent
    )


class HttpCore:
    """One ``httpx.AsyncClient`` per lifecycle, the API's URL scheme, and the retry layer."""

    def __init__(
        self,
        *,
        base_url: str,
        auth: ScenarioAuth,
        project_id: str | None,
        timeout: float | httpx.Timeout,
        transport: httpx.AsyncBaseTransport | None,
        retry: RetryPolicy,
        user_agent: str,
        sleep: Sleep,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.project_id = project_id
        self.retry = retry
        self.sleep = sleep
        self.clock = clock
        self.rng = rng
        self._timeout = (
            timeout
            if isinstance(timeout, httpx.Timeout)
            else httpx.Timeout(timeout, connect=min(10.0, timeout))
        )
        self._transport = transport
        self._user_agent = user_agent
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        """The live ``httpx.AsyncClient``, created on first use of a lifecycle."""
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                transport=self._transport,
                verify=shared_ssl_context(),
                headers={"Accept": "application/json", "User-Agent": self._user_agent},
                # httpx drops the Authorization header on a cross-origin redirect.
                follow_redirects=True,
            )
        return self._client

    async def aclose(self) -> None:
        """Closes the ``httpx.AsyncClient``; the next request opens a new one."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def url(self, *segments: str) -> str:
        """The absolute URL of an API path, each segment percent-encoded."""
        parts = []
        for segment in segments:
            if segment in ("", ".", ".."):
                raise ScenarioConfigError(f"invalid path segment {segment!r} (an empty or dot id)")
            parts.append(quote(segment, safe=""))
        return f"{self.base_url}/{'/'.join(parts)}"

    def api_request(
        self,
        method: str,
        *segments: str,
        params: Mapping[str, str | int | float | bool | None] | None = None,
        json: Any = None,
    ) -> httpx.Request:
        """A request to the Scenario API (``projectId`` added when configured)."""
        query: dict[str, str] = {}
        for name, value in (params or {}).items():
            if value is None:
                continue
            query[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        if self.project_id:
            query.setdefault("projectId", self.project_id)
        return self.client.build_request(method, self.url(*segments), params=query, json=json)

    async def send_api(
        self,
        method: str,
        *segments: str,
        params: Mapping[str, str | int | float | bool | None] | None = None,
        json: Any = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        """Sends an API request under the retry policy; returns a success response (any 2xx)."""
        return await self.send(
            lambda: self.api_request(method, *segments, params=params, json=json),
            auth=True,
            idempotent=idempotent,
        )

    async def send(
        self,
        build: Callable[[], httpx.Request],
        *,
        auth: bool,
        idempotent: bool,
    ) -> httpx.Response:
        """Sends a request built by ``build`` under the retry policy.

        An idempotent request is retried on connect errors, timeouts, resets, 408, 409, 429 and
        5xx. A non-idempotent one only on failures that prove the request was never sent; every
        status is raised to the caller, which decides what an ambiguous outcome means.

        Raises:
            ScenarioAPIError: an error status (subclass by status), after retries.
            ScenarioTransportError: no answer, after retries.
        """
        policy = self.retry
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            request = build()
            delay: float | None
            try:
                response = await self.client.send(request, auth=self.auth if auth else None)
                _release(response)
            except httpx.TransportError as exc:
                retryable = not isinstance(exc, _NOT_RETRYABLE) and (idempotent or isinstance(exc, _NOT_SENT))
                if not retryable or attempt >= policy.max_attempts:
                    raise transport_error(exc, request, attempts=attempt) from None
                delay = policy.backoff(attempt - 1, self.rng)
                if self.clock() - started + delay > policy.max_total_seconds:
                    raise transport_error(exc, request, attempts=attempt) from None
                logger.debug(
                    "%s failed (%s); attempt %d of %d in %.2f s",
                    describe(request.method, request.url),
                    type(exc).__name__,
                    attempt + 1,
                    policy.max_attempts,
                    delay,
                )
                await self.sleep(delay)
                continue
            if response.is_success:
                return response
            if not (idempotent and self._should_retry(response)):
                raise error_for_response(response)
            if attempt >= policy.max_attempts:
                raise error_for_response(response, note=f"after {attempt} attempts")
            asked = retry_after_seconds(response)
            remaining = policy.max_total_seconds - (self.clock() - started)
            if asked is not None and asked > 0:
                if asked > policy.max_retry_after or asked > remaining:
                    # Waiting that long inside one call would hide the wait from the caller;
                    # raise with the figure so a flow can reschedule instead.
                    raise error_for_response(response, retry_after=asked)
                delay = asked
            else:
                delay = policy.backoff(attempt - 1, self.rng)
                if delay > remaining:
                    raise error_for_response(response, note=f"after {attempt} attempts")
            logger.debug(
                "%s answered %d; attempt %d of %d in %.2f s",
                describe(request.method, request.url),
                response.status_code,
                attempt + 1,
                policy.max_attempts,
                delay,
            )
            await self.sleep(delay)

    @staticmethod
    def _should_retry(response: httpx.Response) -> bool:
        # The SDK's override header wins over the status rule (scenario-api.md 1.5).
        forced = str(response.headers.get("x-should-retry", "")).lower()
        if forced in ("true", "false"):
            return forced == "true"
        return RetryPolicy.is_retryable_status(response.status_code)


def _release(response: httpx.Response) -> None:
    """Lets the response (and the request body it references) be freed as soon as it is dropped.

    httpx binds a response and its stream in a reference cycle, which only the cyclic garbage
    collector breaks; until it runs, every request body stays alive. Upload parts are megabytes
    each: without this, memory grows with the parts sent instead of the parts in flight. The body
    has been read by now (``send`` without ``stream=True``), so the stream is no longer needed.
    """
    response.stream = httpx.ByteStream(response.content)


def parse(model: type[ModelT], response: httpx.Response) -> ModelT:
    """A success response's JSON body as ``model``.

    Raises:
        ScenarioAPIError: the body is not the documented shape (the status is kept).
    """
    try:
        return model.model_validate(response.json())
    except (ValueError, pydantic.ValidationError) as exc:
        request = response.request
        what = exc.errors()[0]["msg"] if isinstance(exc, pydantic.ValidationError) else "not JSON"
        raise ScenarioAPIError(
            f"{describe(request.method, request.url)} answered {response.status_code} with a body "
            f"that is not a {model.__name__}: {what}",
            status_code=response.status_code,
            method=request.method,
            url=str(request.url.copy_with(query=None)),
        ) from None
