"""``prefect_scenario.testing``: the ``scenario_emulator`` pytest fixture and ``emulate_scenario``.

The fixture is tested the way a user meets it: a test file of theirs, in a scratch folder, run by a
pytest subprocess that finds the plugin through the installed ``pytest11`` entry point (the file
never imports ``prefect_scenario.testing``).
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from prefect_scenario.emulator import FaultRule
from prefect_scenario.testing import ScenarioEmulator, emulate_scenario

pytest_plugins = ["pytester"]

ENV_NAMES = (
    "SCENARIO_BASE_URL",
    "SCENARIO_SDK_API_KEY",
    "SCENARIO_SDK_API_SECRET",
    "SCENARIO_PROJECT_ID",
    "SCENARIO_SDK_JWT",
)
GENERATE = "POST /v1/generate/custom/{modelId}"

# A user's tests of their own flow: only the plugin's fixture (and pytest's tmp_path); the Prefect
# test server once per session, as Prefect's docs set it up.
USER_FLOW_TESTS = """
import asyncio

import pytest
from prefect.testing.utilities import prefect_test_harness

from prefect_scenario.flows import video_to_layers
from prefect_scenario.video import make_sample_clip

GENERATE = "POST /v1/generate/custom/{modelId}"


@pytest.fixture(scope="session", autouse=True)
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def split_into_layers(tmp_path):
    clip = tmp_path / "clip.mp4"
    make_sample_clip(clip, seconds=1.0, width=96, height=64, fps=8, moving_objects=2)
    return asyncio.run(
        video_to_layers(
            str(clip), "each moving object apart from the background", max_layers=2,
            destination=str(tmp_path / "out"),
        )
    )


def test_layers_buy_exactly_one_job(scenario_emulator, tmp_path):
    result = split_into_layers(tmp_path)
    assert result.status == "success"
    assert result.outputs
    assert scenario_emulator.stats()["jobs_created"] == 1


def test_a_lost_answer_to_the_paid_submit_is_not_paid_twice(scenario_emulator, tmp_path):
    scenario_emulator.add_faults([
        # The dry-run estimate comes first on the same route: let it through.
        {"route": GENERATE, "kind": "delay", "seconds": 0, "count": 1},
        # The paid submit: the job is created, then the connection drops before the answer.
        {"route": GENERATE, "kind": "reset_after_accept", "count": 1},
    ])
    result = split_into_layers(tmp_path)
    stats = scenario_emulator.stats()
    assert stats["faults_fired"] == {"delay": 1, "reset_after_accept": 1}
    assert stats["jobs_created"] == 1
    assert result.status == "success"
"""

# The fixture alone, without Prefect: what it sets, and a fresh emulator per test.
USER_ENV_TESTS = """
import os

import httpx

PROJECTS = []


def test_the_environment_points_at_the_emulator(scenario_emulator):
    assert os.environ["SCENARIO_BASE_URL"] == scenario_emulator.base_url
    assert scenario_emulator.base_url.startswith("http://127.0.0.1:")
    assert "SCENARIO_SDK_JWT" not in os.environ
    auth = (os.environ["SCENARIO_SDK_API_KEY"], os.environ["SCENARIO_SDK_API_SECRET"])
    model = httpx.get(f"{os.environ['SCENARIO_BASE_URL']}/models/model_runway-aleph-2", auth=auth)
    assert model.status_code == 200
    assert scenario_emulator.stats()["requests"] == {"GET /v1/models/{modelId}": 1}
    PROJECTS.append(os.environ["SCENARIO_PROJECT_ID"])


def test_each_test_gets_a_fresh_emulator(scenario_emulator):
    assert scenario_emulator.stats()["requests"] == {}
    assert os.environ["SCENARIO_PROJECT_ID"] not in PROJECTS
