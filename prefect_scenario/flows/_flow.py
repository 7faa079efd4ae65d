"""The Prefect settings every flow of the package shares, in one place."""

from __future__ import annotations

import functools
import inspect
import textwrap
import types
import typing
from collections.abc import Callable
from pathlib import Path
from string import Template
from typing import Any, ParamSpec, TypeVar

from prefect import Flow, flow
from prefect.blocks.core import Block
from pydantic_core import MISSING

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
    "clip_storage": (
        "A storage block holding the clip: an S3 bucket (prefect-aws S3Bucket) or a local file system,"
        ' or the name of a saved one ("s3-bucket/incoming-videos").'
    ),
    "destination": (
        "Where the outputs go: a local directory, or a folder inside the destination storage block. "
        "Each job gets its own sub-folder."
    ),
    "destination_storage": (
        "A storage block (S3 bucket, local file system) for the outputs instead of the local disk, or "
        'the name of a saved one ("s3-bucket/scenario-outputs").'
    ),
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
    "wait": (
        '"inline": the run polls until its job ends. "suspend": after the paid submit the run '
        "suspends and frees its worker until the job ends; `prefect-scenario watch` (or a webhook) "
        "resumes it, and nothing is bought again. A clip split into chunks suspends between its "
        "chunk jobs. Suspend needs a deployment run."
    ),
    "batch_wait": (
        '"inline": this run waits on its jobs until the last one ends. "suspend": it submits as many '
        "clips as the concurrency limit has room for, suspends and frees its worker; each time one of "
        "its jobs ends, `prefect-scenario watch` (or a webhook) resumes it to store what ended and "
        "submit more; a clip split into chunks rides the same waves. Nothing is bought twice. Needs a "
        "deployment run."
    ),
    "clips_per_flow_run": (
        "Spread the batch over the work pool's workers: after the plan, the clips go this many at a "
        "time to child flow runs of this same deployment, each with its share of the budget. Empty: "
        "every clip runs in this flow run. Needs a deployment run, and result storage every worker "
        "shares when the workers are on several machines."
    ),
    "batch_timeout_seconds": "How long to wait for each job. The job itself goes on past it.",
    "batch_dry_run": (
        "Only check, upload (free) and estimate every clip, with the budget's plan; submit nothing."
    ),
}


def clip_run_name(prefix: str) -> Callable[[], str]:
    """A single-clip flow's run name: ``prefix`` and the file name of its ``video`` parameter."""

    def name() -> str:
        from prefect.runtime import flow_run

        video = str(flow_run.parameters.get("video", ""))
        return f"{prefix}-{Path(video).name or video}"[:100]

    return name


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
        made = settings(fn)
        show_optional_parameters_as_plain_fields(made)
        return made

    return decorate


def show_optional_parameters_as_plain_fields(made: Flow[Any, Any]) -> None:
    """Make every ``X | None = None`` parameter a plain, empty, optional field of the Run form.

    Prefect writes such a parameter as ``anyOf [X, null]`` with ``"default": null``: its form opens on
    a type switch reading ``Property is type "None"``, and a plain ``X`` with ``"default": null``
    would be pre-filled with a null the form itself then refuses. What renders as a plain optional
    field is ``X`` with no default and not required. Prefect builds a deployment's schema from
    ``inspect.signature(flow)`` (``prefect deploy``, ``flow.serve``, ``flow.deploy``), so the flow
    object gets a signature for the form: ``None`` taken out of each such annotation, and pydantic's
    ``MISSING`` as the default, which it leaves out of the schema. Only the schema changes: a call still
    binds the function's own signature, so a parameter left empty arrives as ``None``.
    ``with_options`` builds a new ``Flow``: its copies are given the same form.
    """
    signature = inspect.signature(made.fn, eval_str=True)
    made.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[_plain_optional(parameter) for parameter in signature.parameters.values()]
    )
    made.parameters = parameter_schema_of(made)
    make_copy = made.with_options

    @functools.wraps(make_copy)
    def with_options(*args: Any, **kwargs: Any) -> Flow[Any, Any]:
        copy = make_copy(*args, **kwargs)
        show_optional_parameters_as_plain_fields(copy)
        return copy

    made.with_options = with_options  # type: ignore[method-assign]


def parameter_schema_of(made: Flow[Any, Any]) -> Any:
    """The schema a deployment of ``made`` gets, as ``prefect deploy`` builds it."""
    from prefect.utilities.callables import parameter_schema

    return parameter_schema(made)


def _plain_optional(parameter: inspect.Parameter) -> inspect.Parameter:
    # Only ``= None``: a parameter with a real default opens on that value, and keeps ``null`` as
    # a choice where it means something (``concurrency_limit_name``: null is "no limit").
    if parameter.default is not None or typing.get_origin(parameter.annotation) not in _UNIONS:
        return parameter
    members = typing.get_args(parameter.annotation)
    kept = tuple(member for member in members if member is not type(None) and not _abstract_storage(member))
    plain = kept[0] if len(kept) == 1 else typing.Union[kept]  # noqa: UP007 - built at run time
    return parameter.replace(annotation=plain, default=MISSING)


_UNIONS = (typing.Union, types.UnionType)


def _abstract_storage(member: Any) -> bool:
    """``ReadableFileSystem`` and kin: no saved block has their type, so the form could only "Add +".

    A storage parameter also takes a saved block's name (``s3-bucket/incoming``), which the form
    offers as a plain text field instead.
    """
    return isinstance(member, type) and issubclass(member, Block) and inspect.isabstract(member)


def fill_shared_help(docstring: str) -> str:
    """``docstring`` with each ``$key`` of :data:`SHARED_HELP` written out, wrapped as an Args entry."""
    wrapped = {
        key: textwrap.fill(text, width=_ARGS_WIDTH, subsequent_indent=_CONTINUATION)
        for key, text in SHARED_HELP.items()
    }
    return Template(docstring).safe_substitute(wrapped)


_ARGS_WIDTH = 88  # about where the hand-wrapped Args entries end
_CONTINUATION = " " * 12  # an Args entry's continuation lines, as Google style and griffe read them
