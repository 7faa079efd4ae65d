"""What a generation flow run shows in the Prefect UI: a summary, a table of outputs, a picture.

The summary is a markdown artifact (model, inputs, job, estimated and billed creative units, the
duration of each phase, whether the job was reused) with the preview picture embedded as a
``data:image/jpeg;base64,...`` URI: the UI renders it inline, with no file server to reach. The
outputs get a table artifact. Both are keyed per flow (``video-to-layers-summary``, ...), so the
Artifacts page keeps one versioned history per flow; each version is also linked to its flow run.

Everything here reports; nothing here may fail a run whose outputs are stored. Callers guard it.
"""

from __future__ import annotations

import asyncio
import base64
import posixpath
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any, cast

from prefect.artifacts import acreate_image_artifact, acreate_markdown_artifact, acreate_table_artifact
from prefect.filesystems import LocalFileSystem, ReadableFileSystem, WritableFileSystem

from prefect_scenario.flows.result import PhaseTimings, ScenarioRunResult
from prefect_scenario.formatting import format_units, human_size
from prefect_scenario.manifest import StoredOutput
from prefect_scenario.models import ALEPH_MODEL_ID, VIDEO_LAYERS_MODEL_ID
from prefect_scenario.storage import discard, is_s3_bucket, materialize, new_temp_dir, store_file

MODEL_NAMES = {
    VIDEO_LAYERS_MODEL_ID: "Video to Layers",
    ALEPH_MODEL_ID: "Runway Aleph 2",
}
# The UI stores an artifact in its database and renders it in the browser: a picture of some tens of
# KB keeps both fast.
PREVIEW_MAX_BYTES = 60_000
PREVIEW_FILE_NAMES = {VIDEO_LAYERS_MODEL_ID: "contact-sheet.jpg", ALEPH_MODEL_ID: "first-frames.jpg"}
PRESIGNED_URL_LIFETIME = timedelta(days=7)
# Below this PSNR the layers do not add back up to the source: a separation worth a look.
COMPOSITE_PSNR_WARNING_DB = 30.0


