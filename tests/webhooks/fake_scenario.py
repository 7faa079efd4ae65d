"""A stand-in for Scenario's webhook-endpoint routes: over httpx.MockTransport, or on loopback.

Only what registering needs (create, list, delete), with the wire shapes of the SDK's models, so
``register_webhook_endpoint`` and the CLI run their whole client path. One implementation serves
both seams: the MockTransport handler and a Starlette app uvicorn serves in a thread.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from support.net import free_port

_PATH = re.compile(r"^/v1/projects/(?P<project>[^/]+)/webhook-endpoints(?:/(?P<endpoint>[^/]+))?$")


class FakeWebhookAPI:
    """Endpoints by id, every request seen, and switches for failures."""

    def __init__(self) -> None:
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.secrets: list[str] = []  # every secret handed out, for "never shown" checks
        self.fail_delete = False
        self.on_create: Any = None  # an async callable run before the create answers (a race)

    async def answer(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        parsed = json.loads(body) if body else None
        self.requests.append((method, path, parsed))
        match = _PATH.match(path)
        if match is None:
            return 404, {"reason": f"no route {path}"}
        project, endpoint_id = match["project"], match["endpoint"]
        if method == "POST" and endpoint_id is None:
            endpoint_id = f"whe_{len(self.endpoints) + 1}"
            secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
            self.secrets.append(secret)
            endpoint = {
                "id": endpoint_id,
                "url": parsed["url"],
                "enabled": True,
                "enabledEvents": parsed["enabledEvents"],
                "nbTotalCalls": 0,
                "nbFailedCalls": 0,
                "ownerId": project,
                "ownerType": "project",
                "createdAt": "2026-01-10T09:00:00.000Z",
                "updatedAt": "2026-01-10T09:00:00.000Z",
                **({"description": parsed["description"]} if "description" in parsed else {}),
            }
            self.endpoints[endpoint_id] = endpoint
            if self.on_create is not None:
                await self.on_create()
            return 200, {"webhookEndpoint": {**endpoint, "secret": secret}}
        if method == "GET" and endpoint_id is None:
            return 200, {"webhookEndpoints": list(self.endpoints.values())}
        if method == "DELETE" and endpoint_id is not None:
            if self.fail_delete:
                return 400, {"reason": "deletes are refused today"}
            if self.endpoints.pop(endpoint_id, None) is None:
                return 404, {"reason": "Webhook endpoint not found"}
            return 200, {}
        return 405, {"reason": "method not allowed"}

    async def handler(self, request: httpx.Request) -> httpx.Response:
        """For ``httpx.MockTransport``."""
        status, body = await self.answer(request.method, request.url.path, request.content)
        return httpx.Response(status, json=body)

    def app(self) -> Starlette:
        async def route(request: Request) -> JSONResponse:
            status, body = await self.answer(request.method, request.url.path, await request.body())
            return JSONResponse(body, status_code=status)

        return Starlette(routes=[Route("/{path:path}", route, methods=["GET", "POST", "PUT", "DELETE"])])


@contextmanager
def serve_on_loopback(api: FakeWebhookAPI) -> Iterator[str]:
    """Serve ``api`` on 127.0.0.1 for the ``with`` block; yields the base URL (``…/v1``)."""
    port = free_port()
    config = uvicorn.Config(api.app(), host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fake-scenario", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the fake Scenario API did not start")
        time.sleep(0.01)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
