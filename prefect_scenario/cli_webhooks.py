"""``prefect-scenario webhooks ...``: register the webhook receiver with Scenario (and serve it).

``register`` creates a webhook endpoint of the credentials' project and stores its signing secret,
which Scenario shows once, in a Prefect ``Secret`` block. The secret is never printed. Commands
import their dependencies when they run, so ``prefect-scenario --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

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