"""


@pytest.fixture
def user_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A user's environment for the subprocess: its own Prefect home, no analytics, no Scenario vars."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("user_env")
def test_the_fixture_comes_from_the_entry_point_and_sets_the_environment(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user_env=USER_ENV_TESTS)
    run = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    run.assert_outcomes(passed=2)
    # Turned off by its entry point's name, the plugin is gone: the fixture came from there.
    off = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:scenario_emulator", timeout=120)
    off.assert_outcomes(errors=2)
    off.stdout.fnmatch_lines(["*fixture 'scenario_emulator' not found*"])


@pytest.mark.slow
@pytest.mark.usefixtures("user_env")
def test_a_users_flow_tests_run_against_the_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user_flows=USER_FLOW_TESTS)
    run = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=540)
    outcomes = run.parseoutcomes()
    assert outcomes.get("passed") == 2, run.stdout.str()[-4000:]
    assert "failed" not in outcomes
    assert "errors" not in outcomes


def test_emulate_scenario_sets_the_environment_and_puts_it_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENARIO_BASE_URL", "https://api.example.test/v1")
    monkeypatch.setenv("SCENARIO_SDK_JWT", "a-token-of-the-user")
    monkeypatch.delenv("SCENARIO_SDK_API_KEY", raising=False)
    monkeypatch.delenv("SCENARIO_SDK_API_SECRET", raising=False)
    monkeypatch.delenv("SCENARIO_PROJECT_ID", raising=False)
    before = {name: os.environ.get(name) for name in ENV_NAMES}

    with emulate_scenario() as emulator:
        assert isinstance(emulator, ScenarioEmulator)
        assert os.environ["SCENARIO_BASE_URL"] == emulator.base_url == f"{emulator.root_url}/v1"
        assert os.environ["SCENARIO_SDK_API_KEY"] == emulator.api_key
        assert os.environ["SCENARIO_SDK_API_SECRET"] == emulator.api_secret
        assert os.environ["SCENARIO_PROJECT_ID"] == emulator.project_id
        assert "SCENARIO_SDK_JWT" not in os.environ
        assert emulator.env == {name: os.environ[name] for name in ENV_NAMES[:4]}
        assert emulator.api_secret not in repr(emulator)
        # The package reads exactly these variables (blocks.py imports Prefect, so it is read here).
        from prefect_scenario.blocks import ScenarioCredentials

        credentials = ScenarioCredentials.from_env()
        assert credentials.base_url == emulator.base_url
        assert credentials.auth_method == "basic"
        assert credentials.project_id == emulator.project_id
        port = emulator.running.port

    assert {name: os.environ.get(name) for name in ENV_NAMES} == before
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/_emulator/stats", timeout=5)


def test_the_control_plane_round_trips() -> None:
    with emulate_scenario(concurrency_ceiling=3) as emulator:
        auth = (emulator.api_key, emulator.api_secret)
        assert httpx.get(f"{emulator.base_url}/models/model_runway-aleph-2", auth=auth).status_code == 200
        stats = emulator.stats()
        assert stats["jobs_created"] == 0
        assert stats["requests"] == {"GET /v1/models/{modelId}": 1}

        settings = emulator.configure(job_seconds=1.5, failure_rate=0.25)
        assert (settings["job_seconds"], settings["failure_rate"]) == (1.5, 0.25)
        assert settings["queue_seconds"] == 0.05  # the test default, kept
        assert settings["concurrency_ceiling"] == 3
        assert emulator.state.config.job_seconds == 1.5
        with pytest.raises(ValueError, match="job_secnds"):
            emulator.configure(job_secnds=1)

        assert emulator.advance_clock(90)["offset_seconds"] == 90
        assert emulator.advance_clock(10.5)["offset_seconds"] == 100.5
        assert emulator.stats()["clock"]["offset_seconds"] == 100.5

        pending = emulator.add_faults(
            [
                FaultRule(route=GENERATE, kind="delay", seconds=0),
                {"route": GENERATE, "kind": "reset", "count": 2},
            ]
        )
        assert [(rule.kind, rule.count) for rule in pending] == [("delay", 1), ("reset", 2)]
        assert len(emulator.add_faults({"route": "GET /v1/jobs/{jobId}", "kind": "status"})) == 3
        with pytest.raises(ValidationError):
            emulator.add_faults([{"route": GENERATE, "kind": "explode"}])
        emulator.clear_faults()
        assert emulator.state.list_faults() == []

        emulator.add_faults([{"route": GENERATE, "kind": "reset"}])
        emulator.reset()
        stats = emulator.stats()
        assert stats["requests"] == {}
        assert stats["clock"]["offset_seconds"] == 0
        assert emulator.state.list_faults() == []
        assert emulator.state.config.job_seconds == 1.5  # reset keeps the settings


def test_emulate_scenario_refuses_unknown_settings_before_starting() -> None:
    with pytest.raises(ValidationError, match="job_secnds"), emulate_scenario(job_secnds=1):
        pass  # pragma: no cover - never entered


def test_fixed_credentials_are_the_ones_put_in_the_environment() -> None:
    with emulate_scenario(api_key="my-key", api_secret="my-secret") as emulator:
        assert (os.environ["SCENARIO_SDK_API_KEY"], os.environ["SCENARIO_SDK_API_SECRET"]) == (
            "my-key",
            "my-secret",
        )
        model_url = f"{emulator.base_url}/models/model_runway-aleph-2"
        assert httpx.get(model_url, auth=("my-key", "my-secret")).status_code == 200
        assert httpx.get(model_url, auth=("other-key", "my-secret")).status_code == 401
