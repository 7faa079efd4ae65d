"""The run commands of ``prefect-scenario``: ``layers`` and ``edit``.

Each command checks its inputs locally first (a bad input costs a second, not a Prefect server
start, an upload or a job), then runs the flow, so every run is recorded in Prefect's history, and
writes ``manifest.json`` beside the outputs. Progress is Prefect's own log lines.

Exit codes: 0 done; 2 bad input or settings (nothing was spent); 1 the job failed or the API or a
transfer did. A failure prints ONE line, ``error: ...``, that says what to change; a traceback is
kept for the unexpected (a bug), never shown for an expected error.

Heavy imports (Prefect, PyAV, the flows) happen inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from cyclopts import App, Parameter

from prefect_scenario.formatting import format_units

if TYPE_CHECKING:
    from prefect_scenario.flows.result import ScenarioRunResult

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
MANIFEST_NAME = "manifest.json"

LAYERS_HELP = "Split a video into transparent layers with Scenario's Video to Layers model."
EDIT_HELP = "Edit a video from a prompt with Runway Aleph 2."


@Parameter(name="*")  # flattened: --out, --dry-run, ... as options of each command
@dataclass(frozen=True)
class RunSettings:
    """What every run command takes besides its model's inputs."""

    out: Path = Path("scenario-outputs")
    """Directory for the outputs and manifest.json."""
    dry_run: bool = False
    """Check the inputs, upload them (free) and print the estimate; submit nothing."""
    credentials: str | None = None
    """Name of a saved Scenario Credentials block. Default: the SCENARIO_SDK_API_KEY,
    SCENARIO_SDK_API_SECRET and SCENARIO_BASE_URL environment variables."""
    max_creative_units: float | None = None
    """Refuse, before spending, when the estimate is above this."""
    refresh: bool = False
    """Pay for a new generation even when an earlier run had the same inputs (and, for an edit, seed)."""
    timeout_seconds: float = 3600.0
    """How long to wait for the job (it goes on past this)."""

    def flow_arguments(self) -> dict[str, Any]:
        """The flow's keyword arguments these settings stand for."""
        return {
            "destination": str(self.out.resolve()),
            "credentials": self.credentials,
            "max_creative_units": self.max_creative_units,
            "refresh": self.refresh,
            "timeout_seconds": self.timeout_seconds,
            "dry_run": self.dry_run,
        }


_DEFAULT_SETTINGS = RunSettings()


def register(app: App) -> None:
    """Add ``layers`` and ``edit`` to ``app``, loaded only when one of them runs."""
    app.command(f"{__name__}:layers", name="layers", help=LAYERS_HELP)
    app.command(f"{__name__}:edit", name="edit", help=EDIT_HELP)


def layers(
    video: str,
    *,
    instruction: Annotated[str, Parameter(name=["--instruction", "-i"])],
    max_layers: int = 6,
    settings: RunSettings = _DEFAULT_SETTINGS,
) -> int:
    """Split a video into transparent layers with Scenario's Video to Layers model.

    Parameters
    ----------
    video
        The clip: a local path or a Scenario asset id (asset_...).
    instruction
        How to split it: name the objects or the rule, not the scene.
    max_layers
        At most this many layers, 1 to 10, the background included.
    """

    def check() -> None:
        from prefect_scenario.models import is_asset_id
        from prefect_scenario.validation import validate_layers_inputs

        validate_layers_inputs(None if is_asset_id(video) else Path(video), instruction, max_layers)

    async def run() -> ScenarioRunResult:
        from prefect_scenario.flows import video_to_layers

        result: ScenarioRunResult = await video_to_layers(
            video, instruction, max_layers=max_layers, **settings.flow_arguments()
        )
        return result

    return _execute(check, run, settings)


