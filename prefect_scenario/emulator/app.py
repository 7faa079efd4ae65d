"""``create_app(state)``: the emulator as a FastAPI app (API under ``/v1``, control plane under
``/_emulator``, file server under ``/files`` and ``/parts``).

No module globals and no lifespan: everything lives in the :class:`EmulatorState` passed in, and
worker threads start on demand, so the app works the same under ``httpx.ASGITransport`` as under
uvicorn.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import partial

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from prefect_scenario.emulator.api.errors import install_error_handlers
from prefect_scenario.emulator.api.paths import API_PREFIX
from prefect_scenario.emulator.api.routes import assets, files, generate, jobs, models, uploads, webhooks
from prefect_scenario.emulator.api.wire import job_wire
from prefect_scenario.emulator.control import routes as control
from prefect_scenario.emulator.control.middleware import FaultMiddleware
from prefect_scenario.emulator.service.state import EmulatorState


class EmulatorApp(FastAPI):
    """A FastAPI app whose outermost layer is the fault middleware.

    Outside everything FastAPI and Starlette wrap around a request (their error middleware turns
    exceptions into 500s; their telemetry may wrap ``send``), so the middleware gets the server's
    own ``send`` and a dropped connection never becomes an answer.
    """

    _fault_layer: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request through the fault middleware."""
        if self._fault_layer is None:
            inner = partial(FastAPI.__call__, self)
            templates = self.state.route_templates
            self._fault_layer = FaultMiddleware(inner, state=self.state.emulator, templates=templates)
        await self._fault_layer(scope, receive, send)


def _templates(router: APIRouter, prefix: str = "") -> list[tuple[str, Collection[str]]]:
    routes = [route for route in router.routes if isinstance(route, APIRoute)]
    return [(prefix + route.path, route.methods or {"GET"}) for route in routes]


def create_app(state: EmulatorState | None = None) -> FastAPI:
    """Build an emulator app over ``state`` (a fresh default state when None).

    Args:
        state: the emulator's state; keep a reference to drive it from the same process.

    Returns:
        The ASGI app, to serve with uvicorn (see :func:`serve_in_thread`) or to call through
        ``httpx.ASGITransport``.
    """
    app = EmulatorApp(
        title="Scenario API emulator",
        summary="A local stand-in for api.cloud.scenario.com/v1, for tests and demos",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.emulator = state if state is not None else EmulatorState()
    # Webhook payloads carry the job exactly as GET /jobs/{jobId} shows it: the service is told
    # how, since it never imports the API.
    app.state.emulator.webhooks.render_job = job_wire
    install_error_handlers(app)
    templates: list[tuple[str, Collection[str]]] = []
    for module in (uploads, assets, generate, jobs, models, webhooks):
        app.include_router(module.router, prefix=API_PREFIX)
        templates += _templates(module.router, API_PREFIX)
    app.include_router(files.router)
    templates += _templates(files.router)
    app.include_router(control.router)
    # What the fault middleware matches against: "METHOD /template" of every API and file route.
    app.state.route_templates = templates
    return app
