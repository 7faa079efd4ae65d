"""ScenarioCredentials: Prefect's block standards, validation, environment, secrets, lookup by name."""

from __future__ import annotations

import uuid

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import SecretStr, ValidationError

from prefect_scenario.blocks import ScenarioCredentials, resolve_credentials
from prefect_scenario.client import ScenarioClient
from prefect_scenario.errors import ScenarioConfigError
from prefect_scenario.models import DEFAULT_BASE_URL

pytestmark = pytest.mark.usefixtures("prefect_harness")

CANARY_SECRET = "canary-SECRET-7f3a"


class TestScenarioCredentialsStandards(BlockStandardTestSuite):
    @pytest.fixture
    def block(self) -> type[Block]:
        return ScenarioCredentials

    @pytest.mark.skip(reason="downloads the logo from the network")
    def test_has_a_valid_image(self, block: type[Block]) -> None:  # pragma: no cover
        pass


def test_block_type_name_and_slug() -> None:
    assert ScenarioCredentials.get_block_type_name() == "Scenario Credentials"
    assert ScenarioCredentials.get_block_type_slug() == "scenario-credentials"
    assert ScenarioCredentials.model_json_schema()["secret_fields"] == [
        "api_key",
        "api_secret",
        "bearer_token",
    ]


def test_key_needs_secret_and_some_method() -> None:
    with pytest.raises(ValidationError, match="api_secret is missing"):
        ScenarioCredentials(api_key="k")
    with pytest.raises(ValidationError, match="api_key is missing"):
        ScenarioCredentials(api_secret="s")
    with pytest.raises(ValidationError, match="bearer_token"):
        ScenarioCredentials()
    with pytest.raises(ValidationError, match="http"):
        ScenarioCredentials(bearer_token="t", base_url="api.cloud.scenario.com")
    assert ScenarioCredentials(bearer_token="t").auth_method == "bearer"
    assert ScenarioCredentials(api_key="k", api_secret="s", bearer_token="t").auth_method == "basic"


def test_validation_errors_never_show_the_secret() -> None:
    with pytest.raises(ValidationError) as caught:
        ScenarioCredentials(api_secret=CANARY_SECRET)
    assert CANARY_SECRET not in str(caught.value)
    assert CANARY_SECRET not in repr(caught.value)


def test_secrets_never_in_repr_str_dump_or_scope() -> None:
    credentials = ScenarioCredentials(api_key="canary-key", api_secret=CANARY_SECRET, project_id="proj_1")
    for text in (
        repr(credentials),
        str(credentials),
        credentials.model_dump_json(),
        credentials.cache_scope(),
    ):
        assert CANARY_SECRET not in text
        assert "canary-key" not in text
    assert credentials.cache_scope() == f"{DEFAULT_BASE_URL}|project=proj_1"
    other_key = ScenarioCredentials(api_key="other", api_secret="other-secret", project_id="proj_1")
    assert other_key.cache_scope() == credentials.cache_scope()
    assert (
        ScenarioCredentials(bearer_token="t", project_id="proj_2").cache_scope() != credentials.cache_scope()
    )


def test_from_env_reads_the_sdk_variables() -> None:
    credentials = ScenarioCredentials.from_env(
        {
            "SCENARIO_SDK_API_KEY": "key",
            "SCENARIO_SDK_API_SECRET": CANARY_SECRET,
            "SCENARIO_BASE_URL": "http://127.0.0.1:9/v1/",
        }
    )
    assert credentials.api_key == SecretStr("key")
    assert credentials.api_secret is not None
    assert credentials.api_secret.get_secret_value() == CANARY_SECRET
    assert credentials.base_url == "http://127.0.0.1:9/v1"
    bearer = ScenarioCredentials.from_env({"SCENARIO_SDK_JWT": "jwt"})
    assert bearer.auth_method == "bearer"
    assert bearer.base_url == DEFAULT_BASE_URL


def test_from_env_says_what_to_set() -> None:
    with pytest.raises(ScenarioConfigError, match="SCENARIO_SDK_API_KEY"):
        ScenarioCredentials.from_env({})
    with pytest.raises(ScenarioConfigError, match="api_key is missing") as caught:
        ScenarioCredentials.from_env({"SCENARIO_SDK_API_SECRET": CANARY_SECRET})
    assert CANARY_SECRET not in str(caught.value)


def test_from_env_uses_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENARIO_SDK_JWT", "jwt-from-env")
    monkeypatch.delenv("SCENARIO_SDK_API_KEY", raising=False)
    monkeypatch.delenv("SCENARIO_SDK_API_SECRET", raising=False)
    assert ScenarioCredentials.from_env().bearer_token == SecretStr("jwt-from-env")


async def test_get_client_builds_a_scenario_client() -> None:
    credentials = ScenarioCredentials(api_key="k", api_secret=CANARY_SECRET, base_url="http://127.0.0.1:9/v1")
    client = credentials.get_client(timeout=5.0, project_id="proj_x")
    assert isinstance(client, ScenarioClient)
    assert client.base_url == "http://127.0.0.1:9/v1"
    assert client.project_id == "proj_x"
    assert CANARY_SECRET not in repr(client)
    await client.aclose()


async def test_resolve_credentials_instance_env_and_saved_name(monkeypatch: pytest.MonkeyPatch) -> None:
    given = ScenarioCredentials(bearer_token="t")
    assert await resolve_credentials(given) is given

    monkeypatch.delenv("SCENARIO_SDK_API_KEY", raising=False)
    monkeypatch.delenv("SCENARIO_SDK_API_SECRET", raising=False)
    monkeypatch.delenv("SCENARIO_SDK_JWT", raising=False)
    with pytest.raises(ScenarioConfigError, match="SCENARIO_SDK_API_KEY"):
        await resolve_credentials(None)
    monkeypatch.setenv("SCENARIO_SDK_JWT", "jwt")
    assert (await resolve_credentials(None)).auth_method == "bearer"

    name = f"creds-{uuid.uuid4().hex[:8]}"
    await ScenarioCredentials(api_key="k", api_secret=CANARY_SECRET, project_id="proj_9").asave(name)
    loaded = await resolve_credentials(name)
    assert loaded.project_id == "proj_9"
    assert loaded.api_secret is not None
    assert loaded.api_secret.get_secret_value() == CANARY_SECRET
    assert (await resolve_credentials(f"scenario-credentials/{name}")).project_id == "proj_9"
    with pytest.raises(ScenarioConfigError, match="no-such-block"):
        await resolve_credentials("no-such-block")


def test_block_is_registered_through_the_package() -> None:
    import prefect_scenario

    assert prefect_scenario.ScenarioCredentials is ScenarioCredentials
    assert Block.get_block_class_from_key("scenario-credentials") is ScenarioCredentials


def test_prefect_block_register_finds_the_block() -> None:
    """``prefect block register -m prefect_scenario`` against the session's server."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "prefect_scenario"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Successfully registered 1 block" in done.stdout, done.stdout
