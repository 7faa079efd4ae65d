"""How a webhook delivery proves it came from Scenario: pluggable signature schemes.

Scenario documents that each endpoint has a secret "used to generate webhook signatures", and
nothing more: not the header, not the algorithm (scenario-api.md 8.2). The default here,
:class:`StandardWebhooks`, is therefore **inferred**, not confirmed: it is the Standard Webhooks
scheme (https://www.standardwebhooks.com), which the secret's ``whsec_`` shape suggests and which
most webhook senders use. :class:`HmacSha256Hex` is the other common shape (a hex HMAC of the raw
body). Both implement :class:`SignatureScheme`; pass another implementation to the receiver when
Scenario's real scheme turns out to differ, or pick one by name (:func:`scheme_named`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from pydantic import SecretStr

from prefect_scenario.errors import ScenarioConfigError, ScenarioError

MISSING_HEADERS = "missing signature headers"
MALFORMED_HEADERS = "malformed signature headers"
MISMATCH = "signature does not match"
STALE = "timestamp outside tolerance"

DEFAULT_TOLERANCE_SECONDS = 300.0


class SignatureError(ScenarioError):
    """A delivery whose signature cannot be trusted; ``reason`` is short and safe to answer with.

    The message is one of :data:`MISSING_HEADERS`, :data:`MALFORMED_HEADERS`, :data:`MISMATCH`
    and :data:`STALE`: never a secret, an expected signature or a header's value.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@runtime_checkable
class SignatureScheme(Protocol):
    """Verifies that a delivery was signed with the endpoint's secret.

    ``headers`` is read case-insensitively by the implementations here (give lower-case names or
    Starlette's ``Headers``); ``body`` is the raw request body, exactly as received.
    """

    name: str

    def check_secret(self, secret: SecretStr) -> None:
        """Raises :class:`ScenarioConfigError` when ``secret`` cannot key this scheme (checked at start)."""
        ...

    def verify(self, headers: Mapping[str, str], body: bytes, secret: SecretStr) -> str | None:
        """Returns the delivery id the signed headers carry (None if the scheme has none).

        Raises:
            SignatureError: the delivery is unsigned, forged, or too old (or from the future).
        """
        ...


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


class StandardWebhooks:
    """Standard Webhooks signatures (the inferred default for Scenario).

    Headers ``webhook-id``, ``webhook-timestamp`` (unix seconds) and ``webhook-signature``
    (space-separated ``v1,<base64>`` entries: key rotation may send several, one match is enough).
    The signature is HMAC-SHA256 over ``f"{id}.{timestamp}."`` + the raw body, keyed with the
    base64-decoded secret after its ``whsec_`` prefix. A timestamp more than ``tolerance_seconds``
    away from now, in either direction, is refused: a captured delivery cannot be replayed later.

    Args:
        tolerance_seconds: how far a delivery's timestamp may be from now, both ways.
        clock: wall clock in unix seconds (tests pass a fixed one).

    Example:
        ```python
        scheme = StandardWebhooks(tolerance_seconds=300)
        delivery_id = scheme.verify(request.headers, await request.body(), secret)
        ```
    """

    name = "standard-webhooks"
    id_header = "webhook-id"
    timestamp_header = "webhook-timestamp"
    signature_header = "webhook-signature"

    def __init__(
        self, tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS, *, clock: Callable[[], float] = time.time
    ) -> None:
        if tolerance_seconds < 0:
            raise ValueError("tolerance_seconds must be 0 or more")
        self.tolerance_seconds = tolerance_seconds
        self._clock = clock

    @staticmethod
    def key(secret: SecretStr) -> bytes:
        """The HMAC key of a ``whsec_<base64>`` secret.

        Example:
            ```python
            key = StandardWebhooks.key(SecretStr("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
            ```

        Raises:
            ScenarioConfigError: the secret (after ``whsec_``) is not base64.
        """
        encoded = secret.get_secret_value().removeprefix("whsec_")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not key:
            # Never the secret itself in the message.
            raise ScenarioConfigError(
                "the webhook secret is not a Standard Webhooks secret (whsec_ followed by base64): "
                "choose the signature scheme that matches it (--scheme hmac-sha256-hex, for one)"
            ) from None
        return key

    def check_secret(self, secret: SecretStr) -> None:
        """Raises :class:`ScenarioConfigError` when ``secret`` is not ``whsec_`` + base64.

        Example:
            ```python
            StandardWebhooks().check_secret(secret)  # at start, before serving
            ```
        """
        self.key(secret)

    def signature(self, secret: SecretStr, delivery_id: str, timestamp: int, body: bytes) -> str:
        """The ``v1,<base64>`` entry a sender would put in ``webhook-signature``.

        Example:
            ```python
            entry = StandardWebhooks().signature(secret, "msg_1", int(time.time()), body)
            ```
        """
        signed = f"{delivery_id}.{timestamp}.".encode() + body
        digest = hmac.new(self.key(secret), signed, hashlib.sha256).digest()
        return "v1," + base64.b64encode(digest).decode("ascii")

    def sign(
        self, secret: SecretStr, body: bytes, *, delivery_id: str, timestamp: int | None = None
    ) -> dict[str, str]:
        """The three headers of a delivery of ``body``: for tests and for senders of test deliveries.

        Example:
            ```python
            headers = StandardWebhooks().sign(secret, body, delivery_id="msg_1")
            httpx.post("http://127.0.0.1:8788/", content=body, headers=headers)
            ```
        """
        moment = int(self._clock()) if timestamp is None else timestamp
        return {
            self.id_header: delivery_id,
            self.timestamp_header: str(moment),
            self.signature_header: self.signature(secret, delivery_id, moment, body),
        }

    def verify(self, headers: Mapping[str, str], body: bytes, secret: SecretStr) -> str | None:
        """Checks the timestamp, then the signature; returns the ``webhook-id``.

        Example:
            ```python
            delivery_id = StandardWebhooks().verify(request.headers, body, secret)
            ```

        Raises:
            SignatureError: headers missing or malformed, no entry matches, or a stale timestamp.
        """
        given = _lowered(headers)
        delivery_id = given.get(self.id_header, "").strip()
        raw_timestamp = given.get(self.timestamp_header, "").strip()
        raw_signatures = given.get(self.signature_header, "").strip()
        if not (delivery_id and raw_timestamp and raw_signatures):
            raise SignatureError(MISSING_HEADERS)
        try:
            timestamp = int(raw_timestamp)
        except ValueError:
            raise SignatureError(MALFORMED_HEADERS) from None
        if abs(self._clock() - timestamp) > self.tolerance_seconds:
            raise SignatureError(STALE)
        expected = base64.b64decode(self.signature(secret, delivery_id, timestamp, body).split(",", 1)[1])
        matched = False
        for entry in raw_signatures.split():
            version, _, encoded = entry.partition(",")
            if version != "v1":
                continue  # v1a (asymmetric) and future versions: not ours to check
            try:
                candidate = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                continue
            # Every entry is compared, matched or not, so timing says nothing about which one did.
            matched |= hmac.compare_digest(candidate, expected)
        if not matched:
            raise SignatureError(MISMATCH)
        return delivery_id

    def __repr__(self) -> str:
        return f"StandardWebhooks(tolerance_seconds={self.tolerance_seconds:g})"


