"""A real HTTP receiver of webhook deliveries for the tests, and signature checks written from the specs.

:class:`WebhookReceiver` is a threaded ``http.server`` on a free 127.0.0.1 port that records every
POST (path, headers, raw body) and answers from a script (or a function of the request). It is a
context manager: on exit the server is shut down and every thread it started is joined.

The signature checks here are independent of the emulator's code (the Standard Webhooks spec, and
the GitHub-style hex HMAC), so a test that uses them checks the emulator against the spec rather
than against itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class ReceivedRequest:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    received_at: float  # time.monotonic()

    def json(self) -> Any:
        """The body, parsed."""
        return json.loads(self.body)


Responder = Callable[[ReceivedRequest], int]


class WebhookReceiver:
    """Records deliveries; answers the queued statuses first (:meth:`answer_with`), then 200.

    Args:
        respond: when given, decides every answer from the request instead (queued statuses
            still come first).
    """

    def __init__(self, respond: Responder | None = None) -> None:
        self.requests: list[ReceivedRequest] = []
        self._respond = respond
        self._answers: deque[int] = deque()
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        assert self._server is not None, "the receiver is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer_with(self, *statuses: int) -> None:
        """Answer the next requests with these statuses, in order."""
        with self._changed:
            self._answers.extend(statuses)

    def received(self, path: str | None = None) -> list[ReceivedRequest]:
        """What came so far (to ``path`` only, when given)."""
        with self._changed:
            return [r for r in self.requests if path is None or r.path == path]

    def wait_for(
        self, count: int, *, path: str | None = None, timeout: float = WAIT_SECONDS
    ) -> list[ReceivedRequest]:
        """Block until ``count`` requests (to ``path``) came; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                got = [r for r in self.requests if path is None or r.path == path]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                assert left > 0, f"{len(got)} of {count} webhook requests came within {timeout} s: {got}"
                self._changed.wait(left)

    def _record(self, request: ReceivedRequest) -> int:
        with self._changed:
            self.requests.append(request)
            self._changed.notify_all()
            if self._answers:
                return self._answers.popleft()
        return self._respond(request) if self._respond is not None else 200

    def __enter__(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                request = ReceivedRequest(
                    path=self.path,
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=body,
                    received_at=time.monotonic(),
                )
                status = receiver._record(request)
                answer = json.dumps({"received": True}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the tests assert on what came; stderr noise helps nobody

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # Request threads are joined by server_close(): nothing outlives the with block.
        server.daemon_threads = False
        server.block_on_close = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        assert self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def standard_webhooks_valid(request: ReceivedRequest, secret: str) -> bool:
    """True when the request carries a valid Standard Webhooks signature under ``secret``.

    From the spec: the key is the base64 after ``whsec_``; the signed content is
    ``"{webhook-id}.{webhook-timestamp}.{body}"``; ``webhook-signature`` is a space-separated list
    of ``v1,<base64 HMAC-SHA256>``, any of which may match.
    """
    headers = request.headers
    try:
        message_id = headers["webhook-id"]
        timestamp = headers["webhook-timestamp"]
        signatures = headers["webhook-signature"].split(" ")
    except KeyError:
        return False
    key = base64.b64decode(secret.split("_", 1)[1])
    content = f"{message_id}.{timestamp}.".encode() + request.body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return any(
        version == "v1" and hmac.compare_digest(value, expected)
        for version, _, value in (entry.partition(",") for entry in signatures)
    )


def hex_hmac_valid(request: ReceivedRequest, secret: str, header: str = "x-scenario-signature") -> bool:
    """True when ``header`` is the hex HMAC-SHA256 of the body keyed by the secret string."""
    expected = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(request.headers.get(header, ""), expected)
