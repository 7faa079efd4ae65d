"""Serving the emulator over real HTTP with uvicorn: in a background thread, or in the foreground."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from prefect_scenario.emulator.api.paths import API_PREFIX
from prefect_scenario.emulator.app import create_app
from prefect_scenario.emulator.service.state import EmulatorState
from prefect_scenario.stop_signals import stop_signals_exit

DEFAULT_HOST = "127.0.0.1"
STARTUP_TIMEOUT_SECONDS = 10.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class RunningEmulator:
    """An emulator being served: where to reach it, and its state."""

    host: str
    port: int
    state: EmulatorState

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT`` (control plane at ``/_emulator``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, the base URL for API clients."""
        return f"{self.root_url}{API_PREFIX}"

    @property
    def control_url(self) -> str:
        """``http://127.0.0.1:PORT/_emulator``."""
        return f"{self.root_url}/_emulator"


def _config(state: EmulatorState, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(state),
        # h11 explicitly: the fault middleware hangs up through its transport (see control/middleware.py).
        http="h11",
        lifespan="off",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=1,
    )


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


@contextmanager
def serve_in_thread(
    state: EmulatorState | None = None, *, host: str = DEFAULT_HOST, port: int = 0, log_level: str = "warning"
) -> Iterator[RunningEmulator]:
    """Serve an emulator on ``host`` (loopback) in a background thread for the ``with`` block.

    Args:
        state: the state to serve (a fresh default one, closed on exit, when None).
        host: the interface to bind; loopback by default.
        port: the port; 0 picks a free one.
        log_level: uvicorn's log level.

    Yields:
        The running emulator: ``running.base_url`` is ``http://127.0.0.1:PORT/v1``.
    """
    owned = state is None
    state = state if state is not None else EmulatorState()
    sock = _bind(host, port)
    server = uvicorn.Server(_config(state, log_level))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="scenario-emulator", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the Scenario emulator did not start on {host}:{port}")
        time.sleep(0.01)
    try:
        yield RunningEmulator(host=host, port=sock.getsockname()[1], state=state)
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_TIMEOUT_SECONDS)
        sock.close()
        if owned:
            state.close()


def serve(
    state: EmulatorState,
    *,
    host: str = DEFAULT_HOST,
    port: int = 8787,
    log_level: str = "info",
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve an emulator in the foreground until interrupted (the ``emulator serve`` command).

    SIGINT and SIGTERM stop it gracefully and end in ``SystemExit(128 + signal)``, so the
    caller's cleanups (closing ``state``) run either way.

    Args:
        state: the state to serve.
        host: the interface to bind; loopback by default.
        port: the port; 0 picks a free one.
        log_level: uvicorn's log level.
        announce: called with the API base URL once the port is bound.
    """
    # uvicorn shuts down gracefully on either signal, then raises it again under the handlers it
    # found when it started: ours, so the caller's cleanups run (SIGTERM's default would skip them).
    with stop_signals_exit(STOP_SIGNALS):
        sock = _bind(host, port)
        try:
            if announce is not None:
                announce(RunningEmulator(host=host, port=sock.getsockname()[1], state=state).base_url)
            uvicorn.Server(_config(state, log_level)).run(sockets=[sock])
        finally:
            sock.close()
