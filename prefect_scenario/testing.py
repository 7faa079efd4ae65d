"""Test your own flows against the bundled Scenario emulator, the way moto's ``mock_aws`` serves AWS.

Two ways in, one behaviour:

- the pytest fixture ``scenario_emulator``: this module is a pytest plugin, registered through the
  ``pytest11`` entry point, so installing prefect-scenario is enough (``-p no:scenario_emulator``
  turns it off);
- the context manager :func:`emulate_scenario`, for scripts, notebooks and other test runners.

Either starts the emulator on a free loopback port and points the ``SCENARIO_*`` environment
variables at it for its duration, so the package's flows, tasks and CLI use it with no arguments
(``ScenarioCredentials.from_env``). On exit the variables are restored and the port is closed.

pytest imports this module in every session of every project that installs prefect-scenario, so it
imports nothing heavy at import time: the emulator (FastAPI, uvicorn, PyAV) and httpx load when an
emulator starts, and Prefect is never imported.

Example:
    ```python
    from prefect_scenario.testing import emulate_scenario

    with emulate_scenario() as emulator:
        ...  # run flows; they reach the emulator through SCENARIO_BASE_URL
        assert emulator.stats()["jobs_created"] == 1
    ```
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from prefect_scenario.emulator import EmulatorState, FaultRule, RunningEmulator

__all__ = ["ScenarioEmulator", "emulate_scenario"]

# The names and values live here, not imported from prefect_scenario.blocks: that module imports
# Prefect. tests/testing/test_testing_plugin.py checks them against ScenarioCredentials.from_env.
ENV_API_KEY = "SCENARIO_SDK_API_KEY"
ENV_API_SECRET = "SCENARIO_SDK_API_SECRET"
ENV_BEARER_TOKEN = "SCENARIO_SDK_JWT"
ENV_BASE_URL = "SCENARIO_BASE_URL"
ENV_PROJECT_ID = "SCENARIO_PROJECT_ID"

DEFAULT_API_KEY = "emulator-key"
DEFAULT_API_SECRET = "emulator-secret"
CONTROL_TIMEOUT_SECONDS = 30.0


class ScenarioEmulator:
    """A running Scenario emulator and its control plane (``/_emulator``), as a test sees it.

    Made by :func:`emulate_scenario` and the ``scenario_emulator`` fixture; every control method
    goes over HTTP, as another process would drive it.

    Attributes:
        base_url: The API base URL, ``http://127.0.0.1:PORT/v1`` (also in ``SCENARIO_BASE_URL``).
        api_key: The API key in ``SCENARIO_SDK_API_KEY``.
        api_secret: The API secret in ``SCENARIO_SDK_API_SECRET`` (a dummy value).
        project_id: The project in ``SCENARIO_PROJECT_ID``, unique per emulator, so upload and job
            caches scoped by base URL and project never carry over from an earlier emulator.
        env: Every environment variable set for the emulator's duration.
        running: The served emulator; ``running.state`` is its live ``EmulatorState``.

    Example:
        ```python
        emulator.add_faults([{"route": "GET /v1/jobs/{jobId}", "kind": "status", "status": 503}])
        emulator.configure(concurrency_ceiling=2)
        emulator.advance_clock(120)  # signed URLs expire, jobs finish
        assert emulator.stats()["faults_fired"] == {"status": 1}
        ```
    """

    def __init__(
        self,
        running: RunningEmulator,
        http: httpx.Client,
        *,
        api_key: str,
        api_secret: str,
        project_id: str,
    ) -> None:
        self.running = running
        self.api_key = api_key
        self.api_secret = api_secret
        self.project_id = project_id
        self.base_url = running.base_url
        self.env: dict[str, str] = {
            ENV_BASE_URL: self.base_url,
            ENV_API_KEY: api_key,
            ENV_API_SECRET: api_secret,
            ENV_PROJECT_ID: project_id,
        }
        self._http = http

    def __repr__(self) -> str:
        return f"ScenarioEmulator(base_url={self.base_url!r}, project_id={self.project_id!r})"

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT``: the control plane is under ``/_emulator``."""
        return self.running.root_url

    @property
    def state(self) -> EmulatorState:
        """The live emulator state, to inspect or drive in-process (jobs, assets, settings)."""
        return self.running.state

    def stats(self) -> dict[str, Any]:
        """The counters of ``GET /_emulator/stats``.

        ``jobs_created`` (dry runs excluded), ``uploads_created``, ``dry_runs``, ``faults_fired``
        (per kind), ``requests`` (per ``"METHOD /v1/route/template"``), ``jobs_in_flight``, ...

        Example:
            ```python
            assert emulator.stats()["jobs_created"] == 1
            ```
        """
        result: dict[str, Any] = self._call("GET", "stats")
        return result

    def add_faults(
        self, rules: FaultRule | Mapping[str, Any] | Iterable[FaultRule | Mapping[str, Any]]
    ) -> list[FaultRule]:
        """Append fault rules (``POST /_emulator/faults``), checked here first so typos fail at once.

        Args:
            rules: One rule or a list of them: ``FaultRule`` objects or dicts such as
                ``{"route": "POST /v1/generate/custom/{modelId}", "kind": "reset_after_accept"}``.
                Rules of a route fire in order, each for its ``count`` requests.

        Returns:
            Every rule still pending, with its remaining count.

        Raises:
            pydantic.ValidationError: a rule is malformed (unknown kind or field, bad route).

        Example:
            ```python
            emulator.add_faults([
                {"route": "POST /v1/uploads", "kind": "status", "status": 503, "retry_after": 0},
                {"route": "GET /files/{assetId}", "kind": "truncate"},
            ])
            ```
        """
        from prefect_scenario.emulator import FaultRule

        items = [rules] if isinstance(rules, FaultRule | Mapping) else list(rules)
        checked = [FaultRule.model_validate(item) for item in items]
        body = [rule.model_dump(mode="json", exclude_none=True) for rule in checked]
        return [FaultRule.model_validate(item) for item in self._call("POST", "faults", body)]

    def clear_faults(self) -> None:
        """Drop every pending fault rule (``DELETE /_emulator/faults``)."""
        self._call("DELETE", "faults")

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change settings while the emulator runs (``POST /_emulator/config``).

        Args:
            **settings: ``EmulatorConfig`` fields: ``job_seconds``, ``queue_seconds``,
                ``concurrency_ceiling``, ``failure_rate``, ``asset_url_ttl_seconds``, ...

        Returns:
            The settings now in force (credentials only as ``credentials_fixed``).

        Raises:
            ValueError: an unknown setting, a value out of range, or a credential.

        Example:
            ```python
            emulator.configure(job_seconds=5, concurrency_ceiling=1)
            ```
        """
        result: dict[str, Any] = self._call("POST", "config", settings)
        return result

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        """Move the emulator's clock forward (``POST /_emulator/clock``): jobs finish, URLs expire.

        Args:
            seconds: How far, 0 or more.

        Returns:
            ``{"now": ISO time, "offset_seconds": total advance so far}``.

        Example:
            ```python
            emulator.advance_clock(3600)  # every signed URL handed out so far has expired
            ```
        """
        result: dict[str, Any] = self._call("POST", "clock", {"advance_seconds": seconds})
        return result

    def reset(self) -> None:
        """Forget jobs, assets, uploads, counters and faults, and rewind the clock; settings stay.

        Example:
            ```python
            emulator.reset()
            assert emulator.stats()["jobs_created"] == 0
            ```
        """
        self._call("POST", "reset")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = self._http.request(method, f"{self.running.control_url}/{path}", json=body)
        if response.is_error:
            try:
                reason = response.json().get("reason", response.text)
            except ValueError:
                reason = response.text
            message = (
                f"The Scenario emulator refused {method} /_emulator/{path} ({response.status_code}): {reason}"
            )
            if response.status_code < 500:
                raise ValueError(message)
            raise RuntimeError(message)
        return response.json()


@contextmanager
def _environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, unset) environment variables for the block, then put back what was there."""
    previous = {name: os.environ.get(name) for name in values}
    try:
        _apply(values)
        yield
    finally:
        _apply(previous)


