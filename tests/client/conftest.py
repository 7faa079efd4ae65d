"""Fixtures of the client's unit tests: a fake clock, wire payload builders, a client factory.

Every client here talks to an ``httpx.MockTransport``: the real transport seam of httpx, so the
whole client (auth, retry layer, parsing) runs as in production.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from prefect_scenario.client import PollPolicy, RetryPolicy, ScenarioClient

BASE_URL = "https://api.test/v1"
CANARY_KEY = "canary-key-7f3a91"
CANARY_SECRET = "canary-SECRET-d41d8cd98f00"
EPOCH = datetime(2026, 1, 10, 9, 0, 0, tzinfo=UTC)

Handler = Callable[[httpx.Request], Awaitable[httpx.Response] | httpx.Response]


class FakeTime:
    """A clock and a sleep that advances it instantly, recording every delay."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0)


def iso(seconds_after_epoch: float) -> str:
    moment = EPOCH + timedelta(seconds=seconds_after_epoch)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def job_payload(
    job_id: str = "job_1",
    *,
    status: str = "queued",
    progress: float = 0.0,
    created: str | None = None,
    updated: str | None = None,
    history: list[tuple[str, str]] | None = None,
    model_input: dict[str, Any] | None = None,
    asset_ids: list[str] | None = None,
    error: str | None = None,
    hint: str | None = None,
    billing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    created = created or iso(0)
    metadata: dict[str, Any] = {"assetIds": asset_ids or []}
    if model_input is not None:
        metadata["input"] = model_input
    if error is not None:
        metadata["error"] = error
    if hint is not None:
        metadata["hint"] = hint
    payload: dict[str, Any] = {
        "jobId": job_id,
        "jobType": "custom",
        "status": status,
        "progress": progress,
        "statusHistory": [{"status": s, "date": d} for s, d in (history or [("pending", created)])],
        "metadata": metadata,
        "createdAt": created,
        "updatedAt": updated or created,
    }
    if billing is not None:
        payload["billing"] = billing
    return payload


def asset_payload(
    asset_id: str, *, url: str, size: int, mime: str = "video/mp4", index: int | None = None
) -> dict[str, Any]:
    return {
        "id": asset_id,
        "url": url,
        "mimeType": mime,
        "kind": mime.split("/")[0],
        "status": "success",
        "properties": {"size": size},
        "metadata": {"kind": mime.split("/")[0], "type": "video2video"},
        "outputIndex": index,
    }


def upload_payload(
    upload_id: str,
    *,
    status: str = "pending",
    parts: int = 0,
    entity_id: str | None = None,
    error: str | None = None,
    base: str = "https://s3.test/bucket",
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": upload_id,
        "authorId": "user_1",
        "ownerId": "proj_1",
        "fileName": "clip.mp4",
        "kind": "video",
        "source": "multipart",
        "status": status,
        "createdAt": iso(0),
        "updatedAt": iso(0),
        "parts": [
            {"number": n, "url": f"{base}/{upload_id}/part{n}?X-Amz-Signature=sig{n}", "expires": iso(3600)}
            for n in range(1, parts + 1)
        ],
    }
    if entity_id:
        payload["entityId"] = entity_id
    if error:
        payload["errorMessage"] = error
    return payload


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make_client(fake_time: FakeTime) -> Callable[..., ScenarioClient]:
    """Builds a client on a MockTransport running ``handler`` (or on a transport), with the fake clock."""

    def build(handler: Handler | httpx.AsyncBaseTransport, **options: Any) -> ScenarioClient:
        options.setdefault("api_key", CANARY_KEY)
        options.setdefault("api_secret", CANARY_SECRET)
        options.setdefault("retry", RetryPolicy())
        options.setdefault("polling", PollPolicy())
        options.setdefault("rng", random.Random(7))
        return ScenarioClient(
            base_url=BASE_URL,
            transport=(
                handler if isinstance(handler, httpx.AsyncBaseTransport) else httpx.MockTransport(handler)
            ),
            sleep=fake_time.sleep,
            clock=fake_time.clock,
            **options,
        )

    return build
