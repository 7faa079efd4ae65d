"""The one retry layer (bounded, honouring Retry-After) and the mapping of errors to the tree."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from prefect_scenario.client import RetryPolicy
from prefect_scenario.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ScenarioAPIError,
    ScenarioConfigError,
    ScenarioTransportError,
    ServerError,
)

from .conftest import FakeTime, job_payload

OK = {"job": job_payload()}


def scripted(
    *answers: httpx.Response | type[Exception], log: list[httpx.Request] | None = None
) -> Callable[..., Any]:
    """A handler answering from a script, then 200 OK for ever."""
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        if log is not None:
            log.append(request)
        answer = queue.pop(0) if queue else httpx.Response(200, json=OK)
        if isinstance(answer, type):
            raise answer("scripted failure", request=request)  # type: ignore[call-arg]
        return answer

    return handler


async def test_5xx_retried_with_exponential_backoff_and_jitter(make_client: Any, fake_time: FakeTime) -> None:
    log: list[httpx.Request] = []
    async with make_client(scripted(httpx.Response(503), httpx.Response(502), log=log)) as client:
        job = await client.jobs.get("job_1")
    assert job.job_id == "job_1"
    assert len(log) == 3
    first, second = fake_time.sleeps
    assert 0.375 <= first <= 0.5
    assert 0.75 <= second <= 1.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"retry-after": "3"}, 3.0), ({"retry-after-ms": "1500"}, 1.5), ({"retry-after": "0.25"}, 0.25)],
)
async def test_retry_after_is_honoured(
    make_client: Any, fake_time: FakeTime, headers: dict[str, str], expected: float
) -> None:
    async with make_client(
        scripted(httpx.Response(429, headers=headers, json={"reason": "slow down"}))
    ) as client:
        await client.jobs.get("job_1")
    assert fake_time.sleeps == [expected]


async def test_retry_after_as_http_date(make_client: Any, fake_time: FakeTime) -> None:
    when = email.utils.formatdate(time.time() + 5, usegmt=True)
    async with make_client(scripted(httpx.Response(503, headers={"retry-after": when}))) as client:
        await client.jobs.get("job_1")
    assert 3.0 <= fake_time.sleeps[0] <= 5.0


async def test_cooldown_body_remaining_seconds_is_a_retry_after(
    make_client: Any, fake_time: FakeTime
) -> None:
    answer = httpx.Response(429, json={"reason": "cooldown", "remainingSeconds": 2})
    async with make_client(scripted(answer)) as client:
        await client.jobs.get("job_1")
    assert fake_time.sleeps == [2.0]


async def test_retry_after_beyond_the_cap_raises_at_once_with_the_figure(
    make_client: Any, fake_time: FakeTime
) -> None:
    log: list[httpx.Request] = []
    answer = httpx.Response(
        429,
        headers={"retry-after": "120"},
        json={"reason": "too many", "details": {"actionName": "parallel-custom-jobs", "actionLimit": 3}},
    )
    async with make_client(scripted(answer, log=log)) as client:
        with pytest.raises(RateLimitError) as caught:
            await client.jobs.get("job_1")
    assert len(log) == 1
    assert fake_time.sleeps == []
    assert caught.value.retry_after_seconds == 120
    assert caught.value.action_name == "parallel-custom-jobs"
    assert caught.value.action_limit == 3


async def test_retry_after_beyond_the_remaining_budget_gives_up(
    make_client: Any, fake_time: FakeTime
) -> None:
    log: list[httpx.Request] = []
    answers = [httpx.Response(429, headers={"retry-after": "4"}) for _ in range(5)]
    policy = RetryPolicy(max_attempts=10, max_total_seconds=10)
    async with make_client(scripted(*answers, log=log), retry=policy) as client:
        with pytest.raises(RateLimitError) as caught:
            await client.jobs.get("job_1")
    assert fake_time.sleeps == [4.0, 4.0]  # the third wait would pass the 10 s budget
    assert len(log) == 3
    assert caught.value.retry_after_seconds == 4.0


async def test_attempts_are_bounded(make_client: Any, fake_time: FakeTime) -> None:
    log: list[httpx.Request] = []
    answers = [httpx.Response(503, json={"reason": "busy", "traceId": "tr_9"}) for _ in range(10)]
    async with make_client(scripted(*answers, log=log)) as client:
        with pytest.raises(ServerError) as caught:
            await client.jobs.get("job_1")
    assert len(log) == 4
    assert len(fake_time.sleeps) == 3
    assert str(caught.value) == "GET /v1/jobs/job_1 answered 503: busy (trace tr_9) after 4 attempts"
    assert caught.value.status_code == 503


async def test_total_time_is_bounded(make_client: Any, fake_time: FakeTime) -> None:
    """Each attempt times out after 25 s: the 60 s budget allows three, not four."""
    log: list[httpx.Request] = []

    def slow(request: httpx.Request) -> httpx.Response:
        log.append(request)
        fake_time.now += 25
        raise httpx.ReadTimeout("timed out", request=request)

    async with make_client(slow) as client:
        with pytest.raises(ScenarioTransportError) as caught:
            await client.jobs.get("job_1")
    assert len(log) == 3
    assert fake_time.now <= 60 + 25
    assert caught.value.request_sent is True
    assert "after 3 attempts" in str(caught.value)


@pytest.mark.parametrize(
    ("exception", "sent"),
    [
        (httpx.ConnectError, False),
        (httpx.ConnectTimeout, False),
        (httpx.ReadTimeout, True),
        (httpx.RemoteProtocolError, True),
        (httpx.ReadError, True),
    ],
)
async def test_transport_failures_are_retried_on_idempotent_requests(
    make_client: Any, exception: type[Exception], sent: bool
) -> None:
    log: list[httpx.Request] = []
    async with make_client(scripted(exception, log=log)) as client:
        assert (await client.jobs.get("job_1")).job_id == "job_1"
    assert len(log) == 2

    async with make_client(scripted(*[exception] * 4)) as client:
        with pytest.raises(ScenarioTransportError) as caught:
            await client.jobs.get("job_1")
    assert caught.value.request_sent is sent
    assert caught.value.method == "GET"


@pytest.mark.parametrize(
    ("status", "error", "retried"),
    [
        (400, BadRequestError, False),
        (401, AuthenticationError, False),
        (403, PermissionDeniedError, False),
        (404, NotFoundError, False),
        (422, BadRequestError, False),
        (418, ScenarioAPIError, False),
        (408, ScenarioAPIError, True),
        (409, ConflictError, True),
        (429, RateLimitError, True),
        (500, ServerError, True),
        (504, ServerError, True),
    ],
)
async def test_status_mapping(
    make_client: Any, status: int, error: type[ScenarioAPIError], retried: bool
) -> None:
    log: list[httpx.Request] = []
    answers = [httpx.Response(status, json={"reason": "Input prompt is required", "trace_id": "tr_1"})] * 4
    async with make_client(scripted(*answers, log=log)) as client:
        with pytest.raises(error) as caught:
            await client.jobs.get("job_1")
    assert type(caught.value) is error
    assert caught.value.status_code == status
    assert caught.value.reason == "Input prompt is required"
    assert caught.value.trace_id == "tr_1"
    assert str(caught.value).startswith(
        f"GET /v1/jobs/job_1 answered {status}: Input prompt is required (trace tr_1)"
    )
    assert len(log) == (4 if retried else 1)


async def test_html_error_body_uses_the_reason_phrase(make_client: Any) -> None:
    answers = [httpx.Response(502, html="<html>Bad gateway</html>")] * 4
    async with make_client(scripted(*answers)) as client:
        with pytest.raises(ServerError) as caught:
            await client.models.get("model_runway-aleph-2")
    assert str(caught.value).startswith("GET /v1/models/model_runway-aleph-2 answered 502: Bad Gateway")
    assert caught.value.reason is None


async def test_x_should_retry_false_forbids_a_retry(make_client: Any) -> None:
    log: list[httpx.Request] = []
    answer = httpx.Response(503, headers={"x-should-retry": "false"})
    async with make_client(scripted(answer, log=log)) as client:
        with pytest.raises(ServerError):
            await client.jobs.get("job_1")
    assert len(log) == 1


async def test_unexpected_success_body_is_an_api_error(make_client: Any) -> None:
    async with make_client(scripted(httpx.Response(200, json={"nope": 1}))) as client:
        with pytest.raises(
            ScenarioAPIError, match=r"GET /v1/jobs/job_1 answered 200 with a body that is not a JobEnvelope"
        ):
            await client.jobs.get("job_1")


async def test_ids_are_percent_encoded_and_dot_segments_refused(make_client: Any) -> None:
    log: list[httpx.Request] = []
    async with make_client(scripted(log=log)) as client:
        await client.jobs.get("job/../x")
        with pytest.raises(ScenarioConfigError):
            await client.jobs.get("..")
    assert log[0].url.raw_path == b"/v1/jobs/job%2F..%2Fx"


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ScenarioConfigError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ScenarioConfigError):
        RetryPolicy(jitter=1.5)
