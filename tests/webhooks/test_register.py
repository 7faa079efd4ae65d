"""Registering: the secret goes to a real Prefect Secret block, and nowhere else; failures clean up."""

from __future__ import annotations

import asyncio
import logging
import traceback
import uuid
from typing import Any

import httpx
import pytest
from prefect.blocks.system import Secret
from pydantic import SecretStr

from prefect_scenario import cli_webhooks
from prefect_scenario.cli import app
from prefect_scenario.client import ScenarioClient
from prefect_scenario.client.webhook_endpoints import WebhookEndpoint
from prefect_scenario.errors import ScenarioConfigError
from prefect_scenario.webhooks import (
    DEFAULT_SECRET_BLOCK,
    WebhookSecretNotStoredError,
    create_webhook_app,
    load_webhook_secret,
    register_webhook_endpoint,
)

from .fake_scenario import FakeWebhookAPI, serve_on_loopback

pytestmark = pytest.mark.usefixtures("prefect_harness")

URL = "https://hooks.example.com/scenario/"


def block_name() -> str:
    return f"scenario-webhook-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def api() -> FakeWebhookAPI:
    return FakeWebhookAPI()


@pytest.fixture
def client(api: FakeWebhookAPI) -> ScenarioClient:
    return ScenarioClient(
        base_url="https://api.test/v1",
        api_key="key",
        api_secret="api-secret",
        project_id="proj_1",
        transport=httpx.MockTransport(api.handler),
    )


def assert_never_shown(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text
        assert secret.removeprefix("whsec_") not in text


async def test_register_stores_the_secret_in_a_secret_block_and_returns_no_secret(
    api: FakeWebhookAPI, client: ScenarioClient, caplog: pytest.LogCaptureFixture
) -> None:
    name = block_name()
    with caplog.at_level(logging.DEBUG):
        endpoint = await register_webhook_endpoint(URL, None, name, client=client)
    (secret,) = api.secrets
    assert type(endpoint) is WebhookEndpoint
    assert not hasattr(endpoint, "secret")
    assert endpoint.id == "whe_1"
    assert endpoint.enabled_events == ["generation.completed", "generation.failed"]
    method, path, body = api.requests[0]
    assert (method, path) == ("POST", "/v1/projects/proj_1/webhook-endpoints")
    assert body["url"] == URL
    assert body["enabledEvents"] == ["generation.completed", "generation.failed"]
    # Read back through Prefect itself, and through the loader a receiver uses.
    stored = await Secret.aload(name)
    assert stored.get() == secret
    loaded = await load_webhook_secret(name)
    assert isinstance(loaded, SecretStr)
    assert loaded.get_secret_value() == secret
    create_webhook_app(loaded, _noop)  # the stored secret keys the default scheme
    assert f"{name!r}" in caplog.text
    assert "whe_1" in caplog.text
    assert_never_shown(secret, caplog.text, repr(endpoint), endpoint.model_dump_json())


async def _noop(hint: Any) -> None:
    return None


async def test_an_existing_block_is_refused_before_anything_is_created(
    api: FakeWebhookAPI, client: ScenarioClient
) -> None:
    name = block_name()
    await Secret(value="an older secret").asave(name)
    with pytest.raises(ScenarioConfigError, match="already exists"):
        await register_webhook_endpoint(URL, None, name, client=client)
    assert api.requests == []
    assert (await Secret.aload(name)).get() == "an older secret"
    # With overwrite, the new secret replaces it.
    await register_webhook_endpoint(URL, None, f"secret/{name}", client=client, overwrite=True)
    assert (await load_webhook_secret(name)).get_secret_value() == api.secrets[-1]


async def test_a_bad_block_name_or_url_is_refused_before_anything_is_created(
    api: FakeWebhookAPI, client: ScenarioClient
) -> None:
    with pytest.raises(ScenarioConfigError, match="lowercase letters, numbers, and dashes"):
        await register_webhook_endpoint(URL, None, "Not A Name", client=client)
    with pytest.raises(ValueError, match="absolute http"):
        await register_webhook_endpoint("hooks.example.com", None, block_name(), client=client)
    assert api.requests == []


async def test_a_failed_save_deletes_the_endpoint_again(api: FakeWebhookAPI, client: ScenarioClient) -> None:
    name = block_name()

    async def someone_takes_the_name() -> None:
        # Between our check and our save, another process saves a block of that name: a real
        # refusal by the Prefect server, after the endpoint exists.
        await Secret(value="theirs").asave(name)

    api.on_create = someone_takes_the_name
    with pytest.raises(WebhookSecretNotStoredError) as caught:
        await register_webhook_endpoint(URL, None, name, client=client)
    error = caught.value
    assert error.endpoint_id == "whe_1"
    assert error.endpoint_deleted is True
    assert "deleted again" in str(error)
    assert api.endpoints == {}
    assert [r[0] for r in api.requests] == ["POST", "DELETE"]
    assert (await Secret.aload(name)).get() == "theirs"
    assert_never_shown(api.secrets[0], str(error), repr(error), "".join(traceback.format_exception(error)))


async def test_when_the_delete_fails_too_the_error_names_the_endpoint_left_behind(
    api: FakeWebhookAPI, client: ScenarioClient
) -> None:
    name = block_name()

    async def someone_takes_the_name() -> None:
        await Secret(value="theirs").asave(name)

    api.on_create = someone_takes_the_name
    api.fail_delete = True
    with pytest.raises(WebhookSecretNotStoredError) as caught:
        await register_webhook_endpoint(URL, None, name, client=client)
    error = caught.value
    assert error.endpoint_deleted is False
    assert "endpoint whe_1 exists and its secret is lost" in str(error)
    assert list(api.endpoints) == ["whe_1"]
    assert_never_shown(api.secrets[0], str(error), repr(error), "".join(traceback.format_exception(error)))


async def test_loading_a_missing_block_says_what_to_do() -> None:
    with pytest.raises(ScenarioConfigError, match="webhooks register URL --secret-block"):
        await load_webhook_secret(block_name())


def test_the_cli_registers_and_never_prints_the_secret(
    api: FakeWebhookAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_webhooks.DEFAULT_SECRET_BLOCK == DEFAULT_SECRET_BLOCK
    name = block_name()
    with serve_on_loopback(api) as base_url:
        monkeypatch.setenv("SCENARIO_SDK_API_KEY", "key")
        monkeypatch.setenv("SCENARIO_SDK_API_SECRET", "api-secret")
        monkeypatch.setenv("SCENARIO_BASE_URL", base_url)
        monkeypatch.setenv("SCENARIO_PROJECT_ID", "proj_cli")
        code = app(
            [
                "webhooks",
                "register",
                URL,
                "--secret-block",
                name,
                "--events",
                "generation.completed,generation.failed",
            ],
            result_action="return_value",
        )
        first = capsys.readouterr()
        again = app(["webhooks", "register", URL, "--secret-block", name], result_action="return_value")
        second = capsys.readouterr()
    (secret,) = api.secrets
    assert code == 0
    assert "whe_1" in first.out
    assert URL in first.out
    assert "generation.completed, generation.failed" in first.out
    assert repr(name) in first.out
    assert api.requests[0][1] == "/v1/projects/proj_cli/webhook-endpoints"
    assert again == 2
    assert "already exists" in second.err
    assert_never_shown(secret, first.out, first.err, second.out, second.err)
    assert asyncio.run(load_webhook_secret(name)).get_secret_value() == secret