def _apply(values: Mapping[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _secret_text(value: Any) -> str | None:
    return None if value is None else str(value.get_secret_value())


@contextmanager
def emulate_scenario(
    *,
    job_seconds: float = 0.3,
    queue_seconds: float = 0.05,
    storage_dir: Path | str | None = None,
    **config: Any,
) -> Iterator[ScenarioEmulator]:
    """Run the Scenario emulator on a free loopback port, with the environment pointing at it.

    For the block, ``SCENARIO_BASE_URL``, ``SCENARIO_SDK_API_KEY``, ``SCENARIO_SDK_API_SECRET`` and
    ``SCENARIO_PROJECT_ID`` (unique per emulator) are set and ``SCENARIO_SDK_JWT`` is unset, so
    flows, tasks and the CLI reach the emulator with no arguments. On exit the variables get their
    previous values back, the server stops, and its files are removed (unless ``storage_dir`` was
    given).

    The emulator accepts any API key and secret unless ``api_key``/``api_secret`` are given in
    ``config``; the environment then carries those.

    Args:
        job_seconds: How long each generation job takes (short, for tests).
        queue_seconds: How long a new job stays queued (at most a quarter of ``job_seconds``).
        storage_dir: Where the emulator keeps uploads and outputs; a temporary directory when None.
        **config: Other ``EmulatorConfig`` settings: ``concurrency_ceiling``, ``failure_rate``,
            ``asset_url_ttl_seconds``, ``seed``, ``api_key``, ``api_secret``, ...

    Yields:
        The running emulator: ``base_url``, ``stats()``, ``add_faults()``, ``configure()``,
        ``advance_clock()``, ``reset()``.

    Raises:
        pydantic.ValidationError: an unknown setting or a value out of range.

    Example:
        ```python
        import asyncio

        from prefect_scenario.flows import video_to_layers
        from prefect_scenario.testing import emulate_scenario

        with emulate_scenario(job_seconds=0.5) as emulator:
            result = asyncio.run(video_to_layers("clip.mp4", "each moving object apart", max_layers=2))
            assert emulator.stats()["jobs_created"] == 1
        ```
    """
    import httpx

    from prefect_scenario.emulator import EmulatorConfig, EmulatorState, serve_in_thread

    settings = EmulatorConfig.model_validate(
        {"job_seconds": job_seconds, "queue_seconds": queue_seconds, **config}
    )
    api_key = _secret_text(settings.api_key) or DEFAULT_API_KEY
    api_secret = _secret_text(settings.api_secret) or DEFAULT_API_SECRET
    project_id = f"proj_emulator{uuid.uuid4().hex[:16]}"
    # trust_env=False: a proxy from HTTP_PROXY must never sit between a test and its loopback server.
    with (
        EmulatorState(settings, storage_dir=storage_dir) as state,
        serve_in_thread(state) as running,
        httpx.Client(timeout=CONTROL_TIMEOUT_SECONDS, trust_env=False) as http,
    ):
        emulator = ScenarioEmulator(
            running, http, api_key=api_key, api_secret=api_secret, project_id=project_id
        )
        with _environment({**emulator.env, ENV_BEARER_TOKEN: None}):
            yield emulator


try:
    import pytest
except ImportError:  # pragma: no cover - emulate_scenario works without pytest
    pass
else:

    @pytest.fixture
    def scenario_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScenarioEmulator]:
        """A fresh Scenario emulator for one test, with the environment pointing at it.

        The emulator runs on a free loopback port with 0.3 s jobs; ``SCENARIO_BASE_URL``,
        ``SCENARIO_SDK_API_KEY``, ``SCENARIO_SDK_API_SECRET`` and ``SCENARIO_PROJECT_ID`` point at it
        until the test ends (``SCENARIO_SDK_JWT`` is unset), so flows, tasks and the CLI need no
        arguments. Its files stay under pytest's temporary directory for a look after a failure.
        Change settings with ``scenario_emulator.configure(...)``.

        Example:
            ```python
            def test_one_job(scenario_emulator, tmp_path):
                ...  # run your flow
                assert scenario_emulator.stats()["jobs_created"] == 1
            ```
        """
        with emulate_scenario(storage_dir=tmp_path_factory.mktemp("scenario-emulator")) as emulator:
            yield emulator
