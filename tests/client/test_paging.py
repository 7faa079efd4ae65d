"""``every_page_item``: short and empty pages are followed to the last token; a repeated token is an error."""

from __future__ import annotations

import httpx
import pytest

from prefect_scenario.client._paging import every_page_item
from prefect_scenario.errors import ScenarioAPIError


def _pages(pages: list[tuple[list[int], str | None]]) -> tuple[list[str | None], object, object]:
    asked: list[str | None] = []

    async def fetch(token: str | None) -> httpx.Response:
        asked.append(token)
        index = len(asked) - 1
        return httpx.Response(
            200, json={"index": index}, request=httpx.Request("GET", "https://api/v1/jobs?x=1")
        )

    def read(response: httpx.Response) -> tuple[list[int], str | None]:
        return pages[response.json()["index"]]

    return asked, fetch, read


async def test_short_and_empty_pages_are_followed_until_no_token() -> None:
    asked, fetch, read = _pages([([1, 2], "a"), ([], "b"), ([3], ""), ([99], None)])
    items = [item async for item in every_page_item(fetch, read, "GET /jobs")]  # type: ignore[arg-type]
    assert items == [1, 2, 3]
    assert asked == [None, "a", "b"]


async def test_a_repeated_token_raises_instead_of_looping_or_stopping_quietly() -> None:
    asked, fetch, read = _pages([([1], "a"), ([2], "b"), ([3], "a"), ([4], None)])
    seen: list[int] = []

    async def drain() -> None:
        async for item in every_page_item(fetch, read, "GET /jobs"):  # type: ignore[arg-type]
            seen.append(item)

    with pytest.raises(ScenarioAPIError, match="returned a pagination token it had already returned"):
        await drain()
    assert seen == [1, 2, 3]
    assert asked == [None, "a", "b"]
