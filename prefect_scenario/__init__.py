"""prefect-scenario: Scenario's generative video models as retry-safe, cached, observable Prefect flows.

Public names are imported on first use, so ``import prefect_scenario.models`` (the emulator, the
client) does not pull in Prefect. When Prefect is already imported (a flow run, a worker, the
server loading the ``prefect.collections`` entry point, ``prefect block register -m
prefect_scenario``) the blocks are imported at once, so Prefect sees their types.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    # blocks
    "ScenarioCredentials": "prefect_scenario.blocks",
    "resolve_credentials": "prefect_scenario.blocks",
    # tasks
    "upload_video": "prefect_scenario.tasks",
    "upload_image": "prefect_scenario.tasks",
    "estimate_job": "prefect_scenario.tasks",
    "submit_job": "prefect_scenario.tasks",
    "wait_for_job": "prefect_scenario.tasks",
    "download_outputs": "prefect_scenario.tasks",
    "outcome_for": "prefect_scenario.tasks",
    # records
    "SubmittedJob": "prefect_scenario.manifest",
    "StoredOutput": "prefect_scenario.manifest",
    # hooks
    "cancel_remote_jobs": "prefect_scenario.hooks",
}

__all__ = [
    "ScenarioCredentials",
    "StoredOutput",
    "SubmittedJob",
    "__version__",
    "cancel_remote_jobs",
    "download_outputs",
    "estimate_job",
    "outcome_for",
    "resolve_credentials",
    "submit_job",
    "upload_image",
    "upload_video",
    "wait_for_job",
]

if TYPE_CHECKING:  # the lazy names, for type checkers and IDEs
    from prefect_scenario.blocks import ScenarioCredentials, resolve_credentials
    from prefect_scenario.hooks import cancel_remote_jobs
    from prefect_scenario.manifest import StoredOutput, SubmittedJob
    from prefect_scenario.tasks import (
        download_outputs,
        estimate_job,
        outcome_for,
        submit_job,
        upload_image,
        upload_video,
        wait_for_job,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'prefect_scenario' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


if "prefect" in sys.modules:
    from prefect_scenario.blocks import ScenarioCredentials
