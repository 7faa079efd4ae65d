"""Memory: peak RSS while a large file goes up and down, through the client and through the tasks.

Each measurement is a fresh process (``bench._worker``) that first moves a small clip the same way
(so one-time costs such as imports, the Prefect engine, boto3 clients are paid before), then resets
the kernel's peak-RSS mark (``/proc/self/clear_refs``) and moves the large file. Growth = peak RSS
during the transfer - RSS just before it. Flat means: the growth for 1 GiB is about the growth for
256 MiB; the target is under 64 MiB.

The large files are real H.264 MP4s that decode (``make_sample_clip`` at a constant 100 Mbit/s with
filler data, so they are large without being expensive to encode): the emulator probes every upload
for real, and an upload of a padded or fake file would be refused, as the API would. For downloads
the file is registered as an asset of the emulator through a bench-only route (``bench._emulator``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench._common import GiB, MiB, human_bytes, median, ratio, run_worker
from bench._services import Service, create_bucket, emulator, moto_s3

TARGET_GROWTH_BYTES = 64 * MiB
BITRATE = 100_000_000
VARIANTS = ("client upload", "client download", "task upload", "task download local", "task download s3")
_WORKER = {
    "client upload": "client_upload",
    "client download": "client_download",
    "task upload": "task_upload",
    "task download local": "task_download",
    "task download s3": "task_download",
}


def make_clip(path: Path, size_bytes: int) -> dict[str, Any]:
    """A real, decodable MP4 of about ``size_bytes``; returns its size and how long it took."""
    from prefect_scenario.video import make_sample_clip

    started = time.perf_counter()
    seconds = size_bytes * 8 / BITRATE
    probe = make_sample_clip(
        path, seconds=seconds, width=320, height=240, fps=24, bitrate=BITRATE, moving_objects=1, seed=3
    )
    return {"size": probe.size_bytes, "seconds_to_make": round(time.perf_counter() - started, 2)}


def run(
    *,
    prefect: Service,
    log_dir: Path,
    quick: bool = False,
    runs: int | None = None,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the memory benchmark; returns its section of the report."""
    # Growth is close to deterministic (each run's figure is kept in the JSON): 2 runs per cell keep
    # the benchmark within a few minutes, of which the 1 GiB S3 round trips through moto are most.
    runs = runs or (1 if quick else 2)
    sizes = [16 * MiB, 64 * MiB] if quick else [256 * MiB, 1 * GiB]
    workdir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    env = prefect.extra["env"]
    results: dict[str, Any] = {"sizes": {}, "files": {}}
    try:
        warmup = workdir / "warmup.mp4"
        make_clip(warmup, 2 * MiB)
        with emulator(log_dir=log_dir, job_seconds=1.0) as emu, moto_s3(log_dir=log_dir) as moto:
            bucket = f"bench-{uuid.uuid4().hex[:10]}"
            create_bucket(moto.url, bucket)
            for size in sizes:
                clip = workdir / f"clip-{size // MiB}MiB.mp4"
                facts = make_clip(clip, size)
                results["files"][human_bytes(size)] = facts
                rows: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
                for attempt in range(runs):
                    for variant in VARIANTS:
                        emu.reset()  # frees the emulator's copies of earlier uploads
                        args: dict[str, Any] = {
                            "base_url": emu.base_url,
                            "path": str(clip),
                            "warmup_path": str(warmup),
                            "scratch": str(workdir),
                        }
                        if "download" in variant:
                            args["warmup_asset_id"] = emu.register_asset(warmup)["id"]
                            args["asset_id"] = emu.register_asset(clip)["id"]
                        if variant == "task download s3":
                            args["s3"] = {"endpoint": moto.url, "bucket": bucket}
                        profile = None
                        if profile_dir is not None and attempt == 0 and size == sizes[-1]:
                            profile = str(profile_dir / f"memory-{variant.replace(' ', '-')}.txt")
                        row = run_worker(_WORKER[variant], args, env=env, log_dir=log_dir, profile=profile)
                        rows[variant].append(row)
                results["sizes"][human_bytes(size)] = {
                    "file_bytes": facts["size"],
                    "variants": {variant: _summary(rows[variant], facts["size"]) for variant in rows},
                }
                clip.unlink(missing_ok=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["targets"] = _targets(results["sizes"])
    results["description"] = (
        "peak RSS growth (peak during the transfer - RSS before it) of a fresh process moving one large file"
    )
    results["runs"] = runs
    results["target_growth_bytes"] = TARGET_GROWTH_BYTES
    return results


def _summary(rows: list[dict[str, Any]], file_bytes: int) -> dict[str, Any]:
    growth = median(row["growth_bytes"] for row in rows)
    wall = median(row["wall_seconds"] for row in rows)
    return {
        "growth_bytes_median": growth,
        "growth_bytes_max": max(row["growth_bytes"] for row in rows),
        "growth_to_file_size": ratio(growth, file_bytes),
        "peak_rss_bytes_median": median(row["peak_rss_bytes"] for row in rows),
        "rss_before_bytes_median": median(row["rss_before_bytes"] for row in rows),
        "wall_seconds_median": wall,
        "cpu_seconds_median": median(row["cpu_seconds"] for row in rows),
        "throughput_mib_s": round(file_bytes / MiB / wall, 1) if wall else None,
        "peak_reset": all(row["peak_reset"] for row in rows),
        "runs": [
            {k: row[k] for k in ("growth_bytes", "peak_rss_bytes", "wall_seconds", "cpu_seconds")}
            for row in rows
        ],
    }


def _targets(sizes: dict[str, Any]) -> dict[str, Any]:
    labels = list(sizes)
    verdicts: dict[str, Any] = {}
    for variant in VARIANTS:
        growths = [sizes[label]["variants"][variant]["growth_bytes_median"] for label in labels]
        worst = max(growths)
        small, large = growths[0], growths[-1]
        # Flat: the larger file (4x) adds less than 16 MiB over the smaller one.
        flat = large - small < 16 * MiB
        verdicts[variant] = {
            "growth_by_size": dict(zip(labels, growths, strict=True)),
            "under_64_mib": worst < TARGET_GROWTH_BYTES,
            "flat": flat,
            "met": worst < TARGET_GROWTH_BYTES and flat,
        }
    return verdicts
