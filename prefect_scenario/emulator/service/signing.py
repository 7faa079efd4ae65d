"""Signed URLs: ``?expires=<epoch>&signature=<hmac>``, checked against the emulator clock.

They stand for the API's CDN URLs (asset files) and presigned S3 URLs (upload parts): no auth
header needed, the query carries the proof, and they stop working when they expire.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode


def signature(key: bytes, method: str, path: str, expires: int) -> str:
    """HMAC-SHA256 of the method, path and expiry."""
    message = f"{method.upper()}\n{path}\n{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign_url(key: bytes, method: str, root: str, path: str, expires: int) -> str:
    """The full signed URL of ``path`` under ``root``, valid until ``expires`` (epoch seconds)."""
    query = urlencode({"expires": expires, "signature": signature(key, method, path, expires)})
    return f"{root}{path}?{query}"


def check(key: bytes, method: str, path: str, expires: str | None, sig: str | None, now: float) -> str | None:
    """Why a signed request is refused, or None when it is valid."""
    if not expires or not sig:
        return "Missing signature: this URL must carry 'expires' and 'signature' query parameters"
    try:
        expires_at = int(expires)
    except ValueError:
        return "Malformed 'expires' query parameter"
    if not hmac.compare_digest(signature(key, method, path, expires_at), sig):
        return "Signature does not match: never modify a signed URL's query"
    if now >= expires_at:
        return "Request has expired: get a fresh URL (GET the asset again, or create a new upload)"
    return None
