"""storage.py: local and block paths, atomic stores, temporary copies, streamed digests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from prefect.filesystems import LocalFileSystem

from prefect_scenario.storage import (
    discard,
    extension_for,
    materialize,
    materialized,
    sha256_file,
    store_file,
    stored_object_info,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_extension_for_mime_types() -> None:
    assert extension_for("video/mp4") == "mp4"
    assert extension_for("video/webm") == "webm"
    assert extension_for("video/quicktime") == "mov"
    assert extension_for("image/png; charset=binary") == "png"
    assert extension_for(None) == "bin"
    assert extension_for("application/x-made-up") == "bin"


async def test_store_file_locally_is_atomic_and_relative(tmp_path: Path) -> None:
    source = tmp_path / "incoming.bin"
    source.write_bytes(b"payload")
    location = await store_file(source, "job_1/00-asset_a.bin", tmp_path / "out")
    target = tmp_path / "out" / "job_1" / "00-asset_a.bin"
    assert location == str(target.resolve())
    assert target.read_bytes() == b"payload"
    assert not source.exists()  # moved, not copied
    leftovers = [p.name for p in target.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    with pytest.raises(ValueError, match=r"\.\."):
        await store_file(target, "../escape.bin", tmp_path / "out")
    info = await stored_object_info("job_1/00-asset_a.bin", tmp_path / "out")
    assert info is not None
    assert info.size == 7
    assert info.sha256 == hashlib.sha256(b"payload").hexdigest()
    assert await stored_object_info("job_1/missing.bin", tmp_path / "out") is None


async def test_materialize_local_and_local_block(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"clip")
    assert await materialize(clip) == clip.resolve()
    block = LocalFileSystem(basepath=str(tmp_path))
    assert await materialize("clip.mp4", block) == clip.resolve()
    with pytest.raises(FileNotFoundError):
        await materialize(tmp_path / "nope.mp4")
    with pytest.raises(FileNotFoundError):
        await materialize("nope.mp4", block)


async def test_materialize_from_a_read_path_only_block(tmp_path: Path) -> None:
    (tmp_path / "c.mp4").write_bytes(b"bytes")
    holder = {"c.mp4": b"bytes"}

    class Minimal:
        """A storage that only offers read_path (like most third-party filesystem blocks)."""

        def get_block_type_slug(self) -> str:
            return "minimal"

        async def read_path(self, path: str) -> bytes:
            return holder[path]

    async with materialized("c.mp4", Minimal()) as local:  # type: ignore[arg-type]
        assert local.read_bytes() == b"bytes"
        assert local.name == "c.mp4"
        kept = local
    assert not kept.exists()
    discard(tmp_path / "c.mp4")  # never removes a file that is not a temporary copy
    assert (tmp_path / "c.mp4").exists()


def test_sha256_file_streams(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a" * (3 * 1024 * 1024 + 5))
    digest = sha256_file(path, chunk_size=1024)
    assert digest.size == 3 * 1024 * 1024 + 5
    assert digest.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
