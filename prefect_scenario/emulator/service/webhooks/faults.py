"""Delivery fault rules: what the control plane asked to go wrong with the next webhook deliveries.

Posted to ``/_emulator/webhooks/faults``; a rule fires on the next ``count`` deliveries (of
``event_type`` when given), each with ``probability`` (drawn from the state's seeded generator),
when the delivery is made. It acts on the delivery's first round; retries are sent normally.

* ``drop`` — lost on the way: no request reaches the receiver, yet the log says it was delivered
  (one attempt answered 200, status ``success``), as when a proxy acknowledges and never forwards;
* ``duplicate`` — the first request is sent twice, byte for byte (same ``webhook-id``);
* ``delay`` — the first request waits ``seconds`` on the emulator clock (advancing it releases it);
* ``out_of_order`` — the next ``count`` deliveries are held back, then sent one after the other in
  reverse order once the last one is made (or ``hold_seconds`` after the first, or when the rules
  are cleared);
* ``bad_signature`` — the first request is signed with a wrong key (no effect under scheme ``none``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prefect_scenario.emulator.service.webhooks.records import ALL_EVENTS, EVENT_TYPES

WebhookFaultKind = Literal["drop", "duplicate", "delay", "out_of_order", "bad_signature"]


class WebhookFaultRule(BaseModel):
    """One delivery fault: what to do to the next ``count`` deliveries (of ``event_type``)."""

    model_config = ConfigDict(extra="forbid")

    kind: WebhookFaultKind
    count: int = Field(default=1, ge=1, le=10_000)
    event_type: str | None = Field(
        default=None, description='only deliveries of this event type (e.g. "generation.completed")'
    )
    probability: float = Field(
        default=1.0, gt=0, le=1, description="the share of matching deliveries it fires on (seeded)"
    )
    seconds: float = Field(default=1.0, ge=0, le=3600, description="delay: how long the first request waits")
    hold_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="out_of_order: the longest a delivery is held while the group fills",
    )
    id: str | None = Field(default=None, description="set by the emulator when the rule is added")

    @field_validator("event_type")
    @classmethod
    def _known_event_type(cls, value: str | None) -> str | None:
        if value is not None and (value == ALL_EVENTS or value not in EVENT_TYPES):
            names = ", ".join(name for name in EVENT_TYPES if name != ALL_EVENTS)
            raise ValueError(f"event_type must be one event name ({names}), or left out for any")
        return value

    def matches(self, event_type: str) -> bool:
        """True when this rule applies to a delivery of ``event_type``."""
        return self.event_type is None or self.event_type == event_type
