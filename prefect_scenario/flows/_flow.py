"""The Prefect settings every flow of the package shares, in one place."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from string import Template
from typing import ParamSpec, TypeVar

from prefect import Flow, flow

from prefect_scenario.hooks import cancel_remote_jobs

P = ParamSpec("P")
R = TypeVar("R")

# Parameter help that several flows share word for word: a flow's docstring says ``$key`` in its
# Args and :func:`scenario_flow` writes the text in before Prefect reads the docstring for the form.
SHARED_HELP: dict[str, str] = {
    "credentials": (
        "A saved Scenario Credentials block (or its name). Empty: the SCENARIO_SDK_API_KEY / "
        "SCENARIO_SDK_API_SECRET environment variables of the run."
    ),
    "clip_storage": "A storage block (S3 bucket, local file system) holding the clip.",
    "max_creative_units": "Refuse, before spending, when the estimate is above this many creative units.",
    "videos": "Clips one by one: local paths, paths inside the video storage block, or asset ids.",
    "folder": (
        "A local folder, or a folder / key prefix inside the video storage block (e.g. an S3 prefix "
        '"incoming/"). Listed one level deep, by name.'
    ),
    "pattern": (
        'Which files of the folder to take, as a glob on the name (e.g. "take-*.mov"). Empty: every '
        ".mp4, .mov, .m4v, .webm and .mkv file."
    ),
    "clips_storage": (
        "A storage block holding the clips: an S3 bucket (prefect-aws S3Bucket) or a local file system,"
        ' or the name of a saved one ("s3-bucket/incoming-videos").'
    ),
    "budget_creative_units": (
        "Stop submitting before the estimates would pass this many creative units; the remaining clips "
        'are reported "skipped: budget". Empty: no budget.'
    ),
    "concurrency_limit_name": (
        "The Prefect global concurrency limit that bounds jobs in flight, shared with every flow run. "
        "Created when missing. Empty: no limit (Scenario's own ceiling is then waited on when it "
        "answers 429)."
    ),
    "concurrency_limit": (
        "Slots of the limit when this flow creates it: your team's parallel custom-job ceiling. An "
        "existing limit keeps its size."
    ),
    "batch_timeout_seconds": "How long to wait for each job. The job itself goes on past it.",
    "batch_dry_run": (
        "Only check, upload (free) and estimate every clip, with the budget's plan; submit nothing."
    ),
}


def scenario_flow(
    name: str, *, run_name: Callable[[], str], description: str
) -> Callable[[Callable[P, R]], Flow[P, R]]:
    """``@flow`` as every model and batch flow needs it, with the shared help written into its docstring.

    - ``retries=0``: off by default, a user opts in (``with_options`` or a deployment). Retrying is
      safe either way: the paid submit is persisted and comes back from the cache, so a retry
      downloads again and never generates again.
    - ``persist_result=True``: a retry or a resume finds the earlier tasks' results.
    - Cancelling or crashing a run cancels its Scenario jobs, as far as the API allows.

    Example:
        ```python
        @scenario_flow("video-to-layers", run_name=_run_name, description="Split a video into layers.")
        async def video_to_layers(video: str, separation_instruction: str) -> ScenarioRunResult: ...
        ```
    """
    settings = flow(
        name=name,
        flow_run_name=run_name,
        description=description,
        retries=0,
        persist_result=True,
        on_cancellation=[cancel_remote_jobs],
        on_crashed=[cancel_remote_jobs],
    )

    def decorate(fn: Callable[P, R]) -> Flow[P, R]:
        if fn.__doc__:
            fn.__doc__ = fill_shared_help(fn.__doc__)
        return settings(fn)

    return decorate


def fill_shared_help(docstring: str) -> str:
    """``docstring`` with each ``$key`` of :data:`SHARED_HELP` written out, wrapped as an Args entry."""
    wrapped = {
        key: textwrap.fill(text, width=_ARGS_WIDTH, subsequent_indent=_CONTINUATION)
        for key, text in SHARED_HELP.items()
    }
    return Template(docstring).safe_substitute(wrapped)


_ARGS_WIDTH = 88  # about where the hand-wrapped Args entries end
_CONTINUATION = " " * 12  # an Args entry's continuation lines, as Google style and griffe read them
