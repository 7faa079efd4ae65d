"""``GET /v1/jobs``: filters, their rules, sorting and cursor pages (short ones included)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from prefect_scenario.emulator import EmulatorState
from prefect_scenario.emulator.service.clock import iso_utc
from prefect_scenario.models import VIDEO_LAYERS_MODEL_ID
from support.wire import control, submit, upload_video


@pytest.fixture
async def jobs(asgi_client: httpx.AsyncClient, emulator_state: EmulatorState, sample_clip: Path) -> list[str]:
    """Five custom jobs (planned failures: no model work) plus the upload's job, newest last."""
    video_id = await upload_video(asgi_client, sample_clip)
    emulator_state.configure(failure_rate=1.0, job_seconds=0)
    created = []
    for index in range(5):
        body = {"video": video_id, "separationInstruction": f"split {index}"}
        created.append((await submit(asgi_client, VIDEO_LAYERS_MODEL_ID, body)).json()["job"]["jobId"])
        # The API's timestamps are to the millisecond: two jobs created within one would be one
        # instant to createdAfter (a fresh clone's run did submit two that fast).
        emulator_state.clock.advance(0.005)
    return created


async def all_pages(client: httpx.AsyncClient, **params: object) -> list[list[str]]:
    pages: list[list[str]] = []
    token = None
    while True:
        query = {**params, **({"paginationToken": token} if token else {})}
        response = await client.get("jobs", params=query)
        assert response.status_code == 200, response.text
        payload = response.json()
        pages.append([job["jobId"] for job in payload["jobs"]])
        token = payload.get("nextPaginationToken")
        if not token:
            return pages


async def test_short_pages_by_default_then_full_pages(
    asgi_client: httpx.AsyncClient, jobs: list[str]
) -> None:
    pages = await all_pages(asgi_client, pageSize=2, type="custom")
    assert pages == [[jobs[4]], [], [jobs[3]], [jobs[2]], [jobs[1]], [jobs[0]]]
    await control(asgi_client, "config", {"short_pages": False})
    pages = await all_pages(asgi_client, pageSize=2, type="custom")
    assert pages == [[jobs[4], jobs[3]], [jobs[2], jobs[1]], [jobs[0]]]


async def test_every_job_is_listed_once_sorted_newest_first(
    asgi_client: httpx.AsyncClient, jobs: list[str]
) -> None:
    listed = [job_id for page in await all_pages(asgi_client, pageSize=3) for job_id in page]
    assert len(listed) == len(set(listed)) == 6  # five custom jobs and the upload's job
    assert [job_id for job_id in listed if job_id in jobs] == list(reversed(jobs))


async def test_filters(
    asgi_client: httpx.AsyncClient, emulator_state: EmulatorState, jobs: list[str]
) -> None:
    async def ids(**params: object) -> set[str]:
        return {job_id for page in await all_pages(asgi_client, pageSize=100, **params) for job_id in page}

    assert await ids(status="failure") == set(jobs)
    assert await ids(status="success", type="custom") == set()
    assert len(await ids(types="custom,upload")) == 6
    assert len(await ids(type="upload")) == 1
    assert len(await ids(types="upload", type="custom")) == 1  # types overrides type
    first = emulator_state.jobs[jobs[2]]
    assert await ids(createdAfter=iso_utc(first.created_at)) == set(jobs[3:])
    assert await ids(type="custom", updatedAfter=iso_utc(first.updated_at)) == set(jobs[3:])


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"createdAfter": "2026-01-01T00:00:00Z", "status": "success"}, "createdAfter"),
        ({"createdAfter": "2026-01-01T00:00:00Z", "types": "custom"}, "createdAfter"),
        ({"updatedAfter": "2026-01-01T00:00:00Z"}, "updatedAfter"),
        ({"createdAfter": "yesterday"}, "createdAfter"),
        ({"pageSize": 0}, "pageSize"),
        ({"pageSize": 101}, "pageSize"),
        ({"pageSize": "ten"}, "pageSize"),
        ({"status": "done"}, "status"),
        ({"paginationToken": "not-a-token"}, "paginationToken"),
    ],
)
async def test_bad_list_queries_are_refused(
    asgi_client: httpx.AsyncClient, params: dict[str, object], field: str
) -> None:
    response = await asgi_client.get("jobs", params=params)
    assert response.status_code == 400
    assert response.json()["details"]["field"] == field
    assert field in response.json()["reason"]


async def test_an_unknown_job_is_404_with_the_api_reason(asgi_client: httpx.AsyncClient) -> None:
    response = await asgi_client.get("jobs/job_Unkn0wnUnkn0wnUnkn0wnUnkn")
    assert response.status_code == 404
    assert response.json()["reason"] == "Job job_Unkn0wnUnkn0wnUnkn0wnUnkn not found"
