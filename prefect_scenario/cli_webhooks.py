"""``prefect-scenario webhooks ...``: register the webhook receiver with Scenario (and serve it).

``register`` creates a webhook endpoint of the credentials' project and stores its signing secret,
which Scenario shows once, in a Prefect ``Secret`` block. The secret is never printed. Commands
import their dependencies when they run, so ``prefect-scenario --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Any

from cyclopts import App, Parameter

EXIT_OK = 0

# The same names as prefect_scenario.webhooks.register (not imported: it loads Prefect).
DEFAULT_SECRET_BLOCK = "scenario-webhook-secret"
DEFAULT_EVENTS = ("generation.completed", "generation.failed")

webhooks_app = App(
    name="webhooks",
    help="Scenario webhooks: register the receiver's URL with Scenario (its secret goes to a Secret block).",
)


async def _register(
    url: str,
    secret_block: str,
    credentials: str | None,
    events: list[str],
    description: str | None,
    overwrite: bool,
) -> list[str]:
    from prefect_scenario.blocks import resolve_credentials
    from prefect_scenario.webhooks.register import DEFAULT_DESCRIPTION, register_webhook_endpoint

    creds = await resolve_credentials(credentials)
    endpoint = await register_webhook_endpoint(
        url,
        creds,
        secret_block,
        enabled_events=events,
        description=description or DEFAULT_DESCRIPTION,
        overwrite=overwrite,
    )
    return [
        f"Registered Scenario webhook endpoint {endpoint.id}",
        f"  url:          {endpoint.url}",
        f"  events:       {', '.join(endpoint.enabled_events)}",
        f"  secret:       stored in the Prefect Secret block {secret_block.removeprefix('secret/')!r} "
        "(Scenario shows it once; it is not printed)",
    ]


@webhooks_app.command(name="register")
def register(
    url: str,
    /,
    *,
    secret_block: str = DEFAULT_SECRET_BLOCK,
    credentials: str | None = None,
    events: Annotated[list[str] | None, Parameter(consume_multiple=True, negative="")] = None,
    description: str | None = None,
    overwrite: bool = False,
) -> int:
    """Register URL as a webhook endpoint of the Scenario project; store its secret in a Secret block.

    Parameters
    ----------
    url
        The receiver's public URL (absolute http or https; end it with / when the receiver is mounted
        under a path).
    secret_block
        Name of the Prefect Secret block that receives the endpoint's signing secret.
    credentials
        Name of a saved Scenario Credentials block (default: the SCENARIO_SDK_* variables); it needs a
        project id (SCENARIO_PROJECT_ID).
    events
        Events Scenario sends (default: generation.completed generation.failed; * for all).
    description
        Shown in the Scenario app.
    overwrite
        Replace an existing Secret block of that name (the endpoint its old secret belongs to then
        fails verification).
    """
    from prefect_scenario.cli_generate import error_line, exit_code_for
    from prefect_scenario.errors import ScenarioError

    chosen = [name for value in (events or DEFAULT_EVENTS) for name in value.replace(",", " ").split()]
    try:
        lines = asyncio.run(_register(url, secret_block, credentials, chosen, description, overwrite))
    except ScenarioError as exc:
        print(error_line(exc), file=sys.stderr)
        return exit_code_for(exc)
    print("\n".join(lines))
    return EXIT_OK


async def _serve(
    host: str,
    port: int,
    path: str,
    secret_block: str,
    credentials: str | None,
    scheme: str,
    tolerance_seconds: float,
) -> None:
    import logging

    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from prefect_scenario.blocks import resolve_credentials
    from prefect_scenario.watcher import Watcher
    from prefect_scenario.webhooks.receiver import JobHint, create_webhook_app
    from prefect_scenario.webhooks.register import load_webhook_secret
    from prefect_scenario.webhooks.signatures import scheme_named

    logger = logging.getLogger("prefect_scenario.webhooks")
    creds = await resolve_credentials(credentials)
    secret = await load_webhook_secret(secret_block)
    watcher = Watcher(creds)

    async def wake(hint: JobHint) -> None:
        # A hint only: the watcher reads the job and resumes the runs waiting on it if it ended.
        report = await watcher.wake_job(hint.job_id)
        logger.info(
            "Delivery %s for Scenario job %s: %d run(s) waiting, %d resumed",
            hint.delivery_id,
            hint.job_id,
            report.waiting,
            len(report.woken),
        )

    app: Any = create_webhook_app(secret, wake, scheme_named(scheme, tolerance_seconds=tolerance_seconds))
    if path.strip("/"):
        app = Starlette(routes=[Mount("/" + path.strip("/"), app=app)])
    print(f"Scenario webhook receiver on http://{host}:{port}/{path.strip('/')} (Ctrl-C stops)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
    await server.serve()


@webhooks_app.command(name="serve")
def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8788,
    path: str = "/",
    secret_block: str = DEFAULT_SECRET_BLOCK,
    credentials: str | None = None,
    scheme: str = "standard-webhooks",
    tolerance_seconds: float = 300.0,
) -> int:
    """Receive Scenario's webhook deliveries and resume the flow runs whose jobs ended.

    Each delivery is verified (401 when forged or stale), de-duplicated by its id, and taken as a
    hint: the job is read from Scenario, and if it ended, the suspended flow runs waiting on it
    are resumed, as ``prefect-scenario watch`` does (keep the watcher running: it catches what a
    lost delivery misses).

    Parameters
    ----------
    host
        Interface to bind (put a TLS-terminating proxy in front for Scenario to reach it).
    port
        Port to listen on.
    path
        Where the receiver answers (the URL registered with ``webhooks register``).
    secret_block
        The Prefect Secret block holding the endpoint's signing secret.
    credentials
        Name of a saved Scenario Credentials block (default: the SCENARIO_SDK_* variables).
    scheme
        The signature scheme: standard-webhooks (default) or hmac-sha256-hex. Scenario does not
        document its scheme; see docs/webhooks.md.
    tolerance_seconds
        How old (or how far in the future) a delivery's timestamp may be.
    """
    from prefect_scenario.cli_generate import error_line, exit_code_for, show_info_logs
    from prefect_scenario.errors import ScenarioError

    show_info_logs()
    try:
        asyncio.run(_serve(host, port, path, secret_block, credentials, scheme, tolerance_seconds))
    except ScenarioError as exc:
        print(error_line(exc), file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        pass
    return EXIT_OK
