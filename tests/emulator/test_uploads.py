"""Multipart uploads (parts in order, sizes, probing, expiry) and image assets from base64."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from prefect_scenario.emulator import EmulatorState
from support.wire import control, create_upload, data_url, put_parts, upload_file, wait_upload


async def complete(client: httpx.AsyncClient, upload_id: str) -> httpx.Response:
    return await client.post(f"uploads/{upload_id}/action", json={"action": "complete"})


async def test_a_video_in_three_parts_is_assembled_in_order_and_probed(
    asgi_client: httpx.AsyncClient, emulator_state: EmulatorState, sample_clip_bytes: bytes
) -> None:
    data = sample_clip_bytes
    upload = await create_upload(asgi_client, data, parts=3)
    assert upload["status"] == "pending"
    assert upload["source"] == "multipart"
    assert [part["number"] for part in upload["parts"]] == [1, 2, 3]
    assert upload["jobId"].startswith("job_")
    assert upload["id"].startswith("upload_")
    # PUT the parts out of order: the emulator assembles by part number.
    slices = [data[:70_000], data[70_000:140_000], data[140_000:]]
    for part, chunk in reversed(list(zip(upload["parts"], slices, strict=True))):
        response = await asgi_client.put(
            part["url"], content=chunk, auth=None, headers={"Content-Type": "application/x-anything"}
        )
        assert response.status_code == 200
        assert response.headers["etag"]
    completed = (await complete(asgi_client, upload["id"])).json()["upload"]
    assert completed["status"] == "validating"
    assert "parts" not in completed
    done = await wait_upload(asgi_client, upload["id"])
    assert done["status"] == "imported"
    asset_id = done["entityId"]
    assert await asyncio.to_thread(emulator_state.assets[asset_id].path.read_bytes) == data
    asset = (await asgi_client.get(f"assets/{asset_id}")).json()["asset"]
    assert asset["properties"]["size"] == len(data)
    assert asset["properties"]["nbFrames"] == 96
    assert asset["properties"]["frameRate"] == 24
    job = (await asgi_client.get(f"jobs/{upload['jobId']}")).json()["job"]
    assert job["jobType"] == "upload"
    assert job["status"] == "success"
    assert job["metadata"]["output"] == {"entityId": asset_id}
    assert [entry["status"] for entry in job["statusHistory"]] == [
        "pending",
        "queued",
        "in-progress",
        "success",
    ]


async def test_a_text_file_fails_validation_with_an_error_message(
    asgi_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.mp4"
    await asyncio.to_thread(notes.write_text, "this is not a video\n" * 100)
    upload = await upload_file(asgi_client, notes)
    assert upload["status"] == "failed"
    assert "notes.mp4 is not a decodable video" in upload["errorMessage"]
    assert "entityId" not in upload
    job = (await asgi_client.get(f"jobs/{upload['jobId']}")).json()["job"]
    assert job["status"] == "failure"
    assert job["metadata"]["error"] == upload["errorMessage"]


async def test_a_missing_part_fails_the_upload(
    asgi_client: httpx.AsyncClient, sample_clip_bytes: bytes
) -> None:
    data = sample_clip_bytes
    upload = await create_upload(asgi_client, data, parts=3)
    await put_parts(asgi_client, upload, data, skip=2)
    await complete(asgi_client, upload["id"])
    done = await wait_upload(asgi_client, upload["id"])
    assert done["status"] == "failed"
    assert done["errorMessage"].startswith("Part 2 of 3 was never uploaded")


async def test_a_size_mismatch_fails_the_upload(
    asgi_client: httpx.AsyncClient, sample_clip_bytes: bytes
) -> None:
    data = sample_clip_bytes
    upload = await create_upload(asgi_client, data + b"extra", parts=1)
    await put_parts(asgi_client, upload, data)
    await complete(asgi_client, upload["id"])
    done = await wait_upload(asgi_client, upload["id"])
    assert done["status"] == "failed"
    assert f"add up to {len(data)} bytes but fileSize says {len(data) + 5}" in done["errorMessage"]


async def test_an_image_can_come_through_a_multipart_upload(
    asgi_client: httpx.AsyncClient, sample_image: Path
) -> None:
    upload = await upload_file(asgi_client, sample_image, kind="image", content_type="image/png")
    assert upload["status"] == "imported"
    asset = (await asgi_client.get(f"assets/{upload['entityId']}")).json()["asset"]
    assert (asset["kind"], asset["mimeType"], asset["source"]) == ("image", "image/png", "uploaded")


async def test_part_urls_expire_and_refuse_tampering(
    asgi_client: httpx.AsyncClient, emulator_state: EmulatorState, sample_clip: Path
) -> None:
    emulator_state.configure(part_url_ttl_seconds=30)
    upload = await create_upload(asgi_client, b"0123456789", parts=1)
    url = upload["parts"][0]["url"]
    tampered = url.replace("expires=", "expires=9")
    assert (await asgi_client.put(tampered, content=b"0123456789", auth=None)).status_code == 403
    unsigned = url.split("?")[0]
    assert (await asgi_client.put(unsigned, content=b"0123456789", auth=None)).status_code == 403
    await control(asgi_client, "clock", {"advance_seconds": 31})
    expired = await asgi_client.put(url, content=b"0123456789", auth=None)
    assert expired.status_code == 403
    assert "expired" in expired.json()["reason"]


async def test_part_puts_need_a_length_as_on_s3(asgi_client: httpx.AsyncClient) -> None:
    upload = await create_upload(asgi_client, b"0123456789", parts=1)
    url = upload["parts"][0]["url"]

    async def chunked() -> AsyncIterator[bytes]:
        yield b"01234"
        yield b"56789"

    refused = await asgi_client.put(url, content=chunked(), auth=None)
    assert refused.status_code == 411
    assert "<Code>MissingContentLength</Code>" in refused.text
    accepted = await asgi_client.put(url, content=chunked(), headers={"Content-Length": "10"}, auth=None)
    assert accepted.status_code == 200
    assert accepted.headers["etag"] == '"781e5e245d69b566979b86e28d23f2c7"'  # md5("0123456789")


async def test_upload_requests_are_checked(asgi_client: httpx.AsyncClient) -> None:
    good = {"fileName": "a.mp4", "contentType": "video/mp4", "fileSize": 10, "kind": "video", "parts": 1}
    for change, field in [
        ({"fileName": None}, "fileName"),
        ({"kind": "movie"}, "kind"),
        ({"parts": 0}, "parts"),
        ({"fileSize": 2.5}, "fileSize"),
        ({"url": "https://example.org/a.mp4"}, "url"),
    ]:
        body = {key: value for key, value in {**good, **change}.items() if value is not None}
        response = await asgi_client.post("uploads", json=body)
        assert response.status_code == 400, body
        assert response.json()["details"]["field"] == field
    upload = await create_upload(asgi_client, b"0123456789")
    assert (
        await asgi_client.post(f"uploads/{upload['id']}/action", json={"action": "abort"})
    ).status_code == 400
    await complete(asgi_client, upload["id"])
    again = await complete(asgi_client, upload["id"])
    assert again.status_code == 400
    assert (await asgi_client.get("uploads/upload_nope")).json()["reason"] == "Upload upload_nope not found"


@pytest.mark.parametrize("encoding", ["data-url", "bare-base64"])
async def test_an_image_asset_from_base64(
    asgi_client: httpx.AsyncClient, sample_image: Path, sample_image_bytes: bytes, encoding: str
) -> None:
    image = (
        data_url(sample_image) if encoding == "data-url" else base64.b64encode(sample_image_bytes).decode()
    )
    response = await asgi_client.post("assets", json={"name": "ref.png", "image": image})
    assert response.status_code == 200
    asset = response.json()["asset"]
    assert (asset["kind"], asset["status"], asset["metadata"]["type"], asset["mimeType"]) == (
        "image",
        "success",
        "uploaded",
        "image/png",
    )
    assert asset["properties"] == {
        "size": len(sample_image_bytes),
        "width": 64,
        "height": 64,
        "format": "png",
    }


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"name": "a.png"}, "Either 'image' or 'canvas' must be provided"),
        ({"image": "aGVsbG8="}, '"name" is required'),
        ({"name": "a.png", "image": "!!! not base64"}, "Unhandled image format"),
        (
            {"name": "a.png", "image": base64.b64encode(b"hello, not an image").decode()},
            "Unhandled image format",
        ),
    ],
)
async def test_bad_image_assets_are_refused(
    asgi_client: httpx.AsyncClient, body: dict[str, str], words: str
) -> None:
    response = await asgi_client.post("assets", json=body)
    assert response.status_code == 400
    assert words in response.json()["reason"]
