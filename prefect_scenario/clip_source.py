"""Where a clip lives, decided once: a Scenario asset id, a local path, or a path inside a storage block.

A flow turns what it was given into a :class:`ClipSource` at its door and hands that down; nothing
below re-classifies the string. A clip inside a block is fetched once (:meth:`ClipSource.local_copy`)
and that one local copy serves the probe, the content hash, the upload and the layers' PSNR review.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from prefect.filesystems import LocalFileSystem, ReadableFileSystem, WritableFileSystem

from prefect_scenario.errors import MediaError
from prefect_scenario.models import is_asset_id
from prefect_scenario.storage import discard, materialize

# Prefect's S3Bucket (prefect-aws) is a WritableFileSystem that is not a ReadableFileSystem subclass,
# though it reads: a parameter typed ReadableFileSystem alone would refuse the most common block.
SourceStorage = ReadableFileSystem | WritableFileSystem

ClipKind = Literal["asset", "local", "block"]


@dataclass(frozen=True)
class ClipSource:
    """A clip as a flow was given it, classified once.

    Attributes:
        given: the string the user gave (an asset id, a path, or a path inside ``storage``).
        storage: the block holding the clip (None: the local disk, or an asset id).
    """

    given: str
    storage: SourceStorage | None = None

    @classmethod
    def of(cls, video: str | Path, storage: SourceStorage | None = None) -> ClipSource:
        """Classify ``video``: an asset id never lives in a block, whatever ``storage`` says."""
        given = str(video)
        return cls(given=given, storage=None if is_asset_id(given) else storage)

    @property
    def kind(self) -> ClipKind:
        """``asset`` (already on Scenario), ``local`` (a file here) or ``block`` (in a storage block)."""
        if is_asset_id(self.given):
            return "asset"
        return "local" if self.storage is None else "block"

    @property
    def asset_id(self) -> str | None:
        """The asset id, when the clip is one."""
        return self.given if self.kind == "asset" else None

    @property
    def name(self) -> str:
        """How the clip's origin is recorded: the path (with the block type), or the asset id."""
        if self.storage is None:
            return self.given
        return f"{self.storage.get_block_type_slug()}:{self.given}"

    @property
    def file_name(self) -> str:
        """The clip's file name (the asset id for an asset)."""
        return Path(self.given).name or self.given

    @property
    def readable(self) -> ReadableFileSystem | None:
        """The block as the reading interface (every storage block accepted here reads)."""
        return cast(ReadableFileSystem | None, self.storage)

    @property
    def local_path(self) -> Path | None:
        """The clip as a local file without fetching anything (a local path, or a LocalFileSystem's)."""
        if self.kind == "local":
            return Path(self.given).expanduser()
        if isinstance(self.storage, LocalFileSystem):
            return Path(self.storage._resolve_path(self.given))
        return None

    async def fetch(self) -> Path | None:
        """The clip as a local file: in place when it is one, else fetched once to a temporary copy.

        Returns:
            A local path (:func:`~prefect_scenario.storage.discard` removes a temporary copy), or
            None for an asset id (nothing local to read).

        Raises:
            MediaError: the clip is not in its storage block.
        """
        if self.kind == "asset":
            return None
        if self.kind == "local":
            # Not checked here: the flow's validation says what is wrong with a local path.
            return self.local_path
        try:
            return await materialize(self.given, self.readable)
        except FileNotFoundError:
            assert self.storage is not None
            raise MediaError(
                f"video {self.given!r} is not in the {self.storage.get_block_type_slug()} block: check "
                "the path inside it",
                field="video",
            ) from None

    @contextlib.asynccontextmanager
    async def local_copy(self) -> AsyncIterator[Path | None]:
        """:meth:`fetch` for the length of a block; a temporary copy is removed on exit."""
        local = await self.fetch()
        try:
            yield local
        finally:
            if local is not None:
                discard(local)


__all__ = ["ClipKind", "ClipSource", "SourceStorage"]
