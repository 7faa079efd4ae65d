"""Jobs: pagination through short and empty pages, cancel, and wait()."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from prefect_scenario.errors import BadRequestError, JobWaitTimeoutError, NotFoundError, ScenarioAPIError
from prefect_scenario.models import Job, JobStatus

from .conftest import FakeTime, iso, job_payload


def paged(pages: dict[str | None, tuple[list[str], str | None]], log: list[httpx.Request]) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        log.append(request)
        ids, token = pages[request.url.params.get("paginationToken")]
        body: dict[str, Any] = {"jobs": [job_payload(job_id) for job_id in ids]}
        if token is not None:
            body["nextPaginationToken"] = token
        return httpx.Response(200, json=body)

    return handler


async def test_list_follows_tokens_through_short_and_empty_pages(make_client: Any) -> None:
    log: list[httpx.Request] = []
    pages = {
        None: (["job_a", "job_b"], "t1"),
        "t1": ([], "t2"),  # empty while a token remains: keep going
        "t2": (["job_c"], "t3"),
        "t3": ([], None),
    }
    since = datetime(2026, 1, 10, 9, 0, 0, 120000, tzinfo=UTC)
    async with make_client(paged(pages, log)) as client:
        jobs = [job async for job in client.jobs.list(type="custom", updated_after=since, page_size=2)]
    assert [job.job_id for job in jobs] == ["job_a", "job_b", "job_c"]
    assert len(log) == 4
    first = log[0].url.params
    assert first["type"] == "custom"
    assert first["pageSize"] == "2"
    assert first["updatedAfter"] == "2026-01-10T09:00:00.120Z"
    assert "paginationToken" not in first
    assert [request.url.params.get("paginationToken") for request in log[1:]] == ["t1", "t2", "t3"]


async def test_list_types_are_comma_joined(make_client: Any) -> None:
    log: list[httpx.Request] = []
    async with make_client(paged({None: ([], None)}, log)) as client:
        assert [
            job async for job in client.jobs.list(types=["custom", "upload"], status=JobStatus.SUCCESS)
        ] == []
    assert log[0].url.params["types"] == "custom,upload"
    assert log[0].url.params["status"] == "success"


async def test_list_refuses_a_repeated_token(make_client: Any) -> None:
    log: list[httpx.Request] = []
    async with make_client(paged({None: (["job_a"], "t1"), "t1": ([], "t1")}, log)) as client:
        with pytest.raises(ScenarioAPIError, match="pagination token"):
            _ = [job async for job in client.jobs.list()]


async def test_cancel_of_a_custom_job_surfaces_the_400(make_client: Any) -> None:
    log: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        log.append(request)
        return httpx.Response(400, json={"reason": "Cannot cancel this type of job"})

    async with make_client(handler) as client:
        with pytest.raises(BadRequestError, match="Cannot cancel this type of job"):
            await client.jobs.cancel("job_1")
    assert log[0].method == "POST"
    assert log[0].url.path == "/v1/jobs/job_1/action"
    assert log[0].content == b'{"action":"cancel"}'


def lifecycle(fake_time: FakeTime, *, duration: float, end: str = "success", **extra: Any) -> Any:
    """A job running from t=0 to ``duration`` on the fake clock, with linear progress."""

    def handler(request: httpx.Request) -> httpx.Response:
        now = fake_time.now
        history = [("pending", iso(0)), ("queued", iso(0.1)), ("in-progress", iso(0.5))]
        if now >= duration:
            history.append((end, iso(duration)))
            payload = job_payload(
                status=end, progress=1.0 if end == "success" else 0.4, history=history, **extra
            )
        else:
            progress = max(0.0, (now - 0.5) / (duration - 0.5))
            payload = job_payload(status="in-progress", progress=round(progress, 4), history=history)
        return httpx.Response(200, json={"job": payload})

    return handler


async def test_wait_returns_a_failed_job_without_raising(make_client: Any, fake_time: FakeTime) -> None:
    handler = lifecycle(fake_time, duration=20, end="failure", error="GPU lost", hint="retry later")
    async with make_client(handler) as client:
        job = await client.jobs.wait("job_1", clock=fake_time.clock, sleep=fake_time.sleep)
    assert job.status is JobStatus.FAILURE
    assert job.metadata.error == "GPU lost"
    assert job.metadata.hint == "retry later"


async def test_wait_returns_a_canceled_job(make_client: Any, fake_time: FakeTime) -> None:
    async with make_client(lifecycle(fake_time, duration=5, end="canceled")) as client:
        job = await client.jobs.wait("job_1", clock=fake_time.clock, sleep=fake_time.sleep)
    assert job.status is JobStatus.CANCELED


async def test_wait_deadline_raises_and_says_the_job_goes_on(make_client: Any, fake_time: FakeTime) -> None:
    log: list[float] = []
    handler = lifecycle(fake_time, duration=3600)

    def logged(request: httpx.Request) -> httpx.Response:
        log.append(fake_time.now)
        return handler(request)  # type: ignore[no-any-return]

    async with make_client(logged) as client:
        with pytest.raises(JobWaitTimeoutError) as caught:
            await client.jobs.wait("job_1", timeout_seconds=120, clock=fake_time.clock, sleep=fake_time.sleep)
    assert caught.value.job_id == "job_1"
    assert caught.value.last_status == "in-progress"
    assert "goes on on the server" in str(caught.value)
    assert log[-1] == pytest.approx(120)  # a last poll exactly at the deadline
    assert fake_time.now == pytest.approx(120)


async def test_wait_retries_a_404_right_after_the_submit(make_client: Any, fake_time: FakeTime) -> None:
    answers = [httpx.Response(404, json={"reason": "Job job_1 not found"})] * 2

    def handler(request: httpx.Request) -> httpx.Response:
        if answers:
            return answers.pop()
        return httpx.Response(200, json={"job": job_payload(status="success", progress=1)})

    async with make_client(handler) as client:
        job = await client.jobs.wait("job_1", clock=fake_time.clock, sleep=fake_time.sleep)
    assert job.status is JobStatus.SUCCESS
    assert fake_time.sleeps == [1.0, 2.0]


async def test_wait_believes_a_404_that_lasts(make_client: Any, fake_time: FakeTime) -> None:
    async with make_client(
        lambda request: httpx.Response(404, json={"reason": "Job job_1 not found"})
    ) as client:
        with pytest.raises(NotFoundError):
            await client.jobs.wait("job_1", clock=fake_time.clock, sleep=fake_time.sleep)
    assert len(fake_time.sleeps) == 3


async def test_wait_polls_through_transient_errors(make_client: Any, fake_time: FakeTime) -> None:
    handler = lifecycle(fake_time, duration=30)
    failures = [httpx.Response(503, headers={"retry-after": "1"}), httpx.Response(502)]

    def flaky(request: httpx.Request) -> httpx.Response:
        if fake_time.now > 10 and failures:
            return failures.pop(0)
        return handler(request)  # type: ignore[no-any-return]

    async with make_client(flaky) as client:
        job = await client.jobs.wait("job_1", clock=fake_time.clock, sleep=fake_time.sleep)
    assert job.status is JobStatus.SUCCESS
    assert not failures


async def test_on_update_called_on_each_change(make_client: Any, fake_time: FakeTime) -> None:
    states = [
        ("queued", 0.0),
        ("queued", 0.0),
        ("in-progress", 0.2),
        ("in-progress", 0.2),
        ("in-progress", 0.7),
        ("success", 1.0),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        status, progress = states.pop(0)
        return httpx.Response(200, json={"job": job_payload(status=status, progress=progress)})

    seen_sync: list[tuple[str, float]] = []
    seen_async: list[str] = []

    async def record_async(job: Job) -> None:
        seen_async.append(job.status.value)

    async with make_client(handler) as client:
        await client.jobs.wait(
            "job_1",
            on_update=lambda job: seen_sync.append((job.status.value, job.progress)),
            clock=fake_time.clock,
            sleep=fake_time.sleep,
        )
    assert seen_sync == [("queued", 0.0), ("in-progress", 0.2), ("in-progress", 0.7), ("success", 1.0)]

    states.extend([("queued", 0.0), ("success", 1.0)])
    async with make_client(handler) as client:
        await client.jobs.wait("job_1", on_update=record_async, clock=fake_time.clock, sleep=fake_time.sleep)
    assert seen_async == ["queued", "success"]
