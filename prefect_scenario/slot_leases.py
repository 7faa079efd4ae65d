"""Slots of a global concurrency limit that outlive their process: one lease per job.

A :class:`~prefect_scenario.slot_pool.SlotPool` holds its slots with a background task that renews
their lease every 45 s: when the process exits, the lease runs out a minute later and the slots go
back. A batch in ``wait="suspend"`` mode exits on purpose while its jobs run, and those jobs are
still in flight on Scenario's side, so they must keep their slots. :class:`SlotLeases` takes one
slot per job under a lease of its own that lasts as long as the job may (its wait's deadline, at
most the day Prefect allows), with the batch's flow run as its holder; the batch, resumed, gives a
job's slot back once the job ended. A batch that never comes back (cancelled while suspended, its
deployment deleted) holds its slots until their deadlines, never longer.

Leases are taken one at a time and never waited for: an acquisition the limit has no room for is
refused at once (``423``), and the batch submits only as many jobs as it got slots for.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from prefect_scenario.run_context import run_logger

# Prefect's server accepts leases of one minute to one day.
MIN_LEASE_SECONDS = 60.0
MAX_LEASE_SECONDS = 24 * 3600.0
_LOCKED = 423
# The "lease" of a slot taken without a limit: nothing to renew or release.
NO_LEASE = "no-limit"


def lease_seconds(seconds: float) -> float:
    """``seconds`` within the range Prefect's server accepts for a lease."""
    return float(min(MAX_LEASE_SECONDS, max(MIN_LEASE_SECONDS, math.ceil(seconds))))


@dataclass(frozen=True)
class SlotLeases:
    """One batch's slots of the limit ``limit_name``, each leased for one job.

    Attributes:
        limit_name: the global concurrency limit (None: no limit, every take succeeds without a
            lease, shown as :data:`NO_LEASE`).
        holder_id: the flow run that holds the leases (shown with them in Prefect's API).
    """

    limit_name: str | None
    holder_id: str

    async def take(self, wanted: int, seconds: float) -> list[str]:
        """Up to ``wanted`` slots, each under a lease of ``seconds``; fewer when the limit is full.

        Returns:
            The lease ids, one per slot taken (:data:`NO_LEASE` each without a limit).

        Raises:
            Exception: the limit is missing or the server failed: nothing can be submitted.
        """
        if wanted <= 0:
            return []
        if self.limit_name is None:
            return [NO_LEASE] * wanted
        import httpx
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.objects import ConcurrencyLeaseHolder

        holder = ConcurrencyLeaseHolder(type="flow_run", id=uuid.UUID(self.holder_id))
        taken: list[str] = []
        async with get_client() as client:
            limit = await client.read_global_concurrency_limit_by_name(self.limit_name)
            room = wanted if not limit.active else max(0, int(limit.limit) - int(limit.active_slots))
            for _ in range(min(wanted, room)):
                try:
                    response = await client.increment_concurrency_slots_with_lease(
                        names=[self.limit_name],
                        slots=1,
                        mode="concurrency",
                        lease_duration=lease_seconds(seconds),
                        holder=holder,
                    )
                except httpx.HTTPStatusError as exc:
                    if exc.response.status_code == _LOCKED:
                        break  # someone else took the room meanwhile
                    raise
                taken.append(str(response.json()["lease_id"]))
        return taken

    async def renew(self, lease_ids: Iterable[str], seconds: float) -> list[str]:
        """Lengthen leases to ``seconds`` from now; the ids still held (an expired one is not).

        Never raises: a lease that could not be renewed is reported as not held.
        """
        from prefect.client.orchestration import get_client

        held = [lease_id for lease_id in lease_ids if lease_id == NO_LEASE]
        ids = [lease_id for lease_id in lease_ids if lease_id and lease_id != NO_LEASE]
        if not ids:
            return held
        async with get_client() as client:
            for lease_id in ids:
                try:
                    await client.renew_concurrency_lease(uuid.UUID(lease_id), lease_seconds(seconds))
                except Exception as exc:
                    run_logger().info("Concurrency lease %s is no longer held: %s", lease_id, exc)
                    continue
                held.append(lease_id)
        return held

    async def release(self, lease_ids: Iterable[str]) -> None:
        """Give the slots back; a lease that expired or went back already is fine. Never raises."""
        from prefect.client.orchestration import get_client

        ids = [lease_id for lease_id in lease_ids if lease_id and lease_id != NO_LEASE]
        if not ids:
            return
        async with get_client() as client:
            for lease_id in ids:
                try:
                    await client.release_concurrency_slots_with_lease(uuid.UUID(lease_id))
                except Exception as exc:
                    run_logger().debug("Concurrency lease %s was not released: %s", lease_id, exc)


__all__ = ["MAX_LEASE_SECONDS", "MIN_LEASE_SECONDS", "NO_LEASE", "SlotLeases", "lease_seconds"]
