"""Scenario webhooks: verify deliveries, turn them into job hints, register the endpoint.

* :mod:`.signatures`: pluggable signature schemes. Scenario does not document its scheme; the
  default (Standard Webhooks) is inferred, and another can be chosen or supplied.
* :mod:`.receiver`: ``create_webhook_app``, an ASGI app (mountable) that answers 401 to forged or
  stale deliveries, de-duplicates by delivery id, and awaits a callback with a :class:`JobHint`.
* :mod:`.register`: creates the endpoint at Scenario and stores its once-shown secret in a
  Prefect ``Secret`` block; loads it back.

Uses the client, the blocks and Prefect; below the flows and the CLI.
"""

from __future__ import annotations

from .receiver import JobHint, OnJobHint, SeenDeliveries, create_webhook_app, event_type_of, job_id_of
from .register import (
    DEFAULT_SECRET_BLOCK,
    WebhookSecretNotStoredError,
    checked_secret_block_name,
    load_webhook_secret,
    register_webhook_endpoint,
)
from .signatures import (
    SCHEME_NAMES,
    HmacSha256Hex,
    SignatureError,
    SignatureScheme,
    StandardWebhooks,
    scheme_named,
)

__all__ = [
    "DEFAULT_SECRET_BLOCK",
    "SCHEME_NAMES",
    "HmacSha256Hex",
    "JobHint",
    "OnJobHint",
    "SeenDeliveries",
    "SignatureError",
    "SignatureScheme",
    "StandardWebhooks",
    "WebhookSecretNotStoredError",
    "checked_secret_block_name",
    "create_webhook_app",
    "event_type_of",
    "job_id_of",
    "load_webhook_secret",
    "register_webhook_endpoint",
    "scheme_named",
]