def edit(
    video: str,
    *,
    prompt: str,
    keyframe: Annotated[list[str] | None, Parameter(name="--keyframe", negative="")] = None,
    prompt_image: Annotated[list[str] | None, Parameter(name="--prompt-image", negative="")] = None,
    seed: int | None = None,
    split: Annotated[bool, Parameter(negative="--no-split")] = True,
    fit: Annotated[bool, Parameter(negative="")] = False,
    settings: RunSettings = _DEFAULT_SETTINGS,
) -> int:
    """Edit a video from a prompt with Runway Aleph 2.

    Parameters
    ----------
    video
        The clip: a local path or a Scenario asset id (asset_...). Aleph takes at most 30 s and
        16 MiB; a longer or larger clip is edited in chunks and stitched back (see --no-split).
    prompt
        The edit, up to 1000 characters.
    keyframe
        A reference image pinned to the input clip, PATH@SECONDS or PATH@PERCENT% (repeat, up to 5).
    prompt_image
        A reference image placed in the output, PATH@SECONDS or PATH@PERCENT% (repeat, up to 5).
    seed
        0 to 4294967295 for a repeatable edit; with a seed, the same inputs reuse an earlier job.
    split
        A clip over 30 s or 16 MiB is cut into chunks within the limits (at scene cuts or
        keyframes), edited in parallel with the same prompt and seed, and stitched back with its
        audio; the estimate of all chunks is checked before anything is spent. --no-split refuses
        such a clip instead.
    fit
        Re-encode a clip over 16 MiB (or 30 fps) as H.264 that fits, and edit it as one clip
        (preferred to splitting when the clip is short enough).
    """
    parsed: dict[str, Any] = {}

    def check() -> None:
        from prefect_scenario.models import is_asset_id
        from prefect_scenario.validation import (
            KeyframeSpec,
            PromptImageSpec,
            plan_aleph_clip,
            validate_aleph_inputs,
        )

        parsed["keyframes"] = [KeyframeSpec.parse(text) for text in keyframe or []]
        parsed["prompt_images"] = [PromptImageSpec.parse(text) for text in prompt_image or []]
        probe = validate_aleph_inputs(
            None if is_asset_id(video) else Path(video),
            prompt,
            parsed["keyframes"],
            parsed["prompt_images"],
            seed,
            enforce_clip_limits=False,
        )
        if probe is not None:
            plan_aleph_clip(probe, allow_split=split, fit_to_limits=fit)

    async def run() -> ScenarioRunResult:
        from prefect_scenario.flows import aleph_edit

        result: ScenarioRunResult = await aleph_edit(
            video,
            prompt,
            keyframes=parsed["keyframes"] or None,
            prompt_images=parsed["prompt_images"] or None,
            seed=seed,
            allow_split=split,
            fit_to_limits=fit,
            **settings.flow_arguments(),
        )
        return result

    return _execute(check, run, settings)


# ---------------------------------------------------------------------------------------------
# Running a command
# ---------------------------------------------------------------------------------------------


def _execute(
    check: Callable[[], None], run: Callable[[], Awaitable[ScenarioRunResult]], settings: RunSettings
) -> int:
    """Check locally, run the flow, write the manifest; map expected errors to one line and a code."""
    from prefect_scenario.errors import ScenarioError

    try:
        check()
        if settings.credentials is None:
            # Fail before a Prefect server starts when the environment has no credentials.
            from prefect_scenario.blocks import ScenarioCredentials

            ScenarioCredentials.from_env()
        _quiet_expected_tracebacks()
        result = asyncio.run(_awaited(run))
    except ScenarioError as exc:
        return _fail(exc)
    except KeyboardInterrupt:
        print("error: interrupted; a submitted Scenario job goes on and is billed", file=sys.stderr)
        return 130
    _report(result, settings.out)
    return EXIT_OK


async def _awaited(run: Callable[[], Awaitable[ScenarioRunResult]]) -> ScenarioRunResult:
    return await run()


def exit_code_for(exc: BaseException) -> int:
    """2 when the user must change an input or a setting (nothing was spent), 1 otherwise."""
    from prefect_scenario.errors import BudgetExceededError, InputValidationError, ScenarioConfigError

    if isinstance(exc, InputValidationError | ScenarioConfigError | BudgetExceededError):
        return EXIT_BAD_INPUT
    return EXIT_FAILED


