"""Fixtures of the flow tests: the session's Prefect test server, S3 on moto, emulator credentials.

The Prefect server and moto fixtures are the ones of ``tests/prefect/conftest.py`` (loaded from
there, not copied, so both suites configure Prefect the same way). Pytest only shares a session
fixture between directories through a common conftest, so until those fixtures move up to
``tests/conftest.py`` a run of both directories starts one harness for each.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from flow_support import CANARY_SECRET

_PREFECT_CONFTEST = Path(__file__).resolve().parents[1] / "prefect" / "conftest.py"


def _load_prefect_fixtures() -> Any:
    name = "_prefect_scenario_tests_prefect_fixtures"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _PREFECT_CONFTEST)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_fixtures = _load_prefect_fixtures()
prefect_harness = _fixtures.prefect_harness  # autouse, session-scoped
results_dir = _fixtures.results_dir
moto_server = _fixtures.moto_server
s3_bucket = _fixtures.s3_bucket


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
