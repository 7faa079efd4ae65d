"""``/v1/assets``: small images from base64 or data URLs, asset retrieval and download URLs."""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from prefect_scenario.emulator.api.auth import require_auth
from prefect_scenario.emulator.api.deps import get_state, root_url
from prefect_scenario.emulator.api.errors import bad_request, record_or_404
from prefect_scenario.emulator.api.paths import file_path
from prefect_scenario.emulator.api.wire import asset_wire
from prefect_scenario.emulator.service import signing
from prefect_scenario.emulator.service.ids import new_id
from prefect_scenario.emulator.service.media import FileFacts, describe_image
from prefect_scenario.emulator.service.records import AssetRecord
from prefect_scenario.emulator.service.state import EmulatorState

router = APIRouter(dependencies=[Depends(require_auth)])

_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,(?P<data>.*)$", re.S
)
_SUFFIX_BY_MIME = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
_FORMATS_BY_MIME = {"image/png": {"png"}, "image/jpeg": {"jpeg", "jpg"}, "image/webp": {"webp"}}


def signed_file_url(state: EmulatorState, request: Request, asset_id: str) -> str:
    """A fresh signed URL of the asset's file, valid for ``asset_url_ttl_seconds``."""
    expires = int(state.clock.now() + state.config.asset_url_ttl_seconds)
    return signing.sign_url(state.signing_key, "GET", root_url(request), file_path(asset_id), expires)


def _asset_or_404(state: EmulatorState, asset_id: str) -> AssetRecord:
    asset = record_or_404(state.assets, asset_id, "Asset")
    return asset


def decode_image(text: str) -> bytes:
    """The bytes of a base64 image or ``data:<mime>;base64,...`` URL.

    Raises:
        ApiError: 400 "Unhandled image format" when it is neither.
    """
    match = _DATA_URL.match(text.strip())
    # Line-wrapped base64 (76-character lines, as some encoders write) is still base64.
    payload = "".join((match.group("data") if match else text).split())
    try:
        return base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_request("Unhandled image format: send base64 or a data URL", field="image") from exc


def _store_image(directory: FilePath, asset_id: str, data: bytes) -> tuple[FilePath, FileFacts]:
    staging = directory / f"{asset_id}.upload"
    staging.write_bytes(data)
    try:
        facts = describe_image(staging)
    except (ValueError, OSError) as exc:
        staging.unlink(missing_ok=True)
        raise bad_request(f"Unhandled image format: {exc}", field="image") from exc
    final = staging.with_suffix(_SUFFIX_BY_MIME.get(facts.mime_type, ".img"))
    staging.rename(final)
    return final, facts


@router.post("/assets")
async def create_image_asset(request: Request) -> JSONResponse:
    """``{name, image}`` (base64 or a data URL) becomes an image asset at once (status success)."""
    state = get_state(request)
    try:
        body: Any = await request.json()
    except ValueError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise bad_request('"name" is required: the original file name of the image', field="name")
    image = body.get("image")
    if image is None:
        if body.get("canvas") is not None:
            raise bad_request(
                "Canvas uploads are not supported by the emulator: send 'image'", field="canvas"
            )
        raise bad_request("Either 'image' or 'canvas' must be provided", field="image")
    if not isinstance(image, str) or not image.strip():
        raise bad_request("Unhandled image format: 'image' must be a base64 string", field="image")
    data = decode_image(image)
    asset_id = new_id("asset_")
    path, facts = await run_in_threadpool(_store_image, state.directory("assets"), asset_id, data)
    asset = AssetRecord(
        id=asset_id,
        path=path,
        mime_type=facts.mime_type,
        kind="image",
        source="uploaded",
        properties=facts.properties,
        created_at=state.clock.now(),
        name=name,
    )
    state.add_asset(asset)
    with state.lock:
        return JSONResponse(
            {"asset": asset_wire(asset, signed_file_url(state, request, asset_id), state.config)}
        )


@router.get("/assets/{assetId}")
async def get_asset(request: Request, asset_id: Annotated[str, Path(alias="assetId")]) -> JSONResponse:
    """An asset with a freshly signed, short-lived file URL."""
    state = get_state(request)
    with state.lock:
        asset = _asset_or_404(state, asset_id)
        return JSONResponse(
            {"asset": asset_wire(asset, signed_file_url(state, request, asset_id), state.config)}
        )


@router.post("/assets/{assetId}/download")
async def download_asset(request: Request, asset_id: Annotated[str, Path(alias="assetId")]) -> JSONResponse:
    """``{url, mimeType}`` of the stored file; a ``targetFormat`` on a video is refused (400)."""
    state = get_state(request)
    raw = await request.body()
    try:
        body: Any = await request.json() if raw.strip() else {}
    except ValueError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}") from exc
    target = body.get("targetFormat") if isinstance(body, dict) else None
    with state.lock:
        asset = _asset_or_404(state, asset_id)
        if target is not None and (
            asset.kind != "image" or str(target).lower() not in _FORMATS_BY_MIME.get(asset.mime_type, set())
        ):
            # Audio and video only come in their stored format; the emulator converts no images either.
            raise bad_request("Invalid target format", field="targetFormat")
        url = signed_file_url(state, request, asset_id)
        return JSONResponse({"url": url, "mimeType": asset.mime_type})