def show_info_logs() -> None:
    """Long-running commands (``watch``, ``webhooks serve``) log what they do, one line each, to stderr.

    Prefect's own logging set-up first (importing Prefect does not run it): its API handler is what
    sends a line logged for a flow run (the cancel hook's, run by the watcher) to that run's page.
    """
    from prefect.logging.configuration import setup_logging

    setup_logging()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ours = logging.getLogger("prefect_scenario")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False  # Prefect's console handler would print each line a second time


def error_line(exc: BaseException) -> str:
    """The one line printed for an expected error: its message, flattened, with what to do."""
    from prefect_scenario.errors import (
        DownloadError,
        JobFailedError,
        JobWaitTimeoutError,
        ScenarioAPIError,
        ScenarioTransportError,
    )

    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, JobFailedError) and exc.hint and exc.hint not in message:
        message += f" (hint: {exc.hint})"
    if isinstance(exc, JobWaitTimeoutError):
        message += (
            f"; the job goes on and is billed: run the same command again to pick up {exc.job_id} "
            "without paying twice (or raise --timeout-seconds)"
        )
    elif isinstance(exc, DownloadError):
        message += "; run the same command again: the outputs are fetched again, never generated again"
    elif isinstance(exc, ScenarioTransportError | ScenarioAPIError) and "try" not in message.lower():
        message += "; check the Scenario API (SCENARIO_BASE_URL) and try again"
    return f"error: {message}"


def _fail(exc: BaseException) -> int:
    print(error_line(exc), file=sys.stderr)
    return exit_code_for(exc)


def _report(result: ScenarioRunResult, out: Path) -> None:
    """Print where things are; write ``manifest.json`` (not for a dry run: nothing was made)."""
    from prefect_scenario.flows.reporting import model_name

    name = model_name(result.model_id)
    chunks = f" for {len(result.chunks)} chunks" if result.chunks else ""
    if result.is_dry_run:
        print(
            f"{name} would cost about {format_units(result.estimated_creative_units)} creative units{chunks} "
            "(dry run: nothing was submitted, nothing was spent)"
        )
        return
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST_NAME
    manifest.write_text(json.dumps(result.to_manifest(relative_to=out), indent=2) + "\n")
    origin = "reused from an earlier run, nothing spent" if result.reused else "new job"
    if result.chunks:
        print(
            f"{name}: {len(result.chunks)} chunk jobs ({origin if result.reused else 'new jobs'}) stitched "
            f"into one video, {format_units(result.creative_units_cost)} creative units"
        )
        for chunk in result.chunks:
            print(
                f"  chunk {chunk.index}: {chunk.start_seconds:.2f}-{chunk.end_seconds:.2f} s, "
                f"Scenario job {chunk.job_id}, {format_units(chunk.creative_units_cost)} creative units"
            )
    else:
        print(
            f"{name}: Scenario job {result.job_id} ({origin}), {len(result.outputs)} output(s), "
            f"{format_units(result.creative_units_cost)} creative units"
        )
    for output in result.outputs:
        print(f"  {output.location}  {output.mime_type}  {output.size} bytes  sha256 {output.sha256[:16]}…")
    for output in result.previews:
        print(f"  {output.location}  {output.mime_type}  (preview)")
    if result.composite_psnr_db is not None:
        print(f"layers vs source: {result.composite_psnr_db:.1f} dB PSNR")
    for note in result.notes:
        print(f"note: {note}")
    if result.preview:
        print(f"preview:  {result.preview}")
    print(f"manifest: {manifest}")


class _NoExpectedTracebacks(logging.Formatter):
    """Formats like the wrapped formatter, minus the traceback of an expected (Scenario) error.

    The console is for people: an expected failure is one readable line. The same record keeps
    its traceback for Prefect's API log handler, so the run's logs in the UI stay complete.
    """

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        from prefect_scenario.errors import ScenarioError

        if record.exc_info and isinstance(record.exc_info[1], ScenarioError):
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return self.inner.format(record)


def _quiet_expected_tracebacks() -> None:
    """Wrap the formatter of Prefect's console handler (once) with :class:`_NoExpectedTracebacks`."""
    import prefect.main  # noqa: F401  (sets up Prefect's logging, console handler included)
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not isinstance(
            handler.formatter, _NoExpectedTracebacks
        ):
            handler.setFormatter(_NoExpectedTracebacks(handler.formatter))
