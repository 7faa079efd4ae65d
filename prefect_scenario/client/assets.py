"""``/assets``: read assets, create small images, and download content through signed URLs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import mimetypes
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from prefect_scenario.errors import DownloadError, InputValidationError
from prefect_scenario.models import AssetEnvelope, CreateImageAssetRequest, ScenarioAsset, sniff_media_type
from prefect_scenario.workfiles import part_path_beside, scratch_dir

from ._http import HttpCore, parse
from .policies import RetryPolicy
from .uploads import MiB, UploadsAPI, guess_content_type

logger = logging.getLogger("prefect_scenario.client")

# Scenario's own client caps inline images at 3.5 MB: the gateway takes ~10 MB bodies and base64
# inflates by 4/3. Larger images go through a multipart upload.
MAX_INLINE_IMAGE_BYTES = 3_500_000
# A download that keeps making progress may resume this often (a CDN dropping long transfers);
# failures without progress are bounded by the retry policy's max_attempts.
_MAX_RESUMES = 50

_EXTENSIONS = {
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
}
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class DownloadedFile:
    """An asset stored on local disk, checked against the size the API announced.

    Attributes:
        asset_id: the asset.
        path: where it was written.
        size: bytes written (equal to ``asset.properties.size``).
        sha256: hex digest of the bytes written.
        mime_type: the asset's MIME type.
        output_index: the asset's index among its job's outputs, when known.
    """

    asset_id: str
    path: Path
    size: int
    sha256: str
    mime_type: str
    output_index: int | None


def extension_for(mime_type: str) -> str:
    """A file extension for a MIME type (``.mp4``), or "" when unknown."""
    return _EXTENSIONS.get(mime_type) or mimetypes.guess_extension(mime_type) or ""


class AssetsAPI:
    """Scenario assets: ``client.assets``."""

    def __init__(self, http: HttpCore, uploads: UploadsAPI) -> None:
        self._http = http
        self._uploads = uploads

    async def get(self, asset_id: str) -> ScenarioAsset:
        """The asset, with a freshly signed ``url``."""
        response = await self._http.send_api("GET", "assets", asset_id)
        return parse(AssetEnvelope, response).asset

    async def create_image(
        self, source: Path | bytes, *, name: str | None = None, mime_type: str | None = None
    ) -> ScenarioAsset:
        """Creates an image asset (a keyframe or reference image).

        Images up to 3.5 MB are sent inline as a data URL (``POST /assets``); larger ones go
        through a multipart upload of kind ``image``.

        Args:
            source: an image file, or its bytes.
            name: the asset's name; the file name by default.
            mime_type: the image type; read from the bytes when omitted.

        Raises:
            InputValidationError: not an image this client can recognise.
        """
        if isinstance(source, bytes | bytearray | memoryview):
            raw = bytes(source)
            data: bytes | None = raw
            path: Path | None = None
            size, head = len(raw), raw[:16]
        else:
            path, data = Path(source), None
            size = path.stat().st_size
            head = await asyncio.to_thread(_read_head, path)
        mime = mime_type or sniff_media_type(head) or (guess_content_type(path) if path else None)
        if mime is None or not mime.startswith("image/"):
            raise InputValidationError(
                f"{name or (path.name if path else 'the bytes')} is not a PNG, JPEG, WebP or GIF image: "
                "pass mime_type if it is another image type",
                field="source",
            )
        name = name or (path.name if path else f"image{extension_for(mime)}")
        if size > MAX_INLINE_IMAGE_BYTES:
            if path is not None:
                return await self._uploads.upload_file(path, kind="image", content_type=mime)
            assert data is not None
            folder = await asyncio.to_thread(scratch_dir)
            try:
                staged = folder / Path(name).name
                await asyncio.to_thread(staged.write_bytes, data)
                return await self._uploads.upload_file(staged, kind="image", content_type=mime)
            finally:
                await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
        if data is None:
            assert path is not None
            data = await asyncio.to_thread(path.read_bytes)
        encoded = base64.b64encode(data).decode("ascii")
        body = CreateImageAssetRequest(name=name, image=f"data:{mime};base64,{encoded}")
        response = await self._http.send_api("POST", "assets", json=body.to_body())
        return parse(AssetEnvelope, response).asset

    async def stream(self, asset_id: str | ScenarioAsset, *, chunk_size: int = MiB) -> AsyncIterator[bytes]:
        """The asset's content, in chunks of ``chunk_size`` bytes.

        When the signed URL is refused (expired) or the body drops or ends short, the asset is
        fetched again for a fresh URL and the transfer resumes with a Range request from the byte
        it reached: a failed download never costs a new generation. The total must equal
        ``properties.size``.

        Args:
            asset_id: the asset's id, or the asset itself as a recent :meth:`get` returned it
                (its URL is tried first, saving a request; an expired one is renewed).
            chunk_size: bytes per chunk (the last may be shorter, and so may the chunk before
                a resumed transfer).

        Raises:
            DownloadError: the content could not be read whole within the attempts allowed.
        """
        asset = asset_id if isinstance(asset_id, ScenarioAsset) else await self.get(asset_id)
        async for chunk in self._content(asset, chunk_size):
            yield chunk

    async def download(
        self, asset_id: str | ScenarioAsset, destination: Path, *, chunk_size: int = MiB
    ) -> DownloadedFile:
        """Downloads the asset to ``destination``, atomically, computing its sha256.

        The bytes go to a temporary file beside the destination, renamed into place only when
        whole: a reader never sees a partial file. Partial files of the same destination left by
        processes that are gone (killed mid-download) are removed first (see
        :func:`prefect_scenario.workfiles.part_path_beside`). An existing directory as
        ``destination`` receives ``<asset_id><extension>``.

        Args:
            asset_id: the asset's id, or the asset itself (see :meth:`stream`).
            destination: the file to write, or an existing directory.
            chunk_size: bytes read at a time.

        Raises:
            DownloadError: the content could not be read whole (see :meth:`stream`).
        """
        asset = asset_id if isinstance(asset_id, ScenarioAsset) else await self.get(asset_id)
        asset_id = asset.id
        destination = Path(destination)
        if destination.is_dir():
            destination = destination / f"{asset_id}{extension_for(asset.mime_type)}"
        temporary = await asyncio.to_thread(part_path_beside, destination)
        # O_EXCL and 0600, as the mkstemp used before: the name is ours alone, outputs keep their mode.
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(handle, "wb") as output:
                async for chunk in self._content(asset, chunk_size):
                    digest.update(chunk)
                    size += len(chunk)
                    await asyncio.to_thread(output.write, chunk)
                await asyncio.to_thread(os.fsync, output.fileno())
            os.replace(temporary, destination)
        except BaseException:
            # Never leave a partial file behind, whatever interrupted the transfer.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        index = asset.output_index if asset.output_index is not None else asset.metadata.output_index
        return DownloadedFile(
            asset_id=asset_id,
            path=destination,
            size=size,
            sha256=digest.hexdigest(),
            mime_type=asset.mime_type,
            output_index=index,
        )

    async def _content(self, asset: ScenarioAsset, chunk_size: int) -> AsyncIterator[bytes]:
        if chunk_size < 1:
            raise InputValidationError("chunk_size must be positive", field="chunk_size")
        if asset.status == "error":
            raise DownloadError(
                f"asset {asset.id} is in error on the server: nothing to download", asset_id=asset.id
            )
        policy: RetryPolicy = self._http.retry
        expected = asset.properties.size
        received = 0
        stalls = 0  # consecutive attempts that brought no byte
        attempts = 0
        while True:
            attempts += 1
            before = received
            problem = ""
            refused = False
            # Identity encoding: a Range offset must count bytes of the file itself.
            headers = {"Accept-Encoding": "identity"}
            if received:
                headers["Range"] = f"bytes={received}-"
            # Bytes arrived but not yet yielded: re-chunked here rather than by httpx, so that
            # what arrived before a drop is kept and the resume starts after it.
            pending = bytearray()
            try:
                # The signed URL is the credential: no Authorization header, query left intact.
                async with self._http.client.stream("GET", asset.url, headers=headers) as response:
                    skip = 0
                    status = response.status_code
                    if status == 206:
                        match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
                        if match is None or int(match.group(1)) != received:
                            problem = f"a Range answer starting elsewhere than byte {received}"
                    elif status == 200:
                        # The server ignored the Range header: drop what we already have.
                        skip = received
                    elif status in (401, 403, 410):
                        refused = True
                        problem = f"the signed URL was refused ({status}; expired?)"
                    else:
                        problem = f"the file server answered {status}"
                    if not problem:
                        async for piece in response.aiter_bytes():
                            if skip:
                                cut = min(skip, len(piece))
                                piece, skip = piece[cut:], skip - cut
                            if received + len(pending) + len(piece) > expected:
                                raise DownloadError(
                                    f"asset {asset.id} has more than the {expected} bytes its properties "
                                    "announce: not stored",
                                    asset_id=asset.id,
                                )
                            pending += piece
                            while len(pending) >= chunk_size:
                                chunk = bytes(pending[:chunk_size])
                                del pending[:chunk_size]
                                received += len(chunk)
                                yield chunk
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if pending:
                received += len(pending)
                yield bytes(pending)
            if received == expected:
                return
            problem = problem or f"the body ended at byte {received} of {expected}"
            stalls = 0 if received > before else stalls + 1
            if stalls >= policy.max_attempts or attempts > _MAX_RESUMES:
                raise DownloadError(
                    f"could not download asset {asset.id}: {problem} ({received} of {expected} bytes "
                    f"after {attempts} attempts)",
                    asset_id=asset.id,
                )
            logger.info(
                "download of asset %s interrupted at byte %d: %s; resuming", asset.id, received, problem
            )
            if stalls and not refused:
                await self._http.sleep(policy.backoff(stalls - 1, self._http.rng))
            # A fresh signed URL each time: the old one may be the reason it failed.
            fresh = await self.get(asset.id)
            if fresh.properties.size != expected:
                raise DownloadError(
                    f"asset {asset.id} changed size during the download ({expected} -> "
                    f"{fresh.properties.size} bytes)",
                    asset_id=asset.id,
                )
            asset = fresh


def _read_head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(16)
