"""The Scenario emulator as the tests meet it: its test settings and keys, the model ids and route
names its counters use, request bodies, and its control plane (``/_emulator/...``) on loopback.

The control-plane calls here are synchronous and take a running emulator (``live_emulator``) or its
root URL: the emulator serves from a thread of its own, so sync and async tests use them alike. The
emulator's own tests drive the control plane through their wire client instead (:mod:`support.wire`).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from prefect_scenario.emulator import EmulatorConfig

# The keys of the emulator the fixtures start (``tests/conftest.py``), and the base URL of its
# in-process (ASGI) client.
EMULATOR_KEY = "test-key"
EMULATOR_SECRET = "test-secret"
ASGI_BASE_URL = "http://emulator.test/v1"
# The API secret of every flow test: it must never appear anywhere Prefect records a run.
CANARY_SECRET = "canary-secret-" + uuid.uuid4().hex

LAYERS = "model_scenario-video-layers-extractor"
ALEPH = "model_runway-aleph-2"
# Route names as the emulator's counters and fault rules spell them.
GENERATE_ROUTE = "POST /v1/generate/custom/{modelId}"
FILES_ROUTE = "GET /files/{assetId}"


def fast_config(**overrides: object) -> EmulatorConfig:
    """Emulator settings for tests: short jobs, everything else at its default."""
    settings: dict[str, object] = {"job_seconds": 0.3, "queue_seconds": 0.05}
    settings.update(overrides)
    return EmulatorConfig.model_validate(settings)


def layers_body(asset_id: str, max_layers: int = 1) -> dict[str, Any]:
    """A Video to Layers request body, as the API takes it."""
    return {"video": asset_id, "separationInstruction": "each moving object apart", "maxLayers": max_layers}


def aleph_body(asset_id: str, prompt: str = "turn it into a watercolor", seed: int = 7) -> dict[str, Any]:
    """A Runway Aleph 2 request body, as the API takes it."""
    return {"video": asset_id, "prompt": prompt, "seed": seed}


def control_url(target: Any, path: str) -> str:
    """The URL of a control-plane route of the emulator behind ``target``: a running emulator, its
    root URL, or an ``httpx`` client based at its ``/v1``."""
    if isinstance(target, httpx.AsyncClient | httpx.Client):
        root = str(target.base_url).rstrip("/").removesuffix("/v1")
    else:
        root = str(target if isinstance(target, str) else target.root_url).rstrip("/")
    return f"{root}/_emulator/{path.lstrip('/')}"


def control(emulator: Any, method: str, path: str, body: Any = None) -> Any:
    """Call the emulator's control plane (``/_emulator/...``) and return its JSON."""
    response = httpx.request(method, control_url(emulator, path), json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def stats(emulator: Any) -> dict[str, Any]:
    """``GET /_emulator/stats``."""
    return dict(control(emulator, "GET", "stats"))


def faults(emulator: Any, *rules: dict[str, Any]) -> None:
    """``POST /_emulator/faults``."""
    control(emulator, "POST", "faults", list(rules))


def configure(emulator: Any, **settings: Any) -> dict[str, Any]:
    """``POST /_emulator/config``; returns the whole configuration."""
    return dict(control(emulator, "POST", "config", settings))


def advance_clock(emulator: Any, seconds: float) -> None:
    """``POST /_emulator/clock``."""
    control(emulator, "POST", "clock", {"advance_seconds": seconds})
