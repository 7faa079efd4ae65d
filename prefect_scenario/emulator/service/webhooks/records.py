"""What the emulator keeps about webhook endpoints and their deliveries (plain records, no wire form).

A *delivery* is what the API calls a "webhook event": one event sent to one endpoint, with every
attempt to send it. The wire form is built by :mod:`prefect_scenario.emulator.api.webhook_wire`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from prefect_scenario.models import WEBHOOK_EVENT_TYPES

# Every event name of the SDK's enum, "*" included: what enabledEvents takes.
EVENT_TYPES = WEBHOOK_EVENT_TYPES
ALL_EVENTS = "*"
OwnerType = Literal["project", "team"]
DeliveryStatus = Literal["created", "retrying", "success", "failed"]
FINAL_STATUSES: frozenset[str] = frozenset({"success", "failed"})
# The attempt's responseStatusCode when no answer came (connection refused, reset, timeout): the
# SDK types it as a number, and no HTTP status is 0.
NO_ANSWER = 0


def is_success(status_code: int) -> bool:
    """True for the answers that end a delivery (2xx)."""
    return 200 <= status_code < 300


@dataclass
class EndpointRecord:
    """A webhook endpoint of a project or a team."""

    id: str
    owner_type: OwnerType
    owner_id: str
    url: str
    enabled_events: list[str]
    # Never in a repr: records end up in logs and assertion messages.
    secret: str = field(repr=False)
    created_at: float
    updated_at: float
    enabled: bool = True
    description: str | None = None
    nb_total_calls: int = 0
    nb_failed_calls: int = 0
    seq: int = 0

    def wants(self, event_type: str) -> bool:
        """True when this endpoint enables ``event_type`` (by name or through ``*``)."""
        return ALL_EVENTS in self.enabled_events or event_type in self.enabled_events


@dataclass(frozen=True)
class Attempt:
    """One request of a delivery: the status the receiver answered (:data:`NO_ANSWER`), and when."""

    status_code: int
    sent_at: float


@dataclass
class DeliveryRecord:
    """One event for one endpoint, and every attempt to send it.

    ``body`` is the JSON text sent, fixed when the delivery is made: every attempt sends the same
    bytes (only the signature headers are dated anew), and ``payload`` is what they parse to.
    """

    id: str
    endpoint_id: str
    event_type: str
    payload: dict[str, Any]
    body: bytes = field(repr=False)
    created_at: float
    seq: int
    updated_at: float
    status: DeliveryStatus = "created"
    attempts: list[Attempt] = field(default_factory=list)
    # Rounds of sending (a duplicated send is one round of two requests): what max attempts bounds.
    rounds: int = 0
    # When the next round is due (emulator clock); None once final.
    next_attempt_at: float | None = None
    # A round is being sent right now (by the dispatcher, outside the lock).
    in_flight: bool = False
    # The delivery fault drawn for it when it was made (its first round), if any.
    fault: str | None = None
    # The out-of-order group holding it back, until the group is released.
    hold_group: str | None = None
    # HTTP requests that really left the emulator for it (a dropped delivery: 0, a duplicate: 2).
    requests_sent: int = 0

    @property
    def is_final(self) -> bool:
        """True once it will not be sent again."""
        return self.status in FINAL_STATUSES

    @property
    def sent_at(self) -> float:
        """When it was last sent (its creation, before any attempt)."""
        return self.attempts[-1].sent_at if self.attempts else self.created_at
