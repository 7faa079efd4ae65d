"""Authentication: Basic and Bearer, 401 in the API's error shape, fixed credentials."""

from __future__ import annotations

from pathlib import Path

import httpx
from pydantic import SecretStr

from prefect_scenario.emulator import EmulatorConfig, EmulatorState, create_app
from prefect_scenario.models import ALEPH_MODEL_ID

MODEL = f"models/{ALEPH_MODEL_ID}"


def client_for(state: EmulatorState, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(state))
    return httpx.AsyncClient(transport=transport, base_url="http://emulator.test/v1/", headers=headers)


async def test_any_non_empty_credentials_pass_by_default(emulator_state: EmulatorState) -> None:
    async with client_for(emulator_state) as client:
        assert (await client.get(MODEL, auth=("anything", "goes"))).status_code == 200
        assert (
            await client.get(MODEL, headers={"Authorization": "Bearer some.jwt.token"})
        ).status_code == 200
        stainless = {"X-Stainless-Lang": "python", "X-Stainless-Retry-Count": "0", "X-Stainless-Unknown": "x"}
        assert (await client.get(MODEL, auth=("k", "s"), headers=stainless)).status_code == 200
        for header in ("", "Basic !!!", "Basic " + "a2V5", "Basic OnNlY3JldA==", "Bearer ", "Token abc"):
            response = await client.get("jobs", headers={"Authorization": header} if header else {})
            assert response.status_code == 401, header
            assert response.headers["content-type"] == "application/json"
            assert response.json()["reason"].startswith("Unauthorized")
            assert response.json()["traceId"]


async def test_public_models_take_the_public_token(emulator_state: EmulatorState) -> None:
    async with client_for(emulator_state, {"Authorization": "public-auth-token"}) as client:
        assert (await client.get(MODEL)).status_code == 200
        assert (await client.get("jobs")).status_code == 401


async def test_fixed_credentials_refuse_others(tmp_path: Path) -> None:
    config = EmulatorConfig(api_key=SecretStr("the-key"), api_secret=SecretStr("the-secret"))
    with EmulatorState(config, storage_dir=tmp_path) as state:
        async with client_for(state) as client:
            assert (await client.get(MODEL, auth=("the-key", "the-secret"))).status_code == 200
            assert (await client.get(MODEL, auth=("the-key", "wrong"))).status_code == 401
            assert (await client.get(MODEL, auth=("other", "the-secret"))).status_code == 401
            assert (await client.get(MODEL, headers={"Authorization": "Bearer made.up"})).status_code == 401
            # The control plane cannot swap the credentials.
            response = await client.post("http://emulator.test/_emulator/config", json={"api_key": "mine"})
            assert response.status_code == 400
            view = (await client.get("http://emulator.test/_emulator/config")).json()
            assert view["credentials_fixed"] is True
            assert "api_key" not in view
