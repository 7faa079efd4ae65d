"""Fixtures of the flow tests: the session's Prefect test server (``tests/conftest.py``), emulator
credentials in a project of each test's own.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from support.emulator import CANARY_SECRET


@pytest.fixture(scope="session", autouse=True)
def _prefect_server(prefect_harness: None) -> None:
    """Every test here runs against the session's Prefect test server."""


@pytest.fixture
def project_id() -> str:
    """A project id of its own per test.

    Upload and job caches are scoped by base URL and project; the emulator forgets its assets
    between tests (same port), so a test must never find another test's cached asset ids.
    """
    return f"proj_flows{uuid.uuid4().hex[:16]}"


@pytest.fixture
def credentials(live_emulator: Any, project_id: str) -> Any:
    """``ScenarioCredentials`` for the live emulator, in a project of this test's own."""
    from prefect_scenario.blocks import ScenarioCredentials

    return ScenarioCredentials(
        api_key="flows-key",
        api_secret=CANARY_SECRET,
        base_url=live_emulator.base_url,
        project_id=project_id,
    )


@pytest.fixture
def scenario_env(live_emulator: Any, project_id: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The SDK's environment variables pointing at the live emulator (the CLI's credentials)."""
    env = {
        "SCENARIO_SDK_API_KEY": "flows-env-key",
        "SCENARIO_SDK_API_SECRET": CANARY_SECRET,
        "SCENARIO_BASE_URL": live_emulator.base_url,
        "SCENARIO_PROJECT_ID": project_id,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
