"""The webhook receiver: an ASGI app that verifies Scenario's deliveries and hands on job hints.

``POST /`` verifies the signature (:mod:`.signatures`), answers 401 to a forged or stale delivery,
reads the job id from the payload, and awaits ``on_job_hint`` once per delivery id. ``GET /healthz``
answers 200. The app has no module state and no lifespan: build as many as you like, serve one with
uvicorn or mount it into another Starlette/FastAPI app.

A verified delivery is only a **hint**: whoever acts on it reads the job from the API before
believing anything, because Scenario's payload is not documented (scenario-api.md 8.2).

What the answers mean to the sender, which retries any non-2xx:

==========  ============================================================================
200         accepted (the hint was handled), duplicate (already handled), or ignored
            (verified, but no job id or an event type not acted on): never sent again
400         signed, but the body is not a JSON object: malformed, nothing woken
401         unsigned, forged, or stale: refused
413         body over ``max_body_bytes``
503         ``on_job_hint`` raised: the delivery id is not remembered, so a retry is handled
==========  ============================================================================
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from prefect_scenario.client.webhook_endpoints import JOB_END_EVENT_TYPES

from .signatures import SignatureError, SignatureScheme, StandardWebhooks

logger = logging.getLogger("prefect_scenario.webhooks")

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# Long enough to outlast a sender's retries of one delivery (Standard Webhooks senders retry for
# about a day or more); small enough in memory: an id is some tens of bytes.
DEFAULT_DEDUPE_SECONDS = 72 * 3600.0
DEFAULT_DEDUPE_ENTRIES = 10_000


@dataclass(frozen=True)
class JobHint:
    """A verified delivery naming a job: a reason to look at the job, not a statement about it.

    Attributes:
        job_id: the job the payload names (``job_…``).
        event_type: the payload's type (``generation.completed``...), None when it has none.
        delivery_id: the delivery's id (the ``webhook-id`` header, or the payload's ``id``).
    """

    job_id: str
    event_type: str | None
    delivery_id: str | None


OnJobHint = Callable[[JobHint], Awaitable[None]]


class SeenDeliveries:
    """The delivery ids already handled: bounded in size (oldest first out) and in age.

    In memory only: after a restart a retried delivery is handled once more, which the wake-up
    must tolerate anyway (it reads the job, and resuming a resumed run is a no-op).

    Args:
        max_entries: ids kept at most; the oldest go first.
        ttl_seconds: how long an id is remembered.
        clock: monotonic clock (tests pass a fake one).

    Example:
        ```python
        seen = SeenDeliveries(max_entries=1000, ttl_seconds=3600)
        app = create_webhook_app(secret, on_job_hint, seen=seen)
        ```
    """

    def __init__(
        self,
        max_entries: int = DEFAULT_DEDUPE_ENTRIES,
        ttl_seconds: float = DEFAULT_DEDUPE_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or ttl_seconds <= 0:
            raise ValueError("max_entries must be 1 or more and ttl_seconds more than 0")
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def _expire(self) -> None:
        now = self._clock()
        # Insertion order is expiry order (one TTL for all), so the expired ones are at the front.
        while self._expiry and next(iter(self._expiry.values())) <= now:
            self._expiry.popitem(last=False)

    def __contains__(self, delivery_id: object) -> bool:
        self._expire()
        return delivery_id in self._expiry

    def __len__(self) -> int:
        self._expire()
        return len(self._expiry)

    def add(self, delivery_id: str) -> None:
        """Remembers ``delivery_id`` for ``ttl_seconds`` (from now, if it was already known).

        Example:
            ```python
            seen.add("msg_2Lh4...")
            assert "msg_2Lh4..." in seen
            ```
        """
        self._expire()
        self._expiry.pop(delivery_id, None)
        self._expiry[delivery_id] = self._clock() + self.ttl_seconds
        while len(self._expiry) > self.max_entries:
            self._expiry.popitem(last=False)


def _dig(payload: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(payload, dict):
            return None
        payload = payload.get(name)
    return payload


# Where a job id may sit. The emulator sends the first; Scenario's real payload is undocumented, so
# the other plausible places are read too, the most specific first.
_JOB_ID_PATHS: tuple[tuple[str, ...], ...] = (
    ("data", "job", "jobId"),
    ("data", "jobId"),
    ("job", "jobId"),
    ("jobId",),
)


def job_id_of(payload: Any) -> str | None:
    """The job id a delivery's payload names, wherever a plausible shape puts it.

    Read from ``data.job.jobId``, ``data.jobId``, ``job.jobId``, then ``jobId``.

    Example:
        ```python
        assert job_id_of({"data": {"job": {"jobId": "job_1"}}}) == "job_1"
        ```
    """
    for path in _JOB_ID_PATHS:
        value = _dig(payload, *path)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def event_type_of(payload: Any) -> str | None:
    """The payload's event type (``generation.completed``...), from ``type``, ``eventType`` or ``event``.

    Example:
        ```python
        assert event_type_of({"type": "generation.failed"}) == "generation.failed"
        ```
    """
    for name in ("type", "eventType", "event"):
        value = _text(_dig(payload, name))
        if value is not None:
            return value
    return None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it passes ``limit`` bytes (read no further: it is refused anyway)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _answer(status_code: int, outcome: str, **fields: str | None) -> JSONResponse:
    content = {"status": outcome, **{name: value for name, value in fields.items() if value is not None}}
    return JSONResponse(content, status_code=status_code)


def create_webhook_app(
    secret: SecretStr,
    on_job_hint: OnJobHint,
    scheme: SignatureScheme = StandardWebhooks(),  # noqa: B008 - holds no state, shared safely
    *,
    event_types: Collection[str] = JOB_END_EVENT_TYPES,
    seen: SeenDeliveries | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Starlette:
    """The webhook receiver as an ASGI app: ``POST /`` for deliveries, ``GET /healthz``.

    Mounted under a path (``Mount("/hooks/scenario", app)``), register the URL with its trailing
    slash (``https://host/hooks/scenario/``): Starlette redirects the bare path, and webhook
    senders do not follow redirects.

    Args:
        secret: the endpoint's signing secret (from :func:`~.register.load_webhook_secret`).
        on_job_hint: awaited once per verified delivery that names a job; if it raises, the
            delivery answers 503 and is not remembered, so the sender's retry is handled.
        scheme: how signatures are checked (Scenario's real scheme is undocumented; this default
            is inferred).
        event_types: the payload types acted on; other types are answered 200 "ignored". A
            payload without a type is acted on: the hint costs one read of the job.
        seen: the de-duplication memory (one per app by default).
        max_body_bytes: larger bodies are refused with 413.

    Example:
        ```python
        import uvicorn

        async def on_job_hint(hint: JobHint) -> None:
            print("look at", hint.job_id)

        app = create_webhook_app(await load_webhook_secret("scenario-webhook-secret"), on_job_hint)
        uvicorn.run(app, host="127.0.0.1", port=8788)
        ```

    Raises:
        ScenarioConfigError: the secret cannot key ``scheme``.
    """
    scheme.check_secret(secret)
    memory = seen if seen is not None else SeenDeliveries()
    acted_on = frozenset(event_types)
    # Deliveries being handled right now, by id: a retry arriving meanwhile waits for the first
    # outcome instead of calling the hint twice (or answering 200 for a hint that then fails).
    in_flight: dict[str, asyncio.Future[bool]] = {}

    async def receive(request: Request) -> JSONResponse:
        body = await _read_body(request, max_body_bytes)
        if body is None:
            logger.warning("Scenario webhook delivery refused (413): body over %d bytes", max_body_bytes)
            return _answer(413, "refused", reason="body too large")
        try:
            signed_id = scheme.verify(request.headers, body, secret)
        except SignatureError as exc:
            # Only the reason: headers, signatures and the secret never reach a log or an answer.
            client = request.client.host if request.client else "?"
            logger.warning("Scenario webhook delivery from %s refused (401): %s", client, exc.reason)
            return _answer(401, "refused", reason=exc.reason)
        payload = _json(body)
        if not isinstance(payload, dict):
            # Signed but unreadable: a sender's bug, which no retry of the same bytes mends.
            logger.warning(
                "Scenario webhook delivery %s refused (400): the body is not a JSON object", signed_id
            )
            return _answer(400, "refused", reason="the body is not a JSON object")
        delivery_id = signed_id or _text(_dig(payload, "id"))
        event_type = event_type_of(payload)
        job_id = job_id_of(payload)
        described = f"{delivery_id or '(no id)'} ({event_type or 'no type'})"

        if delivery_id is not None:
            if delivery_id in memory:
                logger.info("Scenario webhook delivery %s for job %s: duplicate", described, job_id)
                return _answer(200, "duplicate", deliveryId=delivery_id)
            pending = in_flight.get(delivery_id)
            if pending is not None:
                handled = await asyncio.shield(pending)
                logger.info(
                    "Scenario webhook delivery %s for job %s: duplicate of one in flight (%s)",
                    described,
                    job_id,
                    "handled" if handled else "failed",
                )
                if handled:
                    return _answer(200, "duplicate", deliveryId=delivery_id)
                return _answer(503, "error", reason="wake-up failed; retry later")

        ignored: str | None = None
        if event_type is not None and event_type not in acted_on:
            ignored = f"event type {event_type} is not acted on"
        elif job_id is None:
            ignored = "no job id in the payload"
        if ignored is not None or job_id is None:
            logger.info("Scenario webhook delivery %s for job %s: ignored (%s)", described, job_id, ignored)
            if delivery_id is not None:
                memory.add(delivery_id)
            return _answer(200, "ignored", deliveryId=delivery_id, reason=ignored)

        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if delivery_id is not None:
            in_flight[delivery_id] = future
        try:
            await on_job_hint(JobHint(job_id=job_id, event_type=event_type, delivery_id=delivery_id))
        except Exception:
            logger.exception(
                "Scenario webhook delivery %s for job %s: the wake-up failed (503)", described, job_id
            )
            return _answer(503, "error", reason="wake-up failed; retry later")
        else:
            if delivery_id is not None:
                memory.add(delivery_id)
            future.set_result(True)
            logger.info("Scenario webhook delivery %s for job %s: accepted", described, job_id)
            return _answer(200, "accepted", deliveryId=delivery_id, jobId=job_id)
        finally:
            # Waiters must never hang: a failure (or a cancel) resolves them as failed.
            if not future.done():
                future.set_result(False)
            if delivery_id is not None:
                in_flight.pop(delivery_id, None)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/", receive, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    # For whoever serves it: what this receiver checks and remembers (never the secret).
    app.state.scheme = scheme
    app.state.seen = memory
    return app