class HmacSha256Hex:
    """A hex HMAC-SHA256 of the raw body in ``x-scenario-signature``, keyed with the secret's UTF-8 bytes.

    The other common shape of webhook signatures, and the proof that the scheme is pluggable.
    It signs no timestamp, so a captured delivery could be replayed: the receiver's de-duplication
    by the payload's ``id`` is then the only defence, and it lasts as long as its memory.

    Example:
        ```python
        app = create_webhook_app(secret, on_job_hint, scheme=HmacSha256Hex())
        ```
    """

    name = "hmac-sha256-hex"
    signature_header = "x-scenario-signature"

    def check_secret(self, secret: SecretStr) -> None:
        """Raises :class:`ScenarioConfigError` for an empty secret.

        Example:
            ```python
            HmacSha256Hex().check_secret(secret)
            ```
        """
        if not secret.get_secret_value():
            raise ScenarioConfigError("the webhook secret is empty")

    def signature(self, secret: SecretStr, body: bytes) -> str:
        """The hex digest a sender would put in ``x-scenario-signature``.

        Example:
            ```python
            headers = {"x-scenario-signature": HmacSha256Hex().signature(secret, body)}
            ```
        """
        return hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()

    def verify(self, headers: Mapping[str, str], body: bytes, secret: SecretStr) -> str | None:
        """Checks the hex signature; returns None (the delivery id is the payload's ``id``).

        Example:
            ```python
            HmacSha256Hex().verify(request.headers, body, secret)
            ```

        Raises:
            SignatureError: no signature header, or it does not match.
        """
        given = _lowered(headers).get(self.signature_header, "").strip().lower()
        if not given:
            raise SignatureError(MISSING_HEADERS)
        if not hmac.compare_digest(given.encode(), self.signature(secret, body).encode()):
            raise SignatureError(MISMATCH)
        return None

    def __repr__(self) -> str:
        return "HmacSha256Hex()"


SCHEME_NAMES: tuple[str, ...] = (StandardWebhooks.name, HmacSha256Hex.name)


def scheme_named(name: str, *, tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS) -> SignatureScheme:
    """The scheme called ``name`` (for a CLI option): ``standard-webhooks`` or ``hmac-sha256-hex``.

    Example:
        ```python
        scheme = scheme_named("standard-webhooks", tolerance_seconds=120)
        ```

    Raises:
        ScenarioConfigError: no scheme has that name (the message lists them).
    """
    if name == StandardWebhooks.name:
        return StandardWebhooks(tolerance_seconds)
    if name == HmacSha256Hex.name:
        return HmacSha256Hex()
    raise ScenarioConfigError(
        f"no webhook signature scheme named {name!r}: choose one of {', '.join(SCHEME_NAMES)}"
    )
