"""``/uploads``: multipart uploads of local files (videos, large images) into Scenario assets."""

from __future__ import annotations

import asyncio
import logging
import math
import mimetypes
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx

from prefect_scenario.errors import (
    BadRequestError,
    InputValidationError,
    PermissionDeniedError,
    UploadFailedError,
)
from prefect_scenario.models import (
    AssetEnvelope,
    CreateUploadRequest,
    ScenarioAsset,
    Upload,
    UploadEnvelope,
    UploadKind,
    UploadStatus,
)

from ._http import HttpCore, parse

logger = logging.getLogger("prefect_scenario.client")

MiB = 1024 * 1024
DEFAULT_PART_SIZE = 8 * MiB
# S3 multipart rules: every part but the last at least 5 MiB, at most 10 000 parts.
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000

OnProgress = Callable[[int, int], None]

_CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".webm": "video/webm",
    ".mov": "video/quicktime",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
}


def guess_content_type(path: Path) -> str | None:
    """The MIME type of a file from its suffix, or None when unknown."""
    known = _CONTENT_TYPES.get(path.suffix.lower())
    return known or mimetypes.guess_type(path.name)[0]


# Parts are streamed from disk this much at a time: memory per part in flight, not a whole part.
_PART_READ_SIZE = MiB


class _FilePart(httpx.AsyncByteStream):
    """Bytes ``offset .. offset + length`` of a file, read from disk as the PUT sends them.

    Reading a part whole held ``max_parts_in_flight`` x ``part_size`` bytes, and asyncio's transport
    copied the unsent rest again (the benchmarks measured +84 MiB for any file size). Each
    iteration reopens the file, so a retried attempt sends the same bytes again.
    """

    def __init__(self, path: Path, offset: int, length: int) -> None:
        self.path, self.offset, self.length = path, offset, length

    async def __aiter__(self) -> AsyncIterator[bytes]:
        done = 0
        while done < self.length:
            # One thread hop per chunk (open, seek, read): a small clip's part is a single hop.
            data = await asyncio.to_thread(
                _read_at, self.path, self.offset + done, min(_PART_READ_SIZE, self.length - done)
            )
            if not data:
                raise InputValidationError(
                    f"{self.path} changed while it was being uploaded: upload it again", field="path"
                )
            done += len(data)
            yield data


