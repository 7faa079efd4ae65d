"""Assets: resumable streaming through expiring signed URLs, atomic downloads, small images."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_scenario.errors import DownloadError, InputValidationError

from .conftest import asset_payload, upload_payload

KiB = 1024
CONTENT = os.urandom(700 * KiB + 13)
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(200)


class DroppingStream(httpx.AsyncByteStream):
    """A body that sends ``cut`` bytes, then loses the connection."""

    def __init__(self, data: bytes, cut: int) -> None:
        self.data, self.cut = data, cut

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data[: self.cut]
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


class FakeAssetServer:
    """``GET /v1/assets/{id}`` (a new signature each time) and a CDN answering from a script.

    Script entries, one per file request: "ok", "403", "drop@N" (N bytes then the connection
    drops), "short@N" (a clean body of only N bytes), "ignore-range" (200 with everything).
    """

    def __init__(self, *script: str, content: bytes = CONTENT, announced: int | None = None) -> None:
        self.script = list(script)
        self.content = content
        self.announced = len(content) if announced is None else announced
        self.asset_gets: list[httpx.Request] = []
        self.file_gets: list[httpx.Request] = []
        self.posts: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "cdn.test":
            return self._file(request)
        if request.method == "GET" and request.url.path.startswith("/v1/assets/"):
            self.asset_gets.append(request)
            asset_id = request.url.path.rsplit("/", 1)[1]
            url = f"https://cdn.test/files/{asset_id}?Signature=s{len(self.asset_gets)}&Expires=1"
            return httpx.Response(
                200, json={"asset": asset_payload(asset_id, url=url, size=self.announced, index=2)}
            )
        if request.method == "POST" and request.url.path == "/v1/assets":
            body = json.loads(request.content)
            self.posts.append(body)
            url = "https://cdn.test/files/asset_img?Signature=s"
            payload = asset_payload("asset_img", url=url, size=len(PNG), mime="image/png")
            return httpx.Response(200, json={"asset": payload})
        raise AssertionError(f"unexpected {request.method} {request.url}")

    def _file(self, request: httpx.Request) -> httpx.Response:
        self.file_gets.append(request)
        assert "authorization" not in request.headers
        action = self.script.pop(0) if self.script else "ok"
        start = 0
        if "range" in request.headers and action != "ignore-range":
            start = int(request.headers["range"].removeprefix("bytes=").removesuffix("-"))
        body = self.content[start:]
        status = 206 if start else 200
        headers = {"content-type": "video/mp4"}
        if start:
            headers["content-range"] = f"bytes {start}-{len(self.content) - 1}/{len(self.content)}"
        if action == "403":
            return httpx.Response(403, text="<Error>Request has expired</Error>")
        if action.startswith("drop@"):
            headers["content-length"] = str(len(body))
            return httpx.Response(status, headers=headers, stream=DroppingStream(body, int(action[5:])))
        if action.startswith("short@"):
            return httpx.Response(status, headers=headers, content=body[: int(action[6:])])
        return httpx.Response(status, headers=headers, content=body)


async def collect(client: Any, asset_id: str = "asset_out", chunk_size: int = 64 * KiB) -> bytes:
    return b"".join([chunk async for chunk in client.assets.stream(asset_id, chunk_size=chunk_size)])


async def test_stream_in_chunks(make_client: Any) -> None:
    server = FakeAssetServer()
    async with make_client(server) as client:
        chunks = [chunk async for chunk in client.assets.stream("asset_out", chunk_size=64 * KiB)]
    assert b"".join(chunks) == CONTENT
    assert {len(chunk) for chunk in chunks[:-1]} == {64 * KiB}
    assert "authorization" in server.asset_gets[0].headers


async def test_stream_resumes_after_a_mid_body_drop(make_client: Any) -> None:
    server = FakeAssetServer("drop@300000")
    async with make_client(server) as client:
        assert await collect(client) == CONTENT
    assert len(server.asset_gets) == 2  # a fresh URL for the second try
    assert "range" not in server.file_gets[0].headers
    assert server.file_gets[1].headers["range"] == "bytes=300000-"
    assert server.file_gets[1].url.params["Signature"] == "s2"


async def test_stream_resumes_after_an_expired_url(make_client: Any, fake_time: Any) -> None:
    server = FakeAssetServer("403")
    async with make_client(server) as client:
        assert await collect(client) == CONTENT
    assert len(server.asset_gets) == 2
    assert [request.url.params["Signature"] for request in server.file_gets] == ["s1", "s2"]
    assert fake_time.sleeps == []  # a refused URL needs a new one, not a pause


async def test_stream_survives_drop_then_expiry_then_short_body(make_client: Any) -> None:
    server = FakeAssetServer("drop@100000", "403", "short@50000", "ok")
    async with make_client(server) as client:
        assert await collect(client) == CONTENT
    assert [request.headers.get("range") for request in server.file_gets] == [
        None,
        "bytes=100000-",
        "bytes=100000-",
        "bytes=150000-",
    ]


async def test_stream_copes_with_a_server_ignoring_range(make_client: Any) -> None:
    server = FakeAssetServer("drop@200000", "ignore-range")
    async with make_client(server) as client:
        assert await collect(client, chunk_size=48 * KiB) == CONTENT


async def test_stream_gives_up_after_bounded_attempts(make_client: Any) -> None:
    server = FakeAssetServer(*["drop@0"] * 10)
    async with make_client(server) as client:
        with pytest.raises(DownloadError) as caught:
            await collect(client)
    assert caught.value.asset_id == "asset_out"
    assert len(server.file_gets) == 4  # RetryPolicy.max_attempts
    assert "Signature" not in str(caught.value)


async def test_more_bytes_than_announced_is_refused(make_client: Any) -> None:
    server = FakeAssetServer(announced=len(CONTENT) - 1)
    async with make_client(server) as client:
        with pytest.raises(DownloadError, match="more than the"):
            await collect(client)


async def test_download_is_atomic_and_checked(make_client: Any, tmp_path: Path) -> None:
    server = FakeAssetServer("drop@123456")
    async with make_client(server) as client:
        downloaded = await client.assets.download("asset_out", tmp_path / "out" / "layer.mp4")
    assert downloaded.path == tmp_path / "out" / "layer.mp4"
    assert downloaded.path.read_bytes() == CONTENT
    assert downloaded.sha256 == hashlib.sha256(CONTENT).hexdigest()
    assert downloaded.size == len(CONTENT)
    assert downloaded.mime_type == "video/mp4"
    assert downloaded.output_index == 2
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["layer.mp4"]


async def test_download_into_a_directory_names_the_file_after_the_asset(
    make_client: Any, tmp_path: Path
) -> None:
    async with make_client(FakeAssetServer()) as client:
        downloaded = await client.assets.download("asset_out", tmp_path)
    assert downloaded.path == tmp_path / "asset_out.mp4"


async def test_a_failed_download_leaves_no_file(make_client: Any, tmp_path: Path) -> None:
    server = FakeAssetServer(*["403"] * 10)
    async with make_client(server) as client:
        with pytest.raises(DownloadError):
            await client.assets.download("asset_out", tmp_path / "layer.mp4")
    assert os.listdir(tmp_path) == []


async def test_create_image_inline_as_a_data_url(make_client: Any) -> None:
    server = FakeAssetServer()
    async with make_client(server) as client:
        asset = await client.assets.create_image(PNG)
    assert asset.id == "asset_img"
    assert server.posts == [
        {"name": "image.png", "image": "data:image/png;base64," + base64.b64encode(PNG).decode()}
    ]


async def test_create_image_from_a_file_keeps_its_name(make_client: Any, tmp_path: Path) -> None:
    (tmp_path / "key.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(100))
    server = FakeAssetServer()
    async with make_client(server) as client:
        await client.assets.create_image(tmp_path / "key.jpg")
    assert server.posts[0]["name"] == "key.jpg"
    assert server.posts[0]["image"].startswith("data:image/jpeg;base64,")


async def test_a_large_image_goes_through_a_multipart_upload(make_client: Any) -> None:
    big = PNG + os.urandom(3_600_000)
    puts: list[int] = []
    creates: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "s3.test":
            puts.append(len(request.content))
            return httpx.Response(200)
        if request.url.path == "/v1/uploads":
            creates.append(json.loads(request.content))
            return httpx.Response(200, json={"upload": upload_payload("up_1", parts=1)})
        if request.url.path == "/v1/uploads/up_1/action":
            return httpx.Response(
                200, json={"upload": upload_payload("up_1", status="imported", entity_id="asset_big")}
            )
        assert request.url.path == "/v1/assets/asset_big", request.url
        payload = asset_payload("asset_big", url="https://cdn.test/x", size=len(big), mime="image/png")
        return httpx.Response(200, json={"asset": payload})

    async with make_client(handler) as client:
        asset = await client.assets.create_image(big, name="huge.png")
    assert asset.id == "asset_big"
    assert creates == [
        {
            "fileName": "huge.png",
            "contentType": "image/png",
            "fileSize": len(big),
            "kind": "image",
            "parts": 1,
        }
    ]
    assert puts == [len(big)]


async def test_create_image_refuses_what_is_not_an_image(make_client: Any) -> None:
    server = FakeAssetServer()
    async with make_client(server) as client:
        with pytest.raises(InputValidationError, match="not a PNG, JPEG"):
            await client.assets.create_image(b"plain text, not an image")
    assert server.posts == []
