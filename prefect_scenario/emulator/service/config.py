"""The emulator's settings, changeable at run time through ``POST /_emulator/config``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from prefect_scenario.emulator.service.webhooks.signing import SignatureScheme

# Credentials are fixed when the emulator starts: the control plane has no auth, so letting it
# swap them would make "started with specific credentials" meaningless.
FIXED_AT_START = frozenset({"api_key", "api_secret", "bearer_token"})


class EmulatorConfig(BaseModel):
    """How the emulator behaves. Every field but the credentials can change while it runs."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    job_seconds: float = Field(default=2.0, ge=0, description="how long a generation job takes")
    queue_seconds: float = Field(
        default=0.2, ge=0, description="how long a new job stays queued (at most a quarter of job_seconds)"
    )
    asset_url_ttl_seconds: float = Field(default=60.0, gt=0, description="lifetime of signed file URLs")
    part_url_ttl_seconds: float = Field(default=900.0, gt=0, description="lifetime of presigned part URLs")
    concurrency_ceiling: int | None = Field(
        default=None, ge=1, description="parallel custom jobs a team may run; None = no ceiling"
    )
    failure_rate: float = Field(default=0.0, ge=0, le=1, description="share of jobs that end in failure")
    seed: int = Field(default=0, description="seed of the RNG behind failure_rate")
    allow_cancel: bool = Field(default=False, description="let custom jobs be canceled (the API refuses)")
    short_pages: bool = Field(
        default=True, description="GET /jobs returns half pages and one empty page while a token remains"
    )
    owner_id: str = Field(default="proj_EmuLatorProject1234567", description="ownerId of everything")
    author_id: str = Field(default="user_EmuLatorAuthor12345678", description="authorId of everything")
    max_workers: int = Field(default=2, ge=1, description="threads running the fake models")
    webhook_signature_scheme: SignatureScheme = Field(
        default="standard-webhooks",
        description="how deliveries are signed: standard-webhooks, hmac-sha256-hex or none (all inferred)",
    )
    webhook_max_attempts: int = Field(
        default=5, ge=1, le=100, description="requests per delivery before it is failed (retries included)"
    )
    webhook_retry_seconds: float = Field(
        default=0.5, ge=0, description="wait before a delivery's first retry (emulator clock)"
    )
    webhook_retry_factor: float = Field(
        default=2.0, ge=1, description="each further retry waits this many times longer than the last"
    )
    webhook_timeout_seconds: float = Field(
        default=5.0, gt=0, le=300, description="how long a receiver has to answer one request"
    )
    api_key: SecretStr | None = Field(default=None, description="the only API key accepted (None = any)")
    api_secret: SecretStr | None = Field(default=None, description="the only API secret accepted")
    bearer_token: SecretStr | None = Field(default=None, description="the only bearer token accepted")

    def public_view(self) -> dict[str, Any]:
        """The settings as JSON, with credentials reduced to whether they are set."""
        view = self.model_dump(mode="json", exclude=set(FIXED_AT_START))
        view["credentials_fixed"] = any(getattr(self, name) is not None for name in FIXED_AT_START)
        return view

    def updated(self, changes: dict[str, Any]) -> EmulatorConfig:
        """A copy with ``changes`` applied and validated.

        Raises:
            ValueError: an unknown or fixed setting, or a value out of range.
        """
        fixed = FIXED_AT_START.intersection(changes)
        if fixed:
            raise ValueError(f"{', '.join(sorted(fixed))} can only be set when the emulator starts")
        current = self.model_dump()
        return EmulatorConfig.model_validate({**current, **changes})
