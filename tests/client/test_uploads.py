"""Multipart uploads: bounded memory, part retries, expired part URLs, import outcome."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_scenario.errors import InputValidationError, PermissionDeniedError, UploadFailedError

from .conftest import FakeTime, asset_payload, upload_payload

MiB = 1024 * 1024


class FakeUploadServer:
    """``POST /uploads``, part PUTs on a fake S3, ``complete``, ``GET /uploads/{id}``, ``GET /assets``.

    ``part_faults`` maps (upload number, part number) to a list of faults served before the part
    is accepted: "503", "reset", "403".
    """

    def __init__(
        self,
        *,
        part_faults: dict[tuple[int, int], list[str]] | None = None,
        polls_to_import: int = 2,
        import_error: str | None = None,
        put_delay: float = 0.0,
        keep_bytes: bool = True,
    ) -> None:
        self.part_faults = part_faults or {}
        self.polls_to_import = polls_to_import
        self.import_error = import_error
        self.put_delay = put_delay
        self.keep_bytes = keep_bytes
        self.lose_complete_answer = False
        self.creates: list[dict[str, Any]] = []
        self.received: dict[tuple[int, int], bytes] = {}
        self.put_headers: list[httpx.Headers] = []  # headers only: a request holds its part
        self.in_flight = 0
        self.max_in_flight = 0
        self.completed: list[str] = []
        self.polls = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.url.host == "s3.test":
            return await self._put(request)
        if request.method == "POST" and path == "/v1/uploads":
            body = json.loads(request.content)
            self.creates.append(body)
            return httpx.Response(
                200, json={"upload": upload_payload(f"up_{len(self.creates)}", parts=body["parts"])}
            )
        if request.method == "POST" and path.endswith("/action"):
            upload_id = path.split("/")[3]
            assert json.loads(request.content) == {"action": "complete"}
            if upload_id in self.completed:
                return httpx.Response(400, json={"reason": f"Upload {upload_id} is already validating"})
            self.completed.append(upload_id)
            if self.lose_complete_answer:
                self.lose_complete_answer = False
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a response.", request=request
                )
            return httpx.Response(200, json={"upload": upload_payload(upload_id, status="validating")})
        if request.method == "GET" and path.startswith("/v1/uploads/"):
            upload_id = path.rsplit("/", 1)[1]
            self.polls += 1
            if self.polls < self.polls_to_import:
                return httpx.Response(200, json={"upload": upload_payload(upload_id, status="validating")})
            if self.import_error:
                upload = upload_payload(upload_id, status="failed", error=self.import_error)
            else:
                upload = upload_payload(upload_id, status="imported", entity_id="asset_uploaded")
            return httpx.Response(200, json={"upload": upload})
        if request.method == "GET" and path == "/v1/assets/asset_uploaded":
            url = "https://cdn.test/asset_uploaded?sig=1"
            return httpx.Response(
                200, json={"asset": asset_payload("asset_uploaded", url=url, size=self.total)}
            )
        raise AssertionError(f"unexpected {request.method} {request.url}")

    @property
    def total(self) -> int:
        return int(self.creates[-1]["fileSize"])

    async def _put(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "PUT"
        upload_number = int(request.url.path.split("/")[2].split("_")[1])
        part_number = int(request.url.path.rsplit("part", 1)[1])
        self.put_headers.append(request.headers)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.put_delay)
            faults = self.part_faults.get((upload_number, part_number), [])
            if faults:
                fault = faults.pop(0)
                if fault == "reset":
                    raise httpx.ReadError("connection reset by peer", request=request)
                return httpx.Response(int(fault), text="<Error>nope</Error>")
            content = request.content
            # The memory test keeps only a digest, so that what it measures is the client.
            self.received[(upload_number, part_number)] = (
                content if self.keep_bytes else hashlib.sha256(content).digest()
            )
            return httpx.Response(200, headers={"ETag": f'"{part_number}"'})
        finally:
            self.in_flight -= 1


class StreamingUploadTransport(httpx.AsyncBaseTransport):
    """The fake server, but part bodies are consumed as they stream, as a socket would.

    ``httpx.MockTransport`` reads every request whole before its handler runs, which would put
    each part in memory whatever the client does.
    """

    def __init__(self, server: FakeUploadServer) -> None:
        self.server = server

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != "s3.test":
            await request.aread()
            return await self.server(request)
        digest, size = hashlib.sha256(), 0
        async for chunk in request.stream:  # type: ignore[union-attr]
            digest.update(chunk)
            size += len(chunk)
        part = int(request.url.path.rsplit("part", 1)[1])
        self.server.received[(1, part)] = digest.digest()
        self.server.put_headers.append(request.headers)
        return httpx.Response(200, headers={"ETag": f'"{part}"'})


def write_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


async def test_upload_sends_parts_without_auth_and_returns_the_asset(
    make_client: Any, tmp_path: Path
) -> None:
    data = write_file(tmp_path / "clip.mp4", 12 * MiB + 123)
    server = FakeUploadServer()
    progress: list[tuple[int, int]] = []
    async with make_client(server) as client:
        asset = await client.uploads.upload_file(
            tmp_path / "clip.mp4",
            part_size=5 * MiB,
            on_progress=lambda sent, total: progress.append((sent, total)),
        )
    assert asset.id == "asset_uploaded"
    assert server.creates == [
        {
            "fileName": "clip.mp4",
            "contentType": "video/mp4",
            "fileSize": len(data),
            "kind": "video",
            "parts": 3,
        }
    ]
    assert b"".join(server.received[(1, n)] for n in (1, 2, 3)) == data
    for headers in server.put_headers:
        assert "authorization" not in headers
        assert headers["content-type"] == "video/mp4"
        assert "transfer-encoding" not in headers
    # Streamed from disk, yet with a length: presigned S3 PUTs refuse chunked bodies.
    lengths = sorted(int(headers["content-length"]) for headers in server.put_headers)
    assert lengths == [2 * MiB + 123, 5 * MiB, 5 * MiB]
    assert server.completed == ["up_1"]
    assert [sent for sent, _ in progress] == sorted(sent for sent, _ in progress)
    assert progress[-1] == (len(data), len(data))


async def test_at_most_max_parts_in_flight_are_sent_at_once(make_client: Any, tmp_path: Path) -> None:
    part_size, parts, in_flight = 5 * MiB, 8, 2
    write_file(tmp_path / "big.mp4", part_size * parts - 17)
    server = FakeUploadServer(put_delay=0.02, keep_bytes=False)
    async with make_client(server) as client:
        await client.uploads.upload_file(
            tmp_path / "big.mp4", part_size=part_size, max_parts_in_flight=in_flight
        )
    assert server.max_in_flight == in_flight  # parallel, and never more than allowed
    assert len(server.received) == parts


async def test_parts_stream_from_disk_without_being_held_whole(make_client: Any, tmp_path: Path) -> None:
    part_size, parts, in_flight = 5 * MiB, 8, 2
    data = write_file(tmp_path / "big.mp4", part_size * parts - 17)
    server = FakeUploadServer()
    async with make_client(StreamingUploadTransport(server)) as client:
        tracemalloc.start()
        try:
            await client.uploads.upload_file(
                tmp_path / "big.mp4", part_size=part_size, max_parts_in_flight=in_flight
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    for number in range(1, parts + 1):
        chunk = data[(number - 1) * part_size : number * part_size]
        assert server.received[(1, number)] == hashlib.sha256(chunk).digest()
    # Parts read whole would be 2 x 5 MiB; streamed, 1 MiB reads per part in flight.
    assert peak < part_size, f"peak {peak / MiB:.1f} MiB"
    print(f"\nupload of {parts} x 5 MiB, {in_flight} in flight: peak traced memory {peak / MiB:.1f} MiB")


async def test_a_file_cut_short_during_the_upload_is_an_input_error(make_client: Any, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    write_file(clip, 11 * MiB)
    server = FakeUploadServer()

    def cut_after_first_part(sent: int, total: int) -> None:
        with clip.open("r+b") as handle:
            handle.truncate(6 * MiB)

    async with make_client(server) as client:
        with pytest.raises(InputValidationError, match="changed while it was being uploaded"):
            await client.uploads.upload_file(
                clip, part_size=5 * MiB, max_parts_in_flight=1, on_progress=cut_after_first_part
            )
    assert server.completed == []  # never completed: no asset made of half a file


async def test_a_failed_part_put_is_retried(make_client: Any, fake_time: FakeTime, tmp_path: Path) -> None:
    data = write_file(tmp_path / "clip.mp4", 11 * MiB)
    server = FakeUploadServer(part_faults={(1, 1): ["503"], (1, 2): ["reset", "503"]})
    async with make_client(server) as client:
        await client.uploads.upload_file(tmp_path / "clip.mp4", part_size=5 * MiB)
    assert b"".join(server.received[(1, n)] for n in (1, 2, 3)) == data
    assert len(server.creates) == 1
    assert len(server.put_headers) == 6


async def test_expired_part_urls_recreate_the_upload_once(make_client: Any, tmp_path: Path) -> None:
    data = write_file(tmp_path / "clip.mp4", 6 * MiB)
    server = FakeUploadServer(part_faults={(1, 2): ["403"]})
    async with make_client(server) as client:
        asset = await client.uploads.upload_file(tmp_path / "clip.mp4", part_size=5 * MiB)
    assert asset.id == "asset_uploaded"
    assert len(server.creates) == 2
    assert server.received[(2, 1)] + server.received[(2, 2)] == data
    assert server.completed == ["up_2"]


async def test_part_urls_refused_twice_is_an_error(make_client: Any, tmp_path: Path) -> None:
    write_file(tmp_path / "clip.mp4", 1000)
    server = FakeUploadServer(part_faults={(1, 1): ["403"], (2, 1): ["403"]})
    async with make_client(server) as client:
        with pytest.raises(PermissionDeniedError) as caught:
            await client.uploads.upload_file(tmp_path / "clip.mp4")
    assert len(server.creates) == 2
    assert server.completed == []
    assert "X-Amz-Signature" not in str(caught.value)


async def test_a_refused_file_raises_with_the_error_message(make_client: Any, tmp_path: Path) -> None:
    write_file(tmp_path / "clip.mp4", 1000)
    server = FakeUploadServer(import_error="Unsupported codec")
    async with make_client(server) as client:
        with pytest.raises(UploadFailedError) as caught:
            await client.uploads.upload_file(tmp_path / "clip.mp4")
    assert caught.value.error_message == "Unsupported codec"
    assert caught.value.upload_id == "up_1"
    assert "Unsupported codec" in str(caught.value)


async def test_an_import_that_never_ends_times_out(
    make_client: Any, fake_time: FakeTime, tmp_path: Path
) -> None:
    write_file(tmp_path / "clip.mp4", 1000)
    server = FakeUploadServer(polls_to_import=10**9)
    async with make_client(server) as client:
        with pytest.raises(UploadFailedError, match="still validating after 30 s"):
            await client.uploads.upload_file(tmp_path / "clip.mp4", timeout_seconds=30)
    assert fake_time.now == pytest.approx(30)


async def test_part_settings_are_checked_before_anything_is_sent(make_client: Any, tmp_path: Path) -> None:
    write_file(tmp_path / "clip.mp4", 3 * MiB)
    write_file(tmp_path / "clip.unknownext", 10)
    server = FakeUploadServer()
    async with make_client(server) as client:
        with pytest.raises(InputValidationError, match="5 MiB minimum"):
            await client.uploads.upload_file(tmp_path / "clip.mp4", part_size=1 * MiB)
        with pytest.raises(InputValidationError, match="MIME type"):
            await client.uploads.upload_file(tmp_path / "clip.unknownext")
        # A file that fits in one part may use any part size.
        await client.uploads.upload_file(tmp_path / "clip.mp4", part_size=4 * MiB)
    assert len(server.creates) == 1


async def test_a_complete_whose_answer_was_lost_is_not_a_failure(make_client: Any, tmp_path: Path) -> None:
    write_file(tmp_path / "clip.mp4", 1000)
    server = FakeUploadServer()
    server.lose_complete_answer = True  # the first complete takes effect, its answer never arrives
    async with make_client(server) as client:
        asset = await client.uploads.upload_file(tmp_path / "clip.mp4")
    assert asset.id == "asset_uploaded"
    assert server.completed == ["up_1"]
