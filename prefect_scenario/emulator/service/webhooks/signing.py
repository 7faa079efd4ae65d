"""Endpoint secrets and the signature schemes a delivery can be signed with.

Scenario's real scheme is NOT documented (scenario-api.md 8.2): the only fact is that the
endpoint's secret "is used to generate webhook signatures". The schemes here are inferred and
pluggable (``EmulatorConfig.webhook_signature_scheme``):

* ``standard-webhooks`` (default), the Standard Webhooks spec: ``webhook-id``,
  ``webhook-timestamp`` (unix seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256>`` of
  ``"{id}.{timestamp}.{body}"``, keyed by the base64-decoded part of the secret after ``whsec_``;
* ``hmac-sha256-hex``, the GitHub style: ``x-scenario-signature: <hex HMAC-SHA256 of the body>``,
  keyed by the whole secret string's UTF-8 bytes (``whsec_`` included);
* ``none``: no signature headers at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Literal, get_args

SignatureScheme = Literal["standard-webhooks", "hmac-sha256-hex", "none"]
SIGNATURE_SCHEMES: tuple[str, ...] = get_args(SignatureScheme)
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
HEX_SIGNATURE_HEADER = "x-scenario-signature"


def new_secret() -> str:
    """A fresh endpoint secret: ``whsec_`` and the base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: the base64 after the ``whsec_`` prefix, decoded."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def standard_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(standard_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def hex_signature(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the body, keyed by the secret string's UTF-8 bytes."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_headers(
    scheme: SignatureScheme, secret: str, message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The headers that sign one request of a delivery under ``scheme``.

    Args:
        scheme: one of :data:`SIGNATURE_SCHEMES`.
        secret: the endpoint's secret (or a wrong one, for the ``bad_signature`` fault).
        message_id: the delivery's id (``webhook-id``, also the body's ``id``).
        timestamp: unix seconds, wall clock (``webhook-timestamp``).
        body: the exact bytes sent.
    """
    if scheme == "standard-webhooks":
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": standard_signature(secret, message_id, timestamp, body),
        }
    if scheme == "hmac-sha256-hex":
        return {HEX_SIGNATURE_HEADER: hex_signature(secret, body)}
    return {}
