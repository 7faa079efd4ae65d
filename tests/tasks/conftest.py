"""Fixtures of the tasks' tests: credentials for the live emulator, in a Scenario project of each test's own.

Every test gets a fresh emulator (``live_emulator`` resets it) and its own project id, so the
session-wide result store never hands one test's cached upload or job to another.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from prefect_scenario.blocks import ScenarioCredentials

CANARY_SECRET = "canary-SECRET-7f3a"


@pytest.fixture
def credentials(live_emulator: Any) -> ScenarioCredentials:
    return ScenarioCredentials(
        api_key="test-key",
        api_secret=CANARY_SECRET,
        base_url=live_emulator.base_url,
        project_id=f"proj_{uuid.uuid4().hex[:12]}",
    )
