"""Following a listing's pagination tokens to the end, the one way every listing of the client does.

Scenario's listings may return short, even empty pages while a token remains: only a missing token
ends a listing. A token the server already returned would loop forever, and stopping quietly
could make a caller believe an item does not exist (a reconciliation that then pays again), so it
is an error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

import httpx

from prefect_scenario.errors import ScenarioAPIError

T = TypeVar("T")


async def every_page_item(
    fetch: Callable[[str | None], Awaitable[httpx.Response]],
    read: Callable[[httpx.Response], tuple[Sequence[T], str | None]],
    what: str,
) -> AsyncIterator[T]:
    """Every item of a paginated listing, in the server's order.

    Args:
        fetch: sends the request for one page, given its pagination token (None: the first page).
        read: the page's items and its next token (None or empty: the last page).
        what: the listing as the error names it (``GET /jobs``).

    Raises:
        ScenarioAPIError: the server returned a token it had already returned.
    """
    seen: set[str] = set()
    token: str | None = None
    while True:
        response = await fetch(token)
        items, token = read(response)
        for item in items:
            yield item
        if not token:
            return
        if token in seen:
            raise ScenarioAPIError(
                f"{what} returned a pagination token it had already returned",
                status_code=response.status_code,
                method="GET",
                url=str(response.request.url.copy_with(query=None)),
            )
        seen.add(token)


__all__ = ["every_page_item"]
