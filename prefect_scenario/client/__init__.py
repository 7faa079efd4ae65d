"""Async client of the Scenario API (httpx): auth, one retry policy, typed resource methods.

Never imports Prefect. Methods take and return the models of :mod:`prefect_scenario.models` and
raise the errors of :mod:`prefect_scenario.errors`.
"""

from __future__ import annotations

from .assets import AssetsAPI, DownloadedFile
from .client import ScenarioClient
from .generate import GenerateAPI, Submission
from .jobs import JobsAPI
from .models_api import ModelsAPI
from .policies import PollPolicy, RetryPolicy
from .uploads import UploadsAPI
from .webhook_endpoints import WebhookEndpointsAPI

__all__ = [
    "AssetsAPI",
    "DownloadedFile",
    "GenerateAPI",
    "JobsAPI",
    "ModelsAPI",
    "PollPolicy",
    "RetryPolicy",
    "ScenarioClient",
    "Submission",
    "UploadsAPI",
    "WebhookEndpointsAPI",
]
