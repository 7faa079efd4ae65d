"""Authentication of ``/v1``: ``Basic base64(key:secret)`` or ``Bearer <token>``.

Any non-empty key and secret (or bearer token) pass unless the emulator was started with specific
credentials. ``X-Stainless-*`` and other unknown headers are ignored. Presigned part URLs and
signed file URLs are outside ``/v1`` and carry their signature in the query instead.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from fastapi import Request
from pydantic import SecretStr

from prefect_scenario.emulator.api.errors import ApiError
from prefect_scenario.emulator.service.config import EmulatorConfig

# The literal value the API accepts for public resources (models, public assets).
PUBLIC_AUTH_TOKEN = "public-auth-token"


def _same(given: str, expected: SecretStr | None) -> bool:
    if expected is None:
        return bool(given)
    return hmac.compare_digest(given.encode(), expected.get_secret_value().encode())


def credentials_accepted(header: str | None, config: EmulatorConfig, *, public: bool = False) -> bool:
    """True when the ``Authorization`` header value passes under ``config``.

    Args:
        header: the header value, or None when absent.
        config: the emulator settings holding the accepted credentials.
        public: the resource is public, so ``public-auth-token`` passes too.
    """
    if not header:
        return False
    if public and header.strip() == PUBLIC_AUTH_TOKEN:
        return True
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        key, sep, secret = decoded.partition(":")
        if not sep or not key or not secret:
            return False
        return _same(key, config.api_key) and _same(secret, config.api_secret)
    if scheme.lower() == "bearer":
        fixed = config.api_key is not None or config.api_secret is not None
        if config.bearer_token is None and fixed:
            # Started with a specific key/secret and no token: a made-up token must not pass.
            return False
        return _same(value, config.bearer_token)
    return False


def require_auth(request: Request) -> None:
    """FastAPI dependency of every ``/v1`` route: 401 in the API's error shape when refused."""
    state = request.app.state.emulator
    public = request.method == "GET" and request.url.path.startswith("/v1/models/")
    if not credentials_accepted(request.headers.get("authorization"), state.config, public=public):
        raise ApiError(
            401,
            "Unauthorized: send 'Authorization: Basic base64(<API key>:<API secret>)' or a Bearer token",
            headers={"WWW-Authenticate": 'Basic realm="Scenario API"'},
        )
