"""Files on disk: copies, sizes, digests, and a run's outputs and manifest checked against them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

MANIFEST_KEYS = ["model_id", "job_id", "status", "inputs", "creative_units_cost", "outputs"]
OUTPUT_KEYS = ["asset_id", "path", "mime_type", "size", "sha256", "output_index"]


def copy_file(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    return target


def size_of(path: str | Path) -> int:
    return Path(path).stat().st_size


def sha256_of(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_local_outputs(result: Any, destination: Path) -> None:
    """Every output of a result is a file under ``destination`` whose size and sha256 match."""
    assert result.outputs, "no outputs"
    for output in result.outputs:
        file = destination / output.path
        assert file.is_file(), file
        assert file.stat().st_size == output.size
        assert sha256_of(file) == output.sha256
        assert Path(output.location) == file.resolve()


def check_manifest(manifest: dict[str, Any], result: Any, base: Path) -> None:
    """A manifest has exactly the agreed keys first, and describes files that are really there."""
    assert list(manifest)[: len(MANIFEST_KEYS)] == MANIFEST_KEYS
    assert manifest["job_id"] == result.job_id
    assert manifest["model_id"] == result.model_id
    assert manifest["status"] == "success"
    assert len(manifest["outputs"]) == len(result.outputs) > 0
    for entry in manifest["outputs"]:
        assert list(entry) == OUTPUT_KEYS
        file = base / entry["path"]
        assert not Path(entry["path"]).is_absolute()
        assert file.stat().st_size == entry["size"]
        assert sha256_of(file) == entry["sha256"]
