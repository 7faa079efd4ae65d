"""Fixtures of the emulator's webhook tests (their helpers are in ``webhook_support.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from scenario_sdk import Scenario

from prefect_scenario.emulator import RunningEmulator
from support.webhook_receiver import WebhookReceiver

from .webhook_support import seed_video


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A real HTTP receiver on loopback, recording every delivery."""
    with WebhookReceiver() as running:
        yield running


@pytest.fixture
def hooks(live_emulator: RunningEmulator, sample_clip: Path) -> RunningEmulator:
    """The live emulator with fast retries, a seeded clip, and jobs that fail without running a model
    (``failure_rate: 1``; a test wanting success sets it back to 0)."""
    live_emulator.state.configure(webhook_retry_seconds=0.05, failure_rate=1.0)
    seed_video(live_emulator.state, sample_clip)
    return live_emulator


@pytest.fixture
def api(hooks: RunningEmulator) -> Iterator[httpx.Client]:
    """A plain httpx client on the live emulator's ``/v1``, with auth."""
    with httpx.Client(base_url=hooks.base_url + "/", auth=("key", "secret"), timeout=10) as client:
        yield client


@pytest.fixture
def sdk(hooks: RunningEmulator) -> Iterator[Scenario]:
    """The vendor's SDK, validating every answer strictly, with no retries (failures show)."""
    client = Scenario(
        api_key="sdk-key",
        api_secret="sdk-secret",
        base_url=hooks.base_url,
        _strict_response_validation=True,
        max_retries=0,
    )
    with client:
        yield client
