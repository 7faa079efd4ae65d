"""The Scenario wire protocol through an ``httpx.AsyncClient``: upload, submit, wait for jobs, and the
emulator's control plane beside the client's ``/v1``.

They take a client based at ``.../v1`` with auth, so the same helper drives the emulator in-process
(ASGI) or on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from pathlib import Path
from typing import Any

import httpx

from support.emulator import control_url

TERMINAL = {"success", "failure", "canceled"}


async def stats(client: httpx.AsyncClient) -> dict[str, Any]:
    """``GET /_emulator/stats``."""
    response = await client.get(control_url(client, "stats"))
    response.raise_for_status()
    return dict(response.json())


async def control(client: httpx.AsyncClient, path: str, payload: Any) -> Any:
    """POST ``payload`` to a control-plane route and return the JSON answer."""
    response = await client.post(control_url(client, path), json=payload)
    response.raise_for_status()
    return response.json()


async def create_upload(
    client: httpx.AsyncClient,
    data: bytes,
    *,
    file_name: str = "clip.mp4",
    content_type: str = "video/mp4",
    kind: str = "video",
    parts: int = 1,
) -> dict[str, Any]:
    """``POST /uploads``; returns the upload object."""
    response = await client.post(
        "uploads",
        json={
            "fileName": file_name,
            "contentType": content_type,
            "fileSize": len(data),
            "kind": kind,
            "parts": parts,
        },
    )
    assert response.status_code == 200, response.text
    return dict(response.json()["upload"])


def split(data: bytes, parts: int) -> list[bytes]:
    """``data`` cut in ``parts`` consecutive slices."""
    size = math.ceil(len(data) / parts)
    return [data[i * size : (i + 1) * size] for i in range(parts)]


async def put_parts(
    client: httpx.AsyncClient, upload: dict[str, Any], data: bytes, *, skip: int | None = None
) -> None:
    """PUT each part's slice to its presigned URL, no auth header (``skip``: a part number to leave out)."""
    slices = split(data, len(upload["parts"]))
    for part, chunk in zip(upload["parts"], slices, strict=True):
        if part["number"] == skip:
            continue
        response = await client.put(part["url"], content=chunk, auth=None)
        assert response.status_code == 200, response.text


async def wait_upload(client: httpx.AsyncClient, upload_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """Poll ``GET /uploads/{id}`` until imported or failed."""
    deadline = time.monotonic() + timeout
    while True:
        upload = (await client.get(f"uploads/{upload_id}")).json()["upload"]
        if upload["status"] in ("imported", "failed"):
            return dict(upload)
        assert time.monotonic() < deadline, f"upload {upload_id} still {upload['status']}"
        await asyncio.sleep(0.05)


async def upload_file(
    client: httpx.AsyncClient,
    path: Path,
    *,
    parts: int = 1,
    kind: str = "video",
    content_type: str = "video/mp4",
) -> dict[str, Any]:
    """The whole multipart flow: create, PUT parts, complete, poll; returns the final upload."""
    data = await asyncio.to_thread(path.read_bytes)
    upload = await create_upload(
        client, data, file_name=path.name, content_type=content_type, kind=kind, parts=parts
    )
    await put_parts(client, upload, data)
    response = await client.post(f"uploads/{upload['id']}/action", json={"action": "complete"})
    assert response.status_code == 200, response.text
    return await wait_upload(client, upload["id"])


async def upload_video(client: httpx.AsyncClient, path: Path, *, parts: int = 1) -> str:
    """Upload a video; returns its asset id."""
    upload = await upload_file(client, path, parts=parts)
    assert upload["status"] == "imported", upload
    return str(upload["entityId"])


def data_url(path: Path, mime_type: str = "image/png") -> str:
    """A ``data:`` URL of a file."""
    return f"data:{mime_type};base64,{base64.b64encode(path.read_bytes()).decode()}"


async def upload_image(client: httpx.AsyncClient, path: Path) -> str:
    """``POST /assets`` with a data URL; returns the image asset id."""
    response = await client.post("assets", json={"name": path.name, "image": data_url(path)})
    assert response.status_code == 200, response.text
    return str(response.json()["asset"]["id"])


async def submit(
    client: httpx.AsyncClient, model_id: str, body: dict[str, Any], **params: str
) -> httpx.Response:
    """``POST /generate/custom/{model_id}``."""
    return await client.post(f"generate/custom/{model_id}", json=body, params=params)


async def wait_job(client: httpx.AsyncClient, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """Poll ``GET /jobs/{id}`` until the job is terminal; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()["job"]
        if job["status"] in TERMINAL:
            return dict(job)
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        await asyncio.sleep(0.05)
