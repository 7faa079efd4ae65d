"""Identifiers in the API's current form: a prefix and 24 base58 characters."""

from __future__ import annotations

import secrets

# Bitcoin's base58 alphabet: no 0, O, I or l, as in the ids the live API hands out.
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
ID_LENGTH = 24


def new_id(prefix: str) -> str:
    """A fresh id such as ``job_7QxVn3pRk2HsWd9YbLmT4cFa`` (``prefix`` includes its ``_``)."""
    return prefix + "".join(secrets.choice(BASE58) for _ in range(ID_LENGTH))


def new_trace_id() -> str:
    """A trace id for one error answer (32 hex characters, as tracing systems print them)."""
    return secrets.token_hex(16)
