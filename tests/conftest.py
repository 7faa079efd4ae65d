"""Shared fixtures: the emulator (in-process over ASGI, and live on loopback) and sample media.

``PREFECT_HOME`` is pointed at a temporary directory here, at import time, before anything imports
Prefect: no test session may read or write the developer's ``~/.prefect``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-scenario-home-")

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from prefect_scenario import video
from prefect_scenario.emulator import (
    EmulatorConfig,
    EmulatorState,
    RunningEmulator,
    create_app,
    serve_in_thread,
)

EMULATOR_KEY = "test-key"
EMULATOR_SECRET = "test-secret"
ASGI_BASE_URL = "http://emulator.test/v1"


def fast_config(**overrides: object) -> EmulatorConfig:
    """Emulator settings for tests: short jobs, everything else at its default."""
    settings: dict[str, object] = {"job_seconds": 0.3, "queue_seconds": 0.05}
    settings.update(overrides)
    return EmulatorConfig.model_validate(settings)


@pytest.fixture
def emulator_state(tmp_path: Path) -> Iterator[EmulatorState]:
    """A fresh emulator state with its files under ``tmp_path`` and 0.3 s jobs."""
    with EmulatorState(fast_config(), storage_dir=tmp_path / "emulator") as state:
        yield state


@pytest.fixture
def emulator_app(emulator_state: EmulatorState) -> FastAPI:
    """The emulator app over :func:`emulator_state`."""
    return create_app(emulator_state)


@pytest.fixture
async def asgi_client(emulator_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client calling the emulator in-process (ASGI), with Basic auth, based at ``/v1``."""
    transport = httpx.ASGITransport(app=emulator_app)
    async with httpx.AsyncClient(
        transport=transport, base_url=ASGI_BASE_URL, auth=(EMULATOR_KEY, EMULATOR_SECRET)
    ) as client:
        yield client


@pytest.fixture(scope="session")
def _live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    state = EmulatorState(fast_config(), storage_dir=tmp_path_factory.mktemp("live-emulator"))
    with state, serve_in_thread(state) as running:
        yield running


@pytest.fixture
def live_emulator(_live_server: RunningEmulator) -> Iterator[RunningEmulator]:
    """The session's emulator on a real loopback port, reset and back to test settings.

    ``live_emulator.base_url`` is ``http://127.0.0.1:PORT/v1``; ``.root_url`` has the control
    plane at ``/_emulator``; ``.state`` is the live state (drive it directly or over HTTP).
    """
    state = _live_server.state
    state.reset()
    state.configure(**fast_config().model_dump(exclude={"api_key", "api_secret", "bearer_token"}))
    yield _live_server
    state.reset()


@pytest.fixture(scope="session")
def sample_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4 s, 320x240, 24 fps H.264 clip with two moving objects (made once per session)."""
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    video.make_sample_clip(path, seconds=4.0, width=320, height=240, fps=24, moving_objects=2)
    return path


@pytest.fixture(scope="session")
def sample_clip_bytes(sample_clip: Path) -> bytes:
    """The bytes of :func:`sample_clip` (read once, so async tests never block on the disk)."""
    return sample_clip.read_bytes()


@pytest.fixture(scope="session")
def sample_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small solid PNG, for keyframes and reference images."""
    path = tmp_path_factory.mktemp("media-image") / "reference.png"
    video.make_sample_image(path, color=(200, 40, 40))
    return path


@pytest.fixture(scope="session")
def sample_image_bytes(sample_image: Path) -> bytes:
    """The bytes of :func:`sample_image`."""
    return sample_image.read_bytes()