def _read_at(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(length)


class _PartUrlsRefused(Exception):
    """The part URLs of an upload were refused (expired signatures)."""

    def __init__(self, error: PermissionDeniedError) -> None:
        super().__init__(str(error))
        self.error = error


class UploadsAPI:
    """Multipart uploads: ``client.uploads``."""

    def __init__(self, http: HttpCore) -> None:
        self._http = http

    async def create(self, request: CreateUploadRequest) -> Upload:
        """Creates an upload; its ``parts`` carry the presigned PUT URLs."""
        response = await self._http.send_api("POST", "uploads", json=request.to_body())
        return parse(UploadEnvelope, response).upload

    async def complete(self, upload_id: str) -> Upload:
        """Tells the API every part was sent; it then validates and imports the file."""
        response = await self._http.send_api(
            "POST", "uploads", upload_id, "action", json={"action": "complete"}
        )
        return parse(UploadEnvelope, response).upload

    async def get(self, upload_id: str) -> Upload:
        """The upload as it is now."""
        response = await self._http.send_api("GET", "uploads", upload_id)
        return parse(UploadEnvelope, response).upload

    async def upload_file(
        self,
        path: Path,
        *,
        kind: UploadKind = "video",
        content_type: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        max_parts_in_flight: int = 4,
        timeout_seconds: float = 600,
        on_progress: OnProgress | None = None,
    ) -> ScenarioAsset:
        """Uploads a local file and returns the asset the API made of it.

        Memory stays bounded and flat in the file's size: each part streams from disk as its PUT
        sends it, 1 MiB at a time, ``max_parts_in_flight`` parts at once. Parts go to their
        presigned URLs without the Authorization header; a failed part PUT is retried under the
        retry policy (a PUT is idempotent). If the part URLs are refused (expired), the upload is
        created again, once.

        Args:
            path: the file.
            kind: the upload kind (``video``, ``image``, ...).
            content_type: MIME type; guessed from the suffix when omitted.
            part_size: bytes per part; at least 5 MiB unless the file fits in one part.
            max_parts_in_flight: parts sent concurrently.
            timeout_seconds: how long to wait for the API to import the file once it is sent.
            on_progress: called with (bytes sent, total bytes) after each part.

        Raises:
            InputValidationError: the file or the part settings cannot be uploaded.
            UploadFailedError: the API refused the file (its ``errorMessage``), or did not
                import it within ``timeout_seconds``.
        """
        path = Path(path)
        size = path.stat().st_size
        content_type = content_type or guess_content_type(path)
        if content_type is None:
            raise InputValidationError(
                f"cannot tell the MIME type of {path.name}: pass content_type", field="path"
            )
        if size == 0:
            raise InputValidationError(f"{path} is empty", field="path")
        if max_parts_in_flight < 1:
            raise InputValidationError("max_parts_in_flight must be at least 1", field="max_parts_in_flight")
        if size > part_size and part_size < MIN_PART_SIZE:
            raise InputValidationError(
                f"part_size {part_size} is below the 5 MiB minimum of a multipart upload", field="part_size"
            )
        parts = max(1, math.ceil(size / part_size))
        if parts > MAX_PARTS:
            raise InputValidationError(
                f"{path.name} would need {parts} parts (at most {MAX_PARTS}): raise part_size",
                field="part_size",
            )
        request = CreateUploadRequest(
            file_name=path.name, content_type=content_type, file_size=size, kind=kind, parts=parts
        )
        upload = await self.create(request)
        try:
            await self._send_parts(
                upload, path, size, part_size, max_parts_in_flight, content_type, on_progress
            )
        except _PartUrlsRefused as refused:
            logger.warning(
                "the part URLs of upload %s were refused (%s); creating the upload again", upload.id, refused
            )
            upload = await self.create(request)
            try:
                await self._send_parts(
                    upload, path, size, part_size, max_parts_in_flight, content_type, on_progress
                )
            except _PartUrlsRefused as again:
                raise again.error from None
        try:
            upload = await self.complete(upload.id)
        except BadRequestError:
            # A complete retried after its answer was lost finds the upload already completed
            # ("already validating"): that is success, not a refusal.
            current = await self.get(upload.id)
            if current.status is UploadStatus.PENDING:
                raise
            upload = current
        upload = await self._wait_imported(upload, timeout_seconds)
        assert upload.entity_id is not None
        response = await self._http.send_api("GET", "assets", upload.entity_id)
        return parse(AssetEnvelope, response).asset

    async def _send_parts(
        self,
        upload: Upload,
        path: Path,
        size: int,
        part_size: int,
        max_parts_in_flight: int,
        content_type: str,
        on_progress: OnProgress | None,
    ) -> None:
        count = max(1, math.ceil(size / part_size))
        urls = {part.number: part.url for part in upload.parts or []}
        if sorted(urls) != list(range(1, count + 1)):
            raise UploadFailedError(
                f"upload {upload.id} came with part URLs {sorted(urls)} for {count} parts",
                upload_id=upload.id,
                error_message=None,
            )
        # One shared iterator: each worker takes the next part number when it is free, so parts
        # are read in order and no more than one per worker is ever in memory.
        numbers: Iterator[int] = iter(range(1, count + 1))
        sent = 0

        async def worker() -> None:
            nonlocal sent
            for number in numbers:
                offset = (number - 1) * part_size
                length = min(part_size, size - offset)
                await self._put_part(urls[number], _FilePart(path, offset, length), content_type)
                sent += length
                if on_progress is not None:
                    on_progress(sent, size)

        tasks = [asyncio.create_task(worker()) for _ in range(min(max_parts_in_flight, count))]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _put_part(self, url: str, part: _FilePart, content_type: str) -> None:
        client = self._http.client
        # Presigned: no Authorization header. Scenario's own client sends the file's type. An
        # explicit length: presigned S3 PUTs refuse chunked transfer encoding.
        headers = {"Content-Type": content_type, "Content-Length": str(part.length)}
        try:
            await self._http.send(
                lambda: client.build_request("PUT", url, content=part, headers=headers),
                auth=False,
                idempotent=True,
            )
        except PermissionDeniedError as exc:
            raise _PartUrlsRefused(exc) from None

    async def _wait_imported(self, upload: Upload, timeout_seconds: float) -> Upload:
        deadline = self._http.clock() + timeout_seconds
        delay = 0.5
        while True:
            if upload.status is UploadStatus.FAILED:
                raise UploadFailedError(
                    f"Scenario refused the upload of {upload.file_name} (upload {upload.id}): "
                    f"{upload.error_message or 'no reason given'}",
                    upload_id=upload.id,
                    error_message=upload.error_message,
                )
            if upload.status in (UploadStatus.IMPORTED, UploadStatus.COMPLETE) and upload.entity_id:
                return upload
            remaining = deadline - self._http.clock()
            if remaining <= 0:
                raise UploadFailedError(
                    f"upload {upload.id} of {upload.file_name} is still {upload.status.value} after "
                    f"{timeout_seconds:g} s (a file stuck validating is often corrupt, or its content type "
                    "does not match)",
                    upload_id=upload.id,
                    error_message=upload.error_message,
                )
            await self._http.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 5.0)
            upload = await self.get(upload.id)
