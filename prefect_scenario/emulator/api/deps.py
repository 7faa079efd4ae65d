"""Request-scoped access: the emulator state (kept on ``app.state``, never in a global), the JSON body."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from prefect_scenario.emulator.api.errors import bad_request
from prefect_scenario.emulator.service.state import EmulatorState


def get_state(request: Request) -> EmulatorState:
    """The :class:`EmulatorState` of the app serving ``request``."""
    state = request.app.state.emulator
    assert isinstance(state, EmulatorState)
    return state


def root_url(request: Request) -> str:
    """The emulator's root as the client reached it (``http://127.0.0.1:PORT``), for signed URLs."""
    return str(request.base_url).rstrip("/")


async def json_object(request: Request, *, required: bool = True) -> dict[str, Any]:
    """The request's body as a JSON object (``{}`` when optional and empty); a 400 says what to send."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise bad_request("The request body is empty: send a JSON object")
        return {}
    try:
        body = await request.json()
    except ValueError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object")
    return body