def artifact_key(flow_slug: str, what: str) -> str:
    """An artifact key: lowercase letters, digits and dashes only (Prefect refuses anything else)."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{flow_slug}-{what}".lower()).strip("-")


def model_name(model_id: str) -> str:
    """The human name of a model (its id when unknown)."""
    return MODEL_NAMES.get(model_id, model_id)


def _cu(value: float | None) -> str:
    return format_units(value, unit=True, missing="—")


def _cell(value: Any) -> str:
    """A markdown table cell: pipes escaped, newlines flattened, long text shortened."""
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _records_table(
    name: str, wire_name: str, records: list[dict[str, Any]], sources: dict[str, str]
) -> list[str]:
    """``keyframes`` as a table: one row per item, its fields as columns, its source file first."""
    columns = list(dict.fromkeys(field for record in records for field in record))
    lines = [
        "",
        f"### {name}",
        "",
        "| # | source | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 2) + "|",
    ]
    for index, record in enumerate(records):
        source = sources.get(f"{wire_name}[{index}]", "")
        cells = [_cell(record.get(column, "")) for column in columns]
        lines.append(f"| {index} | {f'`{_cell(source)}`' if source else ''} | " + " | ".join(cells) + " |")
    return lines


def _timings_rows(timings: PhaseTimings) -> list[str]:
    phases = [
        ("validate", timings.validate_seconds),
        ("prepare", timings.prepare_seconds),
        ("upload", timings.upload_seconds),
        ("submit", timings.submit_seconds),
        ("wait", timings.wait_seconds),
        ("download", timings.download_seconds),
        ("stitch", timings.stitch_seconds),
        ("report", timings.report_seconds),
    ]
    # Phases only some runs have (fitting, splitting, stitching) are left out when they did not run.
    return [
        f"| {name} | {seconds:.1f} s |"
        for name, seconds in phases
        if seconds or name not in ("prepare", "stitch")
    ]


def psnr_verdict(psnr_db: float) -> str:
    """A few words on a layers-versus-source PSNR figure."""
    if psnr_db >= COMPOSITE_PSNR_WARNING_DB:
        return "the layers composite back to the source"
    return "the layers do not composite back to the source: check the separation"


def _chunk_rows(result: ScenarioRunResult) -> list[str]:
    lines = [
        "",
        "## Chunks",
        "",
        "| chunk | source time | job | status | estimated | billed | retried jobs |",
        "|---|---|---|---|---|---|---|",
    ]
    for chunk in result.chunks:
        job = f"`{chunk.job_id}`" if chunk.job_id else "—"
        retried = ", ".join(f"`{j}`" for j in chunk.failed_job_ids) or "—"
        status = chunk.status + (f": {_cell(chunk.error)}" if chunk.error else "")
        lines.append(
            f"| {chunk.index} | {chunk.start_seconds:.2f}–{chunk.end_seconds:.2f} s | {job} | {status} "
            f"| {_cu(chunk.estimated_creative_units)} | {_cu(chunk.creative_units_cost)} | {retried} |"
        )
    return lines


def summary_markdown(
    result: ScenarioRunResult, preview_jpeg: bytes | None = None, links: Mapping[str, str] | None = None
) -> str:
    """The markdown summary of a run (with the preview embedded when given, previews linked)."""
    name = model_name(result.model_id)
    if result.is_dry_run:
        title = f"# {name}: estimate only (dry run)"
        origin = "no job was submitted; nothing was spent"
    elif result.chunks:
        state = "stitched" if result.status == "success" else result.status
        title = f"# {name}: {len(result.chunks)} chunk jobs, {state}"
        origin = "one job per chunk of a clip over the model's limits, submitted by this flow run"
        if result.reused:
            origin += " (reused from an earlier flow run: nothing was spent by this run)"
    elif result.reused:
        title = f"# {name}: job `{result.job_id}` (reused)"
        origin = "reused from an earlier flow run with the same inputs; nothing was spent by this run"
    else:
        title = f"# {name}: job `{result.job_id}`"
        origin = "submitted by this flow run"
    lines = [
        title,
        "",
        "| run | |",
        "|---|---|",
        f"| Model | {name} (`{result.model_id}`) |",
        f"| Status | {result.status} |",
        f"| Job | {f'`{result.job_id}`' if result.job_id else '—'} |",
        f"| Job origin | {origin} |",
        f"| Estimated | {_cu(result.estimated_creative_units)} |",
        f"| Billed | {_cu(result.creative_units_cost)} |",
        f"| Outputs | {len(result.outputs)} in `{_cell(result.destination) or '.'}`"
        f"{f' ({result.storage})' if result.storage else ''} |",
        f"| Duration | {result.timings.total_seconds:.1f} s |",
    ]
    if result.fitted_to_limits:
        lines.append("| Clip | re-encoded to fit the model's limits before upload (see notes) |")
    if result.composite_psnr_db is not None:
        psnr = result.composite_psnr_db
        lines.append(f"| Layers vs source | {psnr:.1f} dB PSNR: {psnr_verdict(psnr)} |")
    if result.previews:
        previews = ", ".join(
            linked(p.location, links or {}, PurePosixPath(p.path).name) for p in result.previews
        )
        lines.append(f"| Previews | {previews} |")
    lines += [
        "",
        "## Inputs",
        "",
        "| input | value |",
        "|---|---|",
    ]
    tables: list[str] = []
    for key, value in result.inputs.items():
        name = parameter_name(key)
        if _is_records(value):
            # Keyframes and prompt images read as a small table of their own, not as a Python repr.
            lines.append(f"| {_cell(name)} | {len(value)}, in the table {name} below |")
            tables += _records_table(name, key, value, result.sources)
        else:
            lines.append(f"| {_cell(name)} | {_cell(value)} |")
    for key, value in result.sources.items():
        if "[" not in key:  # a list item's source is a column of its own table
            lines.append(f"| {_cell(key)} (source) | `{_cell(value)}` |")
    lines += tables
    if result.chunks:
        lines += _chunk_rows(result)
    if result.notes:
        lines += ["", "## Notes", "", *(f"- {_cell(note)}" for note in result.notes)]
    lines += ["", "## Durations", "", "| phase | time |", "|---|---|", *_timings_rows(result.timings)]
    if preview_jpeg:
        caption = "Layers over a checkerboard" if result.model_id == VIDEO_LAYERS_MODEL_ID else "First frames"
        encoded = base64.b64encode(preview_jpeg).decode("ascii")
        lines += ["", "## Preview", "", f"![{caption}](data:image/jpeg;base64,{encoded})"]
    return "\n".join(lines) + "\n"


# The request's wire names that are not the flow parameter's name turned to snake case.
_PARAMETER_NAMES = {"promptImage": "prompt_images"}


def parameter_name(wire_name: str) -> str:
    """The flow parameter a request field came from: ``maxLayers`` is ``max_layers`` in the Run form."""
    if wire_name in _PARAMETER_NAMES:
        return _PARAMETER_NAMES[wire_name]
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", wire_name).lower()


def outputs_table(
    outputs: Sequence[StoredOutput], model_id: str | None = None, links: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """One row per stored output, for the table artifact: where it is first, then what it is.

    Where the storage has URLs (``links``: presigned for S3), the location is a link the UI opens.
    The sha256 is shortened here (the manifest and the flow's result keep it whole); Video to
    Layers' outputs are named as a user calls them (background, layer 1, …).
    """
    return [
        {
            "stored_at": _stored_at(output, links or {}),
            "output": output_label(output, model_id),
            "type": output.mime_type,
            "size": human_size(output.size),
            "sha256": f"{output.sha256[:12]}…",
            "asset_id": output.asset_id,
        }
        for output in outputs
    ]


def _stored_at(output: StoredOutput, links: Mapping[str, str]) -> str:
    """A link named by the file (the job and bucket are in the table's description), else the location."""
    if output.location not in links:
        return output.location
    return linked(output.location, links, PurePosixPath(output.path).name)


def output_label(output: StoredOutput, model_id: str | None) -> str:
    """``background`` / ``layer N`` for Video to Layers' outputs, ``output N`` otherwise."""
    if output.output_index is None:
        return "output"
    if model_id == VIDEO_LAYERS_MODEL_ID:
        from prefect_scenario.video import layer_name  # PyAV: loaded only once there are outputs

        return layer_name(output.output_index)
    return f"output {output.output_index}"


async def publish_artifacts(
    flow_slug: str, result: ScenarioRunResult, preview_jpeg: bytes | None, links: Mapping[str, str]
) -> None:
    """Create the summary, the outputs table and (when the preview has a URL) the image artifact of a run.

    ``links`` are the URLs of stored files by location (:func:`download_links`).
    """
    preview_url = links.get(result.preview) if result.preview else None
    await acreate_markdown_artifact(
        summary_markdown(result, preview_jpeg, links),
        key=artifact_key(flow_slug, "summary"),
        description=f"{model_name(result.model_id)}: what ran, what it cost, how long each phase took",
    )
    if result.outputs:
        jobs = f"Scenario job {result.job_id}" if result.job_id else f"{len(result.chunks)} chunk jobs"
        await acreate_table_artifact(
            outputs_table(result.all_outputs, result.model_id, links),
            key=artifact_key(flow_slug, "outputs"),
            description=f"Outputs of {jobs}, checked for size and sha256",
        )
    if preview_url:
        await acreate_image_artifact(
            preview_url,
            key=artifact_key(flow_slug, "preview"),
            description=f"Preview of Scenario job {result.job_id} (a presigned URL; it expires)",
        )


def _storage_key(destination: str, relative: str) -> str:
    return posixpath.join(destination, relative) if destination.strip("/") else relative


async def local_copies(
    outputs: Sequence[StoredOutput], destination: str, storage: WritableFileSystem | None
) -> list[Path]:
    """Local files of the video outputs: in place on the local disk, fetched from other storage."""
    videos = [o for o in sorted(outputs, key=lambda o: o.output_index) if o.is_video]
    if storage is None or isinstance(storage, LocalFileSystem):
        return [Path(o.location) for o in videos]
    # Every WritableFileSystem can read back what it wrote; Prefect's classes just do not say so.
    readable = cast(ReadableFileSystem, storage)
    return [await materialize(_storage_key(destination, o.path), readable) for o in videos]


def _render_preview(model_id: str, videos: list[Path], source: Path | None, out: Path) -> Path:
    from prefect_scenario import video as media

    if model_id == VIDEO_LAYERS_MODEL_ID:
        return media.contact_sheet(videos, out, max_bytes=PREVIEW_MAX_BYTES)
    # Before and after, when the source clip is local: an edit reads best next to what it changed.
    return media.first_frames_sheet([source, *videos] if source is not None else videos, out)


async def make_preview(
    result: ScenarioRunResult,
    *,
    source: Path | None,
    storage: WritableFileSystem | None,
) -> tuple[str, bytes] | None:
    """Render the run's preview picture and store it beside the outputs.

    Returns:
        The preview's location and its JPEG bytes, or None when there is no video output.
    """
    copies = await local_copies(result.outputs, result.destination, storage)
    if not copies or result.job_id is None:
        return None
    name = PREVIEW_FILE_NAMES.get(result.model_id, "preview.jpg")
    relative = f"{result.job_id}/{name}"
    scratch = new_temp_dir()
    try:
        picture = await asyncio.to_thread(_render_preview, result.model_id, copies, source, scratch / name)
        jpeg = await asyncio.to_thread(picture.read_bytes)
        if len(jpeg) > PREVIEW_MAX_BYTES:
            # Too big to embed; the file is still stored beside the outputs.
            jpeg = b""
        location = await store_file(picture, relative, result.destination, storage, content_type="image/jpeg")
    finally:
        if storage is not None and not isinstance(storage, LocalFileSystem):
            for copy in copies:
                discard(copy)
        shutil.rmtree(scratch, ignore_errors=True)
    return location, jpeg


async def download_links(storage: WritableFileSystem | None, locations: Iterable[str]) -> dict[str, str]:
    """Presigned GET URLs of stored files, by location, where the storage has URLs (an ``S3Bucket``).

    Other storage gives none: a local path is not a link a browser on the Prefect UI may follow.
    Signing is computed locally (no request); each URL expires after ``PRESIGNED_URL_LIFETIME``.
    """
    wanted = [location for location in locations if location.startswith("s3://")]
    if storage is None or not is_s3_bucket(storage) or not wanted:
        return {}
    client = storage.credentials.get_s3_client()  # type: ignore[attr-defined]

    def sign(location: str) -> str:
        bucket, _, key = location.removeprefix("s3://").partition("/")
        return str(
            client.generate_presigned_url(
                "get_object",
                Params={"Bucket": bucket, "Key": key},
                ExpiresIn=int(PRESIGNED_URL_LIFETIME.total_seconds()),
            )
        )

    return await asyncio.to_thread(lambda: {location: sign(location) for location in wanted})


def linked(location: str, links: Mapping[str, str], text: str | None = None) -> str:
    """A stored file as a markdown link when its location has a URL, as code otherwise (a table cell)."""
    shown = _cell(location if text is None else text)
    url = links.get(location)
    return f"[{shown}]({url})" if url else f"`{shown}`"
