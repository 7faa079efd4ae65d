"""The file server: signed URLs that expire, Range requests, and the download helper."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from prefect_scenario.emulator import RunningEmulator
from support.wire import control, upload_video


@pytest.fixture
async def live_client(live_emulator: RunningEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=live_emulator.base_url + "/", auth=("key", "secret"), timeout=10
    ) as client:
        yield client


async def signed_url(client: httpx.AsyncClient, asset_id: str) -> str:
    return str((await client.get(f"assets/{asset_id}")).json()["asset"]["url"])


async def test_a_signed_url_needs_no_auth_and_expires_with_the_clock(
    live_client: httpx.AsyncClient,
    live_emulator: RunningEmulator,
    sample_clip: Path,
    sample_clip_bytes: bytes,
) -> None:
    live_emulator.state.configure(asset_url_ttl_seconds=10)
    video_id = await upload_video(live_client, sample_clip)
    url = await signed_url(live_client, video_id)
    assert url.startswith(f"{live_emulator.root_url}/files/{video_id}?")
    async with httpx.AsyncClient() as plain:
        whole = await plain.get(url)
        assert whole.status_code == 200
        assert whole.content == sample_clip_bytes
        assert whole.headers["content-length"] == str(len(sample_clip_bytes))
        assert whole.headers["content-type"] == "video/mp4"
        assert whole.headers["accept-ranges"] == "bytes"
        await control(live_client, "clock", {"advance_seconds": 11})
        expired = await plain.get(url)
        assert expired.status_code == 403
        assert "expired" in expired.json()["reason"]
        # A fresh GET of the asset signs a fresh URL.
        assert (await plain.get(await signed_url(live_client, video_id))).status_code == 200
        # Tampering with the query is refused too.
        assert (await plain.get(url.replace(video_id, video_id[:-1] + "x"))).status_code == 403


async def test_range_requests(
    live_client: httpx.AsyncClient, sample_clip: Path, sample_clip_bytes: bytes
) -> None:
    data = sample_clip_bytes
    size = len(data)
    url = await signed_url(live_client, await upload_video(live_client, sample_clip))
    async with httpx.AsyncClient() as plain:
        middle = await plain.get(url, headers={"Range": "bytes=100-199"})
        assert middle.status_code == 206
        assert middle.headers["content-range"] == f"bytes 100-199/{size}"
        assert middle.headers["content-length"] == "100"
        assert middle.content == data[100:200]
        tail = await plain.get(url, headers={"Range": "bytes=-50"})
        assert tail.status_code == 206
        assert tail.content == data[-50:]
        rest = await plain.get(url, headers={"Range": f"bytes={size - 10}-"})
        assert rest.content == data[-10:]
        assert rest.headers["content-range"] == f"bytes {size - 10}-{size - 1}/{size}"
        clamped = await plain.get(url, headers={"Range": f"bytes={size - 5}-{size + 100}"})
        assert clamped.status_code == 206
        assert clamped.content == data[-5:]
        beyond = await plain.get(url, headers={"Range": f"bytes={size}-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == f"bytes */{size}"
        ignored = await plain.get(url, headers={"Range": "lines=1-2"})
        assert ignored.status_code == 200
        assert ignored.content == data
        head = await plain.head(url)
        assert head.status_code == 200
        assert head.headers["content-length"] == str(size)
        assert head.content == b""


async def test_the_download_helper_signs_a_url_and_refuses_formats_for_videos(
    live_client: httpx.AsyncClient, sample_clip: Path, sample_clip_bytes: bytes
) -> None:
    video_id = await upload_video(live_client, sample_clip)
    link = (await live_client.post(f"assets/{video_id}/download", json={})).json()
    assert link["mimeType"] == "video/mp4"
    async with httpx.AsyncClient() as plain:
        assert (await plain.get(link["url"])).content == sample_clip_bytes
    for target in ("mp4", "gif"):
        refused = await live_client.post(f"assets/{video_id}/download", json={"targetFormat": target})
        assert refused.status_code == 400
        assert refused.json()["reason"] == "Invalid target format"
    assert (await live_client.post("assets/asset_none/download", json={})).status_code == 404
    assert (await live_client.get("assets/asset_none")).json()["reason"] == "Asset asset_none not found"
