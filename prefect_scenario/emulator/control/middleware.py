"""Fault injection: the ASGI middleware that carries out the state's fault rules on each request.

The rules themselves (:class:`~prefect_scenario.emulator.service.faults.FaultRule`) are posted to
``/_emulator/faults`` and held by the state; this middleware counts every API and file request by
its route template and applies the request-level kinds (``status``, ``reset``,
``reset_after_accept``, ``delay``, ``truncate``) before the route runs.

The middleware sits outside everything else (``EmulatorApp.__call__`` puts it before FastAPI's own
layers, Starlette's error middleware included), so it sees every route and knows its template
before the route runs, and a dropped connection never turns into a 500.

"Dropping" means: over a real server (uvicorn), close the socket without answering; under
``httpx.ASGITransport`` there is no socket, so the middleware raises :class:`ConnectionDropped`,
which *is* an ``httpx.RemoteProtocolError``: both transports give the client the same "no
response".

A client that goes away does not undo its request: like a real server, the emulator completes the
work of a request that does work (every method but GET and HEAD) when its client disconnects or
its task is cancelled, both while a ``delay`` holds it and while the route runs. A ``delay`` rule
with ``complete_after_disconnect: false`` abandons the request instead, when its client is gone by
the end of the delay.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prefect_scenario.emulator.api.paths import CONTROL_PREFIX
from prefect_scenario.emulator.service.faults import FaultRule
from prefect_scenario.emulator.service.ids import new_trace_id

if TYPE_CHECKING:
    from prefect_scenario.emulator.service.state import EmulatorState

# fail_job is consumed by the generate route when it creates a job, not by the middleware.
MIDDLEWARE_KINDS: frozenset[str] = frozenset({"status", "reset", "reset_after_accept", "delay", "truncate"})
# Methods that only read: nothing to complete once their client is gone.
READ_ONLY_METHODS: frozenset[str] = frozenset({"GET", "HEAD"})

logger = logging.getLogger(__name__)


class ConnectionDropped(httpx.RemoteProtocolError):
    """The emulator dropped the connection without answering (raised under ASGITransport only)."""


async def _never_called(request: Request) -> Response:  # pragma: no cover - matching only
    raise RuntimeError("fault-matching routes are never served")


def matching_routes(templates: Iterable[tuple[str, Collection[str]]]) -> list[BaseRoute]:
    """Routes that only serve to match a request to its ``(path template, methods)``."""
    return [Route(path, _never_called, methods=list(methods)) for path, methods in templates]


def route_key(routes: Sequence[BaseRoute], scope: Scope) -> str | None:
    """``"METHOD /template"`` of the route serving ``scope``, or None when no route matches."""
    method = str(scope.get("method", "GET")).upper()
    partial: str | None = None
    for route in routes:
        match, _ = route.matches(scope)
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            continue
        if match is Match.FULL:
            return f"{method} {path}"
        if match is Match.PARTIAL and partial is None:
            partial = f"{method} {path}"
    return partial


class FaultMiddleware:
    """Counts requests per route template and applies the fault rules of ``state``."""

    def __init__(
        self, app: ASGIApp, *, state: EmulatorState, templates: Iterable[tuple[str, Collection[str]]]
    ) -> None:
        self.app = app
        self.state = state
        # Our own matching table: the app's routers nest their routes in framework-private ways.
        self.routes = matching_routes(templates)
        # Requests finishing after their connection's task was cancelled: the event loop keeps only
        # weak references to tasks, so without these a detached request could be collected midway.
        self._detached: set[asyncio.Future[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the request, then serve it as its fault rule (if any) says."""
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        key = route_key(self.routes, scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        self.state.count_request(key, (str(client[0]), int(client[1])) if client else None)
        rule = self.state.take_fault(key, MIDDLEWARE_KINDS)
        serving = self._serve(rule, scope, receive, send)
        if _completes_after_disconnect(rule, scope):
            await self._to_completion(serving)
        else:
            await serving

    async def _serve(self, rule: FaultRule | None, scope: Scope, receive: Receive, send: Send) -> None:
        if rule is None:
            await self.app(scope, receive, send)
        elif rule.kind == "status":
            await _answer_status(rule, send)
        elif rule.kind == "reset":
            await _drop(send)
        elif rule.kind == "reset_after_accept":
            await self.app(scope, receive, _swallow)
            await _drop(send)
        elif rule.kind == "delay":
            await self._delay(rule, scope, receive, send)
        else:
            await self.app(scope, receive, _Truncating(send, rule.keep_fraction))
            await _drop(send)

    async def _delay(self, rule: FaultRule, scope: Scope, receive: Receive, send: Send) -> None:
        # Read the whole request before holding it: once the client hangs up, the server's receive
        # answers only http.disconnect (uvicorn drops what it had buffered), and the route would
        # fail reading its body (Starlette's ClientDisconnect) instead of doing the work.
        held = await _HeldRequest.read(receive)
        if held is None:
            return  # the client left before its request was whole: there is nothing to serve
        try:
            await asyncio.sleep(rule.seconds)
            if held.client_gone and not _completes_after_disconnect(rule, scope):
                return  # abandoned, as a server that notices the hang-up would
            await self.app(scope, held.receive, send)
        finally:
            held.close()

    async def _to_completion(self, serving: Coroutine[Any, Any, None]) -> None:
        """Run ``serving`` to its end even if the task serving the connection is cancelled.

        Servers and ``httpx.ASGITransport`` may cancel a request's task when its client goes away
        (ASGITransport runs the app in the caller's task): a real server would still finish.
        """
        task = asyncio.ensure_future(serving)
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                # Nobody awaits it any more: its failure would otherwise go unreported.
                task.add_done_callback(_report_detached_failure)
            raise


def _completes_after_disconnect(rule: FaultRule | None, scope: Scope) -> bool:
    if rule is not None and rule.kind == "delay" and rule.complete_after_disconnect is not None:
        return rule.complete_after_disconnect
    return str(scope.get("method", "GET")).upper() not in READ_ONLY_METHODS


def _report_detached_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("a request whose client left failed while completing", exc_info=exc)


class _HeldRequest:
    """A request whose body was read up front, replayed to the app as one message."""

    def __init__(self, body: bytes, receive: Receive) -> None:
        self._body: bytes | None = body
        # After the body, the server's next message is the disconnect (a hang-up, or the end of the
        # response): waiting for it from now on is how we learn, during the delay, that the client
        # left. Shared by every later receive() of the app.
        self._after: asyncio.Future[Message] = asyncio.ensure_future(receive())

    @classmethod
    async def read(cls, receive: Receive) -> _HeldRequest | None:
        """Read the whole body; None when the client disconnects first."""
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    return cls(b"".join(chunks), receive)

    @property
    def client_gone(self) -> bool:
        """True once the server reported the client's disconnect."""
        after = self._after
        return (
            after.done()
            and not after.cancelled()
            and after.exception() is None
            and (after.result()["type"] == "http.disconnect")
        )

    async def receive(self) -> Message:
        """The body first, then whatever the server says next (the disconnect)."""
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        # Shielded: an app cancelling its own wait (Starlette's disconnect listener does) must not
        # cancel the one wait every receive() shares.
        return await asyncio.shield(self._after)

    def close(self) -> None:
        """Stop waiting for the server's next message."""
        if self._after.done():
            if not self._after.cancelled():
                self._after.exception()  # retrieved, so asyncio never warns about it
        else:
            self._after.cancel()


async def _swallow(message: Message) -> None:
    """A ``send`` that lets the route do its work while nothing reaches the client."""


class _Truncating:
    """A ``send`` that forwards the headers (full Content-Length) and only part of the body."""

    def __init__(self, send: Send, keep_fraction: float) -> None:
        self._send = send
        self._keep_fraction = keep_fraction
        self._budget: int | None = None
        self._sent = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            for name, value in message.get("headers", []):
                if name.lower() == b"content-length":
                    self._budget = int(int(value) * self._keep_fraction)
            await self._send(message)
            return
        if message["type"] != "http.response.body":
            return
        body: bytes = message.get("body", b"")
        budget = self._budget if self._budget is not None else len(body) // 2
        chunk = body[: max(0, budget - self._sent)]
        if chunk:
            self._sent += len(chunk)
            await self._send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _answer_status(rule: FaultRule, send: Send) -> None:
    reason = rule.reason or f"Injected fault: the emulator answers HTTP {rule.status}"
    payload: dict[str, Any] = {"reason": reason, "traceId": new_trace_id()}
    if rule.details is not None:
        payload["details"] = rule.details
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if rule.retry_after is not None:
        headers.append((b"retry-after", _seconds_text(rule.retry_after).encode()))
    await send({"type": "http.response.start", "status": rule.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _seconds_text(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


async def _drop(send: Send) -> None:
    """End the exchange without an answer (or without the rest of one).

    uvicorn's ``send`` is a method of its per-request cycle, which holds the socket transport:
    closing that is the only way to hang up without uvicorn answering 500 in our place. With no
    socket (ASGITransport), raise an httpx transport error instead.
    """
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if not isinstance(transport, asyncio.BaseTransport):
        raise ConnectionDropped("Server disconnected without sending a response.")
    transport.close()
    # Let the server see the disconnect before we return, so it neither answers nor logs an
    # "ASGI callable returned without completing response" error.
    for _ in range(200):
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0.005)
