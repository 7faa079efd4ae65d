"""Request-scoped access to the emulator state (kept on ``app.state``, never in a global)."""

from __future__ import annotations

from fastapi import Request

from prefect_scenario.emulator.service.state import EmulatorState


def get_state(request: Request) -> EmulatorState:
    """The :class:`EmulatorState` of the app serving ``request``."""
    state = request.app.state.emulator
    assert isinstance(state, EmulatorState)
    return state


def root_url(request: Request) -> str:
    """The emulator's root as the client reached it (``http://127.0.0.1:PORT``), for signed URLs."""
    return str(request.base_url).rstrip("/")
