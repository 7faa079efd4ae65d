"""What the emulator's webhook tests share: the wire calls that make endpoints and jobs, and waits.

Their fixtures (a receiver, the live emulator set for deliveries, a plain client, the SDK in strict
mode) are in this folder's ``conftest.py``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from prefect_scenario.emulator import EmulatorConfig, EmulatorState, RunningEmulator
from prefect_scenario.emulator.service.records import AssetRecord
from support.emulator import ALEPH, LAYERS, control

PROJECT = EmulatorConfig().owner_id
VIDEO_ID = "asset_WebhookTestClip123456789"
TERMINAL = {"success", "failure", "canceled"}
SECRET_PATTERN = r"whsec_[A-Za-z0-9+/]{32}"


def seed_video(state: EmulatorState, clip: Path) -> str:
    """File the sample clip as a video asset directly (no upload round trips)."""
    state.add_asset(
        AssetRecord(
            id=VIDEO_ID,
            path=clip,
            mime_type="video/mp4",
            kind="video",
            source="uploaded-video",
            properties={"size": clip.stat().st_size, "duration": 4.0, "width": 320, "height": 240},
            created_at=state.clock.now(),
        )
    )
    return VIDEO_ID


def create_endpoint(
    api: httpx.Client, url: str, events: list[str], *, owner: str = f"projects/{PROJECT}", **extra: Any
) -> dict[str, Any]:
    """``POST .../webhook-endpoints``; the endpoint with its secret."""
    response = api.post(f"{owner}/webhook-endpoints", json={"url": url, "enabledEvents": events, **extra})
    assert response.status_code == 200, response.text
    return dict(response.json()["webhookEndpoint"])


def submit(api: httpx.Client, *, layers: bool = False, project: str | None = None) -> str:
    """Start a job (Layers with one layer, the quickest real model, or Aleph); its id."""
    model, body = (
        (LAYERS, {"video": VIDEO_ID, "separationInstruction": "all of it", "maxLayers": 1})
        if layers
        else (ALEPH, {"video": VIDEO_ID, "prompt": "a watercolor"})
    )
    params = {"projectId": project} if project else None
    response = api.post(f"generate/custom/{model}", json=body, params=params)
    assert response.status_code == 200, response.text
    return str(response.json()["job"]["jobId"])


def wait_job(api: httpx.Client, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """Poll ``GET /jobs/{id}`` until the job ends; the job object."""
    deadline = time.monotonic() + timeout
    while True:
        job = dict(api.get(f"jobs/{job_id}").json()["job"])
        if job["status"] in TERMINAL:
            return job
        assert time.monotonic() < deadline, f"{job_id} still {job['status']}"
        time.sleep(0.05)


def webhook_stats(emulator: RunningEmulator) -> dict[str, Any]:
    """The ``webhooks`` block of ``GET /_emulator/stats``."""
    return dict(control(emulator, "GET", "stats")["webhooks"])


def wait_idle(emulator: RunningEmulator, timeout: float = 15.0) -> dict[str, Any]:
    """Poll the stats until no job is watched and every delivery is final; the webhook stats then."""
    deadline = time.monotonic() + timeout
    while True:
        current = webhook_stats(emulator)
        if current["idle"]:
            return current
        assert time.monotonic() < deadline, f"webhook deliveries still pending: {current}"
        time.sleep(0.02)


def event(
    api: httpx.Client, endpoint_id: str, event_id: str, owner: str = f"projects/{PROJECT}"
) -> dict[str, Any]:
    """``GET .../events/{eventId}``: one delivery with its payload and attempts."""
    response = api.get(f"{owner}/webhook-endpoints/{endpoint_id}/events/{event_id}")
    assert response.status_code == 200, response.text
    return dict(response.json()["webhookEvent"])
