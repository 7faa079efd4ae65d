"""``prefect-scenario jobs``: the recent Scenario jobs, and the one a command would have made.

For a person settling an uncertain submit: what jobs exist, what they were asked, what they cost,
and what the submission ledger knows of them (``undelivered``: bought by a run that did not finish;
the next run with the same inputs adopts it instead of paying). ``--input-of`` takes a ``layers``
or ``edit`` command line and keeps the jobs whose inputs are the ones that command sends.

Reads only: it never submits, never changes a job, and needs no Prefect server unless the ledger
lives in a storage block.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from cyclopts import App, Parameter

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

JOBS_HELP = "List recent Scenario jobs: inputs, status, cost; --input-of finds the job a command made."


def register(app: App) -> None:
    """Add ``jobs`` to ``app``, loaded only when it runs."""
    app.command(f"{__name__}:jobs", name="jobs", help=JOBS_HELP)


def parse_since(text: str) -> timedelta:
    """``30m``, ``6h``, ``2d`` as a duration."""
    units = {"m": 60, "h": 3600, "d": 86400}
    try:
        amount, unit = float(text[:-1]), text[-1]
        return timedelta(seconds=amount * units[unit])
    except (KeyError, ValueError, IndexError):
        raise ValueError(f"--since {text!r}: write a number and m, h or d, e.g. 30m, 6h or 2d") from None


def expected_inputs(command_line: str) -> tuple[str, dict[str, Any], Path | None]:
    """The model, the inputs a ``layers``/``edit`` command sends (but the clip's asset), its clip.

    Raises:
        ValueError: the command line is not one of those, or misses a required part.
    """
    from prefect_scenario.models import ALEPH_MODEL_ID, LAYERS_DEFAULT_LAYERS, VIDEO_LAYERS_MODEL_ID

    words = shlex.split(command_line)
    if words and words[0] == "prefect-scenario":
        words = words[1:]
    if not words or words[0] not in ("layers", "edit"):
        raise ValueError(
            "--input-of takes a layers or edit command line, e.g. "
            "--input-of \"layers clip.mp4 --instruction 'each dancer apart' --max-layers 4\""
        )
    command, rest = words[0], words[1:]
    options: dict[str, str] = {}
    positional: list[str] = []
    index = 0
    while index < len(rest):
        word = rest[index]
        if word.startswith("-") and "=" in word:
            name, value = word.split("=", 1)
            options[name] = value
        elif word.startswith("-") and index + 1 < len(rest) and not rest[index + 1].startswith("--"):
            options[word] = rest[index + 1]
            index += 1
        elif word.startswith("-"):
            options[word] = ""
        else:
            positional.append(word)
        index += 1
    if not positional:
        raise ValueError(f"--input-of: the {command} command names no video")
    video = positional[0]
    clip = None if video.startswith("asset_") else Path(video).expanduser()
    inputs: dict[str, Any] = {}
    if video.startswith("asset_"):
        inputs["video"] = video
    if command == "layers":
        instruction = options.get("--instruction", options.get("-i"))
        if not instruction:
            raise ValueError("--input-of: the layers command needs its --instruction")
        inputs["separationInstruction"] = instruction
        inputs["maxLayers"] = int(options.get("--max-layers", LAYERS_DEFAULT_LAYERS))
        return VIDEO_LAYERS_MODEL_ID, inputs, clip
    prompt = options.get("--prompt")
    if not prompt:
        raise ValueError("--input-of: the edit command needs its --prompt")
    inputs["prompt"] = prompt
    if "--seed" in options:
        inputs["seed"] = int(options["--seed"])
    return ALEPH_MODEL_ID, inputs, clip


async def _cached_upload(clip: Path, scope: str) -> str | None:
    """The asset id an earlier run uploaded this clip as (from the upload cache), if any."""
    from prefect.results import ResultStore, aget_default_result_storage
    from prefect.utilities.hashing import hash_objects

    from prefect_scenario.caching import UPLOAD_NAMESPACE, content_digest

    digest = content_digest(clip)
    key = hash_objects(
        {
            "namespace": UPLOAD_NAMESPACE,
            "kind": "video",
            "sha256": digest.sha256,
            "size": digest.size,
            "scope": scope,
        },
        raise_on_failure=True,
    )
    assert key is not None
    store = ResultStore(result_storage=await aget_default_result_storage())
    try:
        if not await store.aexists(key):
            return None
        record = await store.aread(key)
    except Exception:
        return None
    return record.result if isinstance(record.result, str) else None


def _matches(recorded: dict[str, Any] | None, expected: dict[str, Any]) -> bool:
    return recorded is not None and all(recorded.get(name) == value for name, value in expected.items())


def _summary(inputs: dict[str, Any] | None) -> str:
    if not inputs:
        return ""
    parts = []
    for name in ("video", "separationInstruction", "maxLayers", "prompt", "seed"):
        if name in inputs:
            value = str(inputs[name])
            parts.append(f"{name}={value[:40] + '…' if len(value) > 40 else value}")
    extra = sorted(set(inputs) - {"video", "separationInstruction", "maxLayers", "prompt", "seed", "modelId"})
    if extra:
        parts.append("+" + ",".join(extra))
    return " ".join(parts)


async def _collect(
    since: timedelta, model: str | None, input_of: str | None, credentials: str | None
) -> tuple[list[dict[str, Any]], list[str]]:
    from prefect_scenario.blocks import resolve_credentials
    from prefect_scenario.ledger import LocalLedgerStore, current_ledger

    notes: list[str] = []
    creds = await resolve_credentials(credentials)
    expected: dict[str, Any] = {}
    if input_of is not None:
        model, expected, clip = expected_inputs(input_of)
        if clip is not None:
            asset = await _cached_upload(clip, creds.cache_scope())
            if asset is None:
                notes.append(
                    f"{clip} was not uploaded by an earlier run here: jobs are matched on the other inputs"
                )
            else:
                expected["video"] = asset
                notes.append(f"{clip} was uploaded as {asset}")
    ledger = await current_ledger()
    # A block-store ledger (S3) cannot be listed through the block interface: jobs only, then.
    entries = ledger.entries() if isinstance(ledger, LocalLedgerStore) else []
    known = {e.job_id: e for e in entries if e.job_id}
    for entry in entries:
        if entry.state == "submitting" and (model is None or entry.model_id == model):
            notes.append(
                f"unanswered submit: {entry.owner.describe()} sent {entry.model_id} at "
                f"{entry.sent_at.isoformat(timespec='seconds')} and recorded no job; the next run with "
                f"these inputs looks for it before paying ({_summary(entry.inputs)})"
            )
    rows: list[dict[str, Any]] = []
    started = datetime.now(UTC) - since
    async with creds.get_client() as client:
        async for job in client.jobs.list(type="custom", updated_after=started, page_size=100):
            if model is not None and job.model_id != model:
                continue
            if expected and not _matches(job.metadata.input, expected):
                continue
            owned = known.get(job.job_id)
            rows.append(
                {
                    "job_id": job.job_id,
                    "model_id": job.model_id,
                    "status": job.status.value,
                    "created_at": job.created_at,
                    "creative_units": job.billing.cu_cost if job.billing else None,
                    "inputs": job.metadata.input,
                    "ledger": None if owned is None else ("undelivered" if owned.binds else owned.state),
                }
            )
    rows.sort(key=lambda row: str(row["created_at"]), reverse=True)
    return rows, notes


def jobs(
    *,
    since: str = "24h",
    model: str | None = None,
    input_of: str | None = None,
    credentials: str | None = None,
    json_output: Annotated[bool, Parameter(name="--json", negative="")] = False,
) -> int:
    """List recent Scenario custom jobs: inputs, status, cost, and what the ledger knows of them.

    Parameters
    ----------
    since
        How far back: 30m, 6h, 2d (jobs updated since then).
    model
        Only this model's jobs (model_runway-aleph-2, model_scenario-video-layers-extractor).
    input_of
        A layers or edit command line, quoted: only the jobs with the inputs it sends.
    credentials
        Name of a saved Scenario Credentials block (default: the SCENARIO_SDK_* variables).
    json_output
        Print JSON instead of a table.
    """
    from prefect_scenario.cli_generate import error_line, exit_code_for
    from prefect_scenario.errors import ScenarioError

    try:
        window = parse_since(since)
        rows, notes = asyncio.run(_collect(window, model, input_of, credentials))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ScenarioError as exc:
        print(error_line(exc), file=sys.stderr)
        return exit_code_for(exc)
    if json_output:
        print(json.dumps({"jobs": rows, "notes": notes}, indent=2, default=str))
        return EXIT_OK
    for note in notes:
        print(f"note: {note}")
    if not rows:
        print(f"No Scenario custom job{' with these inputs' if input_of else ''} in the last {since}.")
        return EXIT_OK
    print(f"{'job':<30} {'status':<12} {'CU':>6}  {'created':<24} {'ledger':<12} inputs")
    for row in rows:
        units = "" if row["creative_units"] is None else f"{row['creative_units']:g}"
        print(
            f"{row['job_id']:<30} {row['status']:<12} {units:>6}  {row['created_at']!s:<24} "
            f"{row['ledger'] or '':<12} {row['model_id']}: {_summary(row['inputs'])}"
        )
    return EXIT_OK
