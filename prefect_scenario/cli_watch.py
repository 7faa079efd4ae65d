"""``prefect-scenario watch``: wake the suspended flow runs of one Scenario project when their jobs end.

A long-running process beside the workers (one per Scenario project), not a flow run: a flow run
that sweeps forever would hold a worker slot, the very thing suspending frees, and its run history
would fill with one endless run. It needs the Prefect API (``PREFECT_API_URL``) and the Scenario
credentials of the project; it never submits a job, so it never spends anything.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Annotated

from cyclopts import App, Parameter

WATCH_HELP = "Wake suspended flow runs (wait='suspend') when their Scenario jobs end; never submits."


def register(app: App) -> None:
    """Add ``watch`` to ``app``, loaded only when it runs."""
    app.command(f"{__name__}:watch", name="watch", help=WATCH_HELP)


async def _watch(credentials: str | None, interval_seconds: float, once: bool) -> int:
    from prefect_scenario.blocks import resolve_credentials
    from prefect_scenario.watcher import Watcher

    creds = await resolve_credentials(credentials)
    watcher = Watcher(creds)
    if once:
        report = await watcher.sweep()
        print(
            f"{report.waiting} flow run(s) waiting, {report.jobs_listed} job(s) listed, {report.jobs_read} "
            f"read; resumed {len(report.woken)}, already resumed {len(report.already_resumed)}, expired "
            f"{len(report.expired)}; jobs of {len(report.cancelled)} cancelled run(s) cancelled",
            flush=True,
        )
        return 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"Watching the suspended flow runs of {creds.cache_scope()} every {interval_seconds:g} s "
        "(Ctrl-C stops)",
        flush=True,
    )
    await watcher.run(interval_seconds=interval_seconds, stop=stop)
    print("Watcher stopped", flush=True)
    return 0


def watch(
    *,
    credentials: Annotated[str | None, Parameter(help="A saved Scenario Credentials block's name.")] = None,
    interval_seconds: float = 30.0,
    once: bool = False,
) -> None:
    """Wake the suspended flow runs of a Scenario project when their jobs end.

    Parameters
    ----------
    credentials
        The name of a saved Scenario Credentials block. Empty: SCENARIO_SDK_API_KEY /
        SCENARIO_SDK_API_SECRET (and SCENARIO_SDK_BASE_URL) from the environment.
    interval_seconds
        Time between two sweeps of the project's jobs (one bulk listing each).
    once
        One sweep, a line of what it did, then exit (for cron or a check).
    """
    from prefect_scenario.cli_generate import show_info_logs
    from prefect_scenario.errors import ScenarioError

    show_info_logs()
    try:
        code = asyncio.run(_watch(credentials, interval_seconds, once))
    except ScenarioError as exc:
        print(f"prefect-scenario watch: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)


__all__ = ["WATCH_HELP", "register", "watch"]
