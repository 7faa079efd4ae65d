"""Authentication headers, and the secrets never leaking into reprs, logs or exceptions."""

from __future__ import annotations

import base64
import logging
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from prefect_scenario.client import ScenarioClient
from prefect_scenario.errors import AuthenticationError, ScenarioConfigError, ScenarioTransportError

from .conftest import BASE_URL, CANARY_KEY, CANARY_SECRET, job_payload

CANARY_BEARER = "canary.jwt.BEARER-0b5e"
BASIC_PAIR = base64.b64encode(f"{CANARY_KEY}:{CANARY_SECRET}".encode()).decode()


def _leaks(text: str) -> list[str]:
    return [canary for canary in (CANARY_KEY, CANARY_SECRET, CANARY_BEARER, BASIC_PAIR) if canary in text]


def _recording_handler(seen: list[httpx.Request], status: int = 200) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json={"job": job_payload()} if status == 200 else {"reason": "bad key"})

    return handler


async def test_basic_auth_header_is_base64_of_key_and_secret(make_client: Any) -> None:
    seen: list[httpx.Request] = []
    async with make_client(_recording_handler(seen)) as client:
        await client.jobs.get("job_1")
    assert seen[0].headers["Authorization"] == f"Basic {BASIC_PAIR}"
    assert seen[0].headers["Accept"] == "application/json"
    assert seen[0].url.path == "/v1/jobs/job_1"


async def test_bearer_token_when_no_key(make_client: Any) -> None:
    seen: list[httpx.Request] = []
    async with make_client(
        _recording_handler(seen), api_key=None, api_secret=None, bearer_token=CANARY_BEARER
    ) as c:
        await c.jobs.get("job_1")
    assert seen[0].headers["Authorization"] == f"Bearer {CANARY_BEARER}"


async def test_basic_wins_over_bearer_like_the_sdk(make_client: Any) -> None:
    seen: list[httpx.Request] = []
    async with make_client(_recording_handler(seen), bearer_token=CANARY_BEARER) as client:
        await client.jobs.get("job_1")
    assert seen[0].headers["Authorization"].startswith("Basic ")


async def test_secretstr_credentials_and_key_without_secret_falls_back_to_bearer(make_client: Any) -> None:
    seen: list[httpx.Request] = []
    client = make_client(
        _recording_handler(seen),
        api_key=SecretStr(CANARY_KEY),
        api_secret=None,
        bearer_token=SecretStr(CANARY_BEARER),
    )
    async with client:
        await client.jobs.get("job_1")
    assert seen[0].headers["Authorization"] == f"Bearer {CANARY_BEARER}"


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"api_key": CANARY_KEY},
        {"api_secret": CANARY_SECRET},
        {"api_key": "", "api_secret": "", "bearer_token": ""},
    ],
)
def test_missing_or_incomplete_credentials_fail_before_sending(credentials: dict[str, str]) -> None:
    with pytest.raises(ScenarioConfigError) as caught:
        ScenarioClient(base_url=BASE_URL, **credentials)
    assert not _leaks(str(caught.value))


def test_reprs_never_show_secrets() -> None:
    client = ScenarioClient(
        base_url=BASE_URL, api_key=CANARY_KEY, api_secret=CANARY_SECRET, bearer_token=CANARY_BEARER
    )
    texts = [
        repr(client),
        str(client),
        repr(vars(client)),
        repr(client.jobs.__dict__),
        repr(client._http.__dict__),
    ]
    assert not [leak for text in texts for leak in _leaks(text)]
    assert "basic" in repr(client)


async def test_error_and_log_text_never_show_secrets(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[httpx.Request] = []
    async with make_client(_recording_handler(seen, status=401), bearer_token=CANARY_BEARER) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.jobs.get("job_1")
    error = caught.value
    assert str(error) == "GET /v1/jobs/job_1 answered 401: bad key"
    texts = [str(error), repr(error), repr(vars(error)), repr(error.args), caplog.text]

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with make_client(refuse) as client:
        with pytest.raises(ScenarioTransportError) as refused:
            await client.jobs.get("job_1")
    texts += [str(refused.value), repr(vars(refused.value)), caplog.text]
    assert not [leak for text in texts for leak in _leaks(text)]


async def test_project_id_and_user_agent_suffix(make_client: Any) -> None:
    seen: list[httpx.Request] = []
    async with make_client(
        _recording_handler(seen), project_id="proj_42", user_agent_suffix="prefect/3"
    ) as client:
        await client.jobs.get("job_1")
        assert client.project_id == "proj_42"
        assert client.base_url == BASE_URL
    assert seen[0].url.params["projectId"] == "proj_42"
    assert seen[0].headers["User-Agent"].startswith("prefect-scenario/")
    assert seen[0].headers["User-Agent"].endswith(" prefect/3")


async def test_one_http_client_per_lifecycle(make_client: Any) -> None:
    seen: list[httpx.Request] = []
    client = make_client(_recording_handler(seen))
    async with client:
        first = client._http.client
        await client.jobs.get("job_1")
        assert client._http.client is first
    assert first.is_closed
    await client.jobs.get("job_1")  # a new lifecycle opens a new client
    assert client._http.client is not first
    await client.aclose()
    assert len(seen) == 2
