"""Fault rules: what the control plane asked to go wrong, held by the state until they fire.

Every rule names a route by its template, as counted in ``/_emulator/stats``
(``"POST /v1/generate/custom/{modelId}"``, ``"GET /files/{assetId}"``, ...) or ``"*"`` for any
route outside the control plane, and fires on the next ``count`` matching requests (each with
``probability``, drawn from the state's seeded generator).

Rules are posted to ``/_emulator/faults`` (:mod:`prefect_scenario.emulator.control.routes`); the
request-level kinds are carried out by :mod:`prefect_scenario.emulator.control.middleware`, and
``fail_job`` by the generate route when it creates a job.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

FaultKind = Literal["status", "reset", "reset_after_accept", "delay", "truncate", "fail_job"]
ANY_ROUTE = "*"


class FaultRule(BaseModel):
    """One fault: what to do to the next ``count`` requests of ``route``."""

    model_config = ConfigDict(extra="forbid")

    route: str = Field(description='"METHOD /template" as in /_emulator/stats, or "*"')
    kind: FaultKind
    count: int = Field(default=1, ge=1)
    probability: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="the share of matching requests it fires on (seeded: runs repeat); count still bounds it",
    )
    status: int = Field(default=503, ge=400, le=599, description="status: the HTTP status to answer")
    retry_after: float | None = Field(default=None, ge=0, description="status: a Retry-After header")
    reason: str | None = Field(default=None, description="status: the error body's reason")
    details: dict[str, Any] | None = Field(default=None, description="status: the error body's details")
    seconds: float = Field(default=1.0, ge=0, le=600, description="delay: seconds before answering")
    complete_after_disconnect: bool | None = Field(
        default=None,
        description=(
            "delay: do the work even if the client left during the delay (default: true for every "
            "method but GET and HEAD); false abandons a request whose client is gone"
        ),
    )
    keep_fraction: float = Field(
        default=0.5, ge=0, lt=1, description="truncate: share of the announced body actually sent"
    )
    error: str | None = Field(default=None, description="fail_job: the job's metadata.error")
    hint: str | None = Field(default=None, description="fail_job: the job's metadata.hint")

    @field_validator("route")
    @classmethod
    def _normalise_route(cls, value: str) -> str:
        value = " ".join(value.split())
        if value == ANY_ROUTE:
            return value
        method, _, path = value.partition(" ")
        if not path.startswith("/"):
            raise ValueError('route must look like "GET /v1/jobs/{jobId}" (method, space, path template)')
        return f"{method.upper()} {path}"

    def matches(self, route_key: str) -> bool:
        """True when this rule applies to requests of ``route_key``."""
        return self.route in (ANY_ROUTE, route_key)
