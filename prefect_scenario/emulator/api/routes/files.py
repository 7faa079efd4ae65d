"""The emulator's file server: signed asset downloads and presigned part uploads.

* ``GET|HEAD /files/{assetId}?expires=..&signature=..`` stands for the API's CDN: no auth header,
  403 once the URL expires (emulator clock) or when its query was tampered with, single ``Range``
  requests (206 with ``Content-Range``; 416 when unsatisfiable; other forms ignored, as RFC 9110
  allows), ``Content-Length``, ``Accept-Ranges`` and an ``ETag``.
* ``PUT /parts/{uploadId}/{partNumber}?expires=..&signature=..`` stands for S3's presigned part
  URLs: raw bytes, any Content-Type, 403 once expired; like S3, 411 ``MissingContentLength``
  without a ``Content-Length`` (a chunked body) and 400 ``IncompleteBody`` when fewer bytes come.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from prefect_scenario.emulator.api.deps import get_state
from prefect_scenario.emulator.api.errors import ApiError, bad_request, error_response, record_or_404
from prefect_scenario.emulator.api.paths import FILE_PATH, PART_PATH, file_path, part_path
from prefect_scenario.emulator.service import signing

router = APIRouter()


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range a ``Range`` header asks for, or None to serve the whole file.

    Raises:
        ApiError: 416 when the range is well-formed but lies outside the file.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # other units and multipart ranges: ignored, the whole file is served
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first:
            suffix = int(last)
            if suffix <= 0:
                raise _unsatisfiable(size)
            return max(0, size - suffix), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size:
        raise _unsatisfiable(size)
    if start > end:
        return None  # syntactically invalid: ignored
    return start, min(end, size - 1)


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"})


_CHUNK = 1024 * 1024


def _chunks(path: FilePath, start: int, length: int) -> Iterator[bytes]:
    """The bytes of a range, a chunk at a time: serving a 1 GiB asset holds 1 MiB, not 1 GiB."""
    with path.open("rb") as handle:
        handle.seek(start)
        remaining = length
        while remaining > 0:
            data = handle.read(min(_CHUNK, remaining))
            if not data:
                return
            remaining -= len(data)
            yield data


def _size_and_etag(path: FilePath) -> tuple[int, str]:
    stat = path.stat()
    digest = hashlib.sha256(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    return stat.st_size, f'"{digest[:32]}"'


def _refuse_unsigned(request: Request, method: str, path: str) -> JSONResponse | None:
    state = get_state(request)
    query = request.query_params
    why = signing.check(
        state.signing_key, method, path, query.get("expires"), query.get("signature"), state.clock.now()
    )
    return error_response(403, why) if why else None


@router.api_route(FILE_PATH, methods=["GET", "HEAD"], include_in_schema=False)
async def serve_file(request: Request, asset_id: Annotated[str, Path(alias="assetId")]) -> Response:
    """An asset's bytes, whole or a range."""
    refused = _refuse_unsigned(request, "GET", file_path(asset_id))
    if refused is not None:
        return refused
    state = get_state(request)
    with state.lock:
        asset = record_or_404(state.assets, asset_id, "Asset")
        path, mime_type = asset.path, asset.mime_type
    size, etag = await run_in_threadpool(_size_and_etag, path)
    span = parse_range(request.headers.get("range"), size)
    start, end = span if span is not None else (0, size - 1)
    length = max(0, end - start + 1)
    headers = {"Accept-Ranges": "bytes", "ETag": etag, "Content-Length": str(length)}
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    if request.method == "HEAD":
        return Response(content=b"", status_code=status, headers=headers, media_type=mime_type)
    # Starlette iterates a sync generator in its thread pool.
    return StreamingResponse(
        _chunks(path, start, length), status_code=status, headers=headers, media_type=mime_type
    )


@router.put(PART_PATH, include_in_schema=False)
async def put_part(
    request: Request,
    upload_id: Annotated[str, Path(alias="uploadId")],
    part_number: Annotated[str, Path(alias="partNumber")],
) -> Response:
    """Store one part of a multipart upload (raw body, any Content-Type)."""
    try:
        number = int(part_number)
    except ValueError:
        number = 0
    refused = _refuse_unsigned(request, "PUT", part_path(upload_id, number) if number else request.url.path)
    if refused is not None:
        return refused
    state = get_state(request)
    with state.lock:
        upload = record_or_404(state.uploads, upload_id, "Upload")
        if not 1 <= number <= upload.parts_count:
            raise bad_request(f"Part number must be from 1 to {upload.parts_count}", field="partNumber")
        if upload.status != "pending":
            raise bad_request(f"Upload {upload_id} is already {upload.status}: parts can no longer change")
        target = upload.part_path(number)
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        # S3 refuses a presigned PUT without a length (chunked transfer encoding included).
        return _s3_error(411, "MissingContentLength", "You must provide the Content-Length HTTP header.")
    digest = hashlib.md5(usedforsecurity=False)
    received = 0
    with await run_in_threadpool(target.open, "wb") as output:
        async for chunk in request.stream():
            digest.update(chunk)
            received += len(chunk)
            await run_in_threadpool(output.write, chunk)
    if received != int(declared):
        await run_in_threadpool(target.unlink, True)
        return _s3_error(
            400,
            "IncompleteBody",
            "You did not provide the number of bytes specified by the Content-Length HTTP header.",
        )
    # S3 answers a part PUT with its MD5 as ETag; clients that collect ETags get one.
    return Response(status_code=200, headers={"ETag": f'"{digest.hexdigest()}"'})


def _s3_error(status: int, code: str, message: str) -> Response:
    """An error as S3 answers on a presigned URL: XML, not the API's JSON."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return Response(content=body, status_code=status, media_type="application/xml")
