"""The ``prefect-scenario`` command line (cyclopts, which Prefect itself uses).

Heavy imports happen inside the commands, so ``prefect-scenario --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from cyclopts import App, Parameter

from prefect_scenario.cli_generate import register as register_run_commands
from prefect_scenario.cli_jobs import register as register_jobs_command
from prefect_scenario.cli_server import register as register_server_commands
from prefect_scenario.cli_watch import register as register_watch_command
from prefect_scenario.cli_webhooks import webhooks_app

app = App(name="prefect-scenario", help="Run Scenario's generative video models as Prefect flows.")

emulator_app = App(name="emulator", help="A local emulator of the Scenario API, for tests and demos.")
app.command(emulator_app)
register_run_commands(app)  # layers, edit
register_jobs_command(app)  # jobs
register_server_commands(app)  # server start, server stop
register_watch_command(app)  # watch
app.command(webhooks_app)  # webhooks register (serve is added to webhooks_app)


@emulator_app.command
def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    job_seconds: float = 2.0,
    asset_url_ttl_seconds: float = 60.0,
    concurrency_ceiling: int | None = None,
    failure_rate: float = 0.0,
    allow_cancel: bool = False,
    short_pages: bool = True,
    storage_dir: Path | None = None,
    api_key: Annotated[str | None, Parameter(env_var="SCENARIO_EMULATOR_API_KEY")] = None,
    api_secret: Annotated[str | None, Parameter(env_var="SCENARIO_EMULATOR_API_SECRET")] = None,
) -> None:
    """Serve the Scenario API emulator over HTTP (API under /v1, control plane under /_emulator).

    Parameters
    ----------
    host
        Interface to bind. Loopback by default: the emulator has no real security.
    port
        Port to listen on (0 picks a free one).
    job_seconds
        How long each generation job takes.
    asset_url_ttl_seconds
        Lifetime of signed asset URLs.
    concurrency_ceiling
        Parallel custom jobs allowed before 429 (none by default).
    failure_rate
        Share of jobs (0..1) that end in failure.
    allow_cancel
        Let custom jobs be canceled (the real API refuses).
    short_pages
        GET /jobs returns half pages and an empty page while a token remains, as the API may.
    storage_dir
        Where files go (a temporary directory by default).
    api_key
        The only API key accepted (any non-empty key when unset).
    api_secret
        The only API secret accepted (any non-empty secret when unset).
    """
    from pydantic import SecretStr

    from prefect_scenario.emulator import EmulatorConfig, EmulatorState
    from prefect_scenario.emulator import serve as serve_emulator
    from prefect_scenario.emulator.server import STOP_SIGNALS
    from prefect_scenario.stop_signals import stop_signals_exit

    # The options named like EmulatorConfig's fields are those fields; only the secrets are wrapped.
    settings = {name: value for name, value in locals().items() if name in EmulatorConfig.model_fields}
    secrets = {
        name: SecretStr(value) if value else None
        for name, value in [("api_key", api_key), ("api_secret", api_secret)]
    }
    config = EmulatorConfig(**{**settings, **secrets})

    def announce(base_url: str) -> None:
        root = base_url.removesuffix("/v1")
        print(f"Scenario emulator: API at {base_url}, control plane at {root}/_emulator", flush=True)

    # From before the state exists (its temporary storage is made then): a stop signal at any
    # point unwinds through the ``with``, which removes that storage.
    with stop_signals_exit(STOP_SIGNALS), EmulatorState(config, storage_dir=storage_dir) as state:
        serve_emulator(state, host=host, port=port, announce=announce)


def main() -> None:
    """Entry point of the ``prefect-scenario`` script."""
    app()


if __name__ == "__main__":
    main()
