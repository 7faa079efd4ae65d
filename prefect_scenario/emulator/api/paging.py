"""Cursor pagination of ``GET /v1/jobs`` and of a webhook endpoint's events, short pages included.

The token is opaque to clients (base64 of a small JSON): the sort key of the last job served (its
date, then its creation number for jobs of the same millisecond), and the page number. Keyset
paging (rather than offsets) means jobs created while a client pages do not shift the pages
under it.

Short pages: the API documents that a page may hold fewer than ``pageSize`` jobs, even none, while
``nextPaginationToken`` is still present. With ``short_pages`` on (the default), the emulator
does that on every listing, deterministically: each page holds ``ceil(pageSize / 2)`` jobs, and
the second page is empty (with a token) whenever more jobs remain. With it off, pages are full and
only the last one is short. Either way a token is present exactly when more jobs remain.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from prefect_scenario.emulator.api.errors import bad_request

T = TypeVar("T")

EMPTY_PAGE_INDEX = 1
MIN_PAGE_SIZE, MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE = 1, 100, 50


@dataclass(frozen=True)
class Cursor:
    """Where the previous page stopped."""

    sort_value: float | None
    tie_break: int | None
    page: int


def encode(cursor: Cursor) -> str:
    """The opaque token of ``cursor``."""
    raw = json.dumps({"v": cursor.sort_value, "t": cursor.tie_break, "p": cursor.page}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(token: str | None) -> Cursor:
    """The cursor of a token (the start when None).

    Raises:
        ApiError: 400 for a token the emulator did not issue.
    """
    if not token:
        return Cursor(sort_value=None, tie_break=None, page=0)
    try:
        padded = token + "=" * (-len(token) % 4)
        data: Any = json.loads(base64.urlsafe_b64decode(padded.encode()))
        sort_value = data["v"]
        return Cursor(
            sort_value=float(sort_value) if sort_value is not None else None,
            tie_break=int(data["t"]) if data["t"] is not None else None,
            page=int(data["p"]),
        )
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise bad_request("Invalid paginationToken", field="paginationToken") from exc


def parse_page_size(text: str | None) -> int:
    """The ``pageSize`` query (1..100, 50 when absent).

    Raises:
        ApiError: 400 naming ``pageSize`` for anything else.
    """
    if text is None:
        return DEFAULT_PAGE_SIZE
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not MIN_PAGE_SIZE <= value <= MAX_PAGE_SIZE:
        raise bad_request(
            f"Invalid pageSize {text}: expected an integer from {MIN_PAGE_SIZE} to {MAX_PAGE_SIZE}",
            field="pageSize",
        )
    return value


def page_size_for(page: int, page_size: int, short_pages: bool) -> int:
    """How many items page number ``page`` holds."""
    if not short_pages:
        return page_size
    if page == EMPTY_PAGE_INDEX:
        return 0
    return max(1, math.ceil(page_size / 2))


def paginate(
    items: Sequence[T],
    key: Callable[[T], tuple[float, int]],
    *,
    token: str | None,
    page_size: int,
    short_pages: bool,
) -> tuple[list[T], str | None]:
    """One page of ``items`` (newest first by ``key``) and the token of the next, if any remain."""
    cursor = decode(token)
    ordered = sorted(items, key=key, reverse=True)
    if cursor.sort_value is not None and cursor.tie_break is not None:
        last = (cursor.sort_value, cursor.tie_break)
        ordered = [item for item in ordered if key(item) < last]
    size = page_size_for(cursor.page, page_size, short_pages)
    page = ordered[:size]
    if len(ordered) <= size:
        return page, None
    if page:
        sort_value, tie_break = key(page[-1])
        next_cursor = Cursor(sort_value=sort_value, tie_break=tie_break, page=cursor.page + 1)
    else:
        next_cursor = Cursor(sort_value=cursor.sort_value, tie_break=cursor.tie_break, page=cursor.page + 1)
    return page, encode(next_cursor)
