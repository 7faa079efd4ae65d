"""A local emulator of Scenario's generative video API, faithful enough for the vendor's own SDK.

``create_app(state)`` builds the FastAPI app; ``serve_in_thread(state)`` runs it on a free loopback
port; ``prefect-scenario emulator serve`` runs it in the foreground. See README.md beside this file.
"""

from __future__ import annotations

from prefect_scenario.emulator.app import create_app
from prefect_scenario.emulator.control.middleware import ConnectionDropped
from prefect_scenario.emulator.server import RunningEmulator, serve, serve_in_thread
from prefect_scenario.emulator.service.clock import EmulatorClock
from prefect_scenario.emulator.service.config import EmulatorConfig
from prefect_scenario.emulator.service.faults import FaultRule
from prefect_scenario.emulator.service.state import EmulatorState

__all__ = [
    "ConnectionDropped",
    "EmulatorClock",
    "EmulatorConfig",
    "EmulatorState",
    "FaultRule",
    "RunningEmulator",
    "create_app",
    "serve",
    "serve_in_thread",
]
