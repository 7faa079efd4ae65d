"""The paid submit: sent once, ambiguous outcomes reconciled, never re-sent blindly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from prefect_scenario.errors import (
    BadRequestError,
    RateLimitError,
    ScenarioAPIError,
    ScenarioTransportError,
    SubmissionUncertainError,
)
from prefect_scenario.models import ALEPH_MODEL_ID, VIDEO_LAYERS_MODEL_ID, AlephInput, VideoLayersInput

from .conftest import FakeTime

BODY = VideoLayersInput(video="asset_clip", separation_instruction="each person apart", max_layers=3)
EXPECTED_INPUT = {"video": "asset_clip", "separationInstruction": "each person apart", "maxLayers": 3}


def now_iso(offset_seconds: float = 0.0) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=offset_seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class FakeGenerateServer:
    """Just enough of the API: POST /generate creates jobs, GET /jobs lists them.

    ``submit_script`` decides each POST: "ok", "create-then-503", "create-then-reset",
    "create-then-timeout", "503", "connect-error", "429", "400", "create-then-garbage".
    """

    def __init__(self, *submit_script: str, listing_fails: bool = False) -> None:
        self.script = list(submit_script)
        self.listing_fails = listing_fails
        self.jobs: list[dict[str, Any]] = []
        self.posts: list[httpx.Request] = []
        self.listings: list[httpx.Request] = []

    def add_job(self, job_id: str, model_input: dict[str, Any], created: str) -> None:
        self.jobs.append(_job(job_id, model_input, created))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/v1/jobs":
            self.listings.append(request)
            if self.listing_fails:
                return httpx.Response(500, json={"reason": "listing down"})
            # Two pages, the first empty, to make sure reconciliation reads them all.
            if request.url.params.get("paginationToken") is None:
                return httpx.Response(200, json={"jobs": [], "nextPaginationToken": "p2"})
            return httpx.Response(200, json={"jobs": list(reversed(self.jobs))})
        assert request.method == "POST"
        assert request.url.path.startswith("/v1/generate/custom/")
        if request.url.params.get("dryRun") == "true":
            return httpx.Response(
                269, json={"creativeUnitsCost": 7.25, "costDetails": {"custom-generation": 6}}
            )
        self.posts.append(request)
        action = self.script.pop(0) if self.script else "ok"
        if action == "connect-error":
            raise httpx.ConnectError("connection refused", request=request)
        if action == "429":
            details = {"actionName": "parallel-custom-jobs", "actionLimit": 2}
            return httpx.Response(429, json={"reason": "too many jobs in flight", "details": details})
        if action == "400":
            return httpx.Response(
                400, json={"reason": "separationInstruction is required", "traceId": "tr_400"}
            )
        if action == "503":
            return httpx.Response(503, json={"reason": "overloaded"})
        model_id = request.url.path.rsplit("/", 1)[1]
        job = _job(
            f"job_{len(self.jobs) + 1}", {**json.loads(request.content), "modelId": model_id}, now_iso()
        )
        self.jobs.append(job)
        if action == "create-then-503":
            return httpx.Response(503, json={"reason": "gateway hiccup"})
        if action == "create-then-reset":
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        if action == "create-then-timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if action == "create-then-garbage":
            return httpx.Response(200, text="<html>oops</html>")
        return httpx.Response(
            200,
            json={
                "job": job,
                "creativeUnitsCost": 40,
                "creativeUnitsDiscount": 0,
                "costDetails": {"custom-generation": 40},
            },
        )


def _job(job_id: str, model_input: dict[str, Any], created: str) -> dict[str, Any]:
    return {
        "jobId": job_id,
        "jobType": "custom",
        "status": "queued",
        "progress": 0,
        "statusHistory": [{"status": "pending", "date": created}],
        "metadata": {"input": model_input},
        "billing": {"cuCost": 40, "cuDiscount": 0, "cuCostDetails": {"quality-gate": 1.25}},
        "createdAt": created,
        "updatedAt": created,
    }


async def test_a_plain_submit_returns_the_job_and_its_cost(make_client: Any) -> None:
    server = FakeGenerateServer()
    async with make_client(server) as client:
        submission = await client.generate.run(VIDEO_LAYERS_MODEL_ID, BODY)
    assert submission.reconciled is False
    assert submission.job_id == "job_1"
    assert submission.creative_units_cost == 40
    assert submission.cost_details == {"custom-generation": 40}
    assert json.loads(server.posts[0].content) == EXPECTED_INPUT
    assert "dryRun" not in server.posts[0].url.params
    assert server.listings == []


async def test_estimate_is_a_dry_run_and_is_retried(make_client: Any, fake_time: FakeTime) -> None:
    server = FakeGenerateServer()
    answers = [httpx.Response(503)]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop() if answers else server(request)

    async with make_client(handler) as client:
        estimate = await client.generate.estimate(ALEPH_MODEL_ID, {"prompt": "noir", "video": "asset_clip"})
    assert estimate.creative_units_cost == 7.25
    assert estimate.cost_details == {"custom-generation": 6}
    assert server.jobs == []
    assert len(fake_time.sleeps) == 1


async def test_an_estimate_that_created_a_job_stops_everything(make_client: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"job": _job("job_oops", {}, now_iso()), "creativeUnitsCost": 40})

    async with make_client(handler) as client:
        with pytest.raises(ScenarioAPIError, match=r"created a job \(job_oops\)"):
            await client.generate.estimate(VIDEO_LAYERS_MODEL_ID, BODY)


@pytest.mark.parametrize("failure", ["create-then-503", "create-then-reset", "create-then-timeout"])
async def test_an_ambiguous_outcome_is_reconciled_not_resent(make_client: Any, failure: str) -> None:
    server = FakeGenerateServer(failure)
    async with make_client(server) as client:
        submission = await client.generate.run(VIDEO_LAYERS_MODEL_ID, BODY)
    assert len(server.posts) == 1, "the paid request must not be sent again"
    assert len(server.jobs) == 1
    assert submission.reconciled is True
    assert submission.job_id == "job_1"
    assert submission.creative_units_cost == 41.25  # cuCost plus the quality gate, from job.billing
    assert submission.cost_details == {"custom-generation": 40, "quality-gate": 1.25}
    listing = server.listings[0].url.params
    assert listing["type"] == "custom"
    assert listing["updatedAfter"].endswith("Z")
    assert len(server.listings) == 2  # both pages read


async def test_an_accepted_but_unreadable_answer_is_reconciled(make_client: Any) -> None:
    server = FakeGenerateServer("create-then-garbage")
    async with make_client(server) as client:
        submission = await client.generate.run(VIDEO_LAYERS_MODEL_ID, BODY)
    assert submission.reconciled is True
    assert len(server.posts) == 1


async def test_listing_failure_raises_submission_uncertain(make_client: Any) -> None:
    server = FakeGenerateServer("create-then-503", listing_fails=True)
    async with make_client(server) as client:
        with pytest.raises(SubmissionUncertainError) as caught:
            await client.generate.run(VIDEO_LAYERS_MODEL_ID, BODY)
    assert caught.value.model_id == VIDEO_LAYERS_MODEL_ID
    assert "listing jobs to find it failed" in str(caught.value)
    assert len(server.posts) == 1
    assert len(server.listings) == 4  # the listing itself went through the retry policy


async def test_resent_once_only_when_the_listing_proves_no_job(make_client: Any, fake_time: FakeTime) -> None:
    server = FakeGenerateServer("503", "ok")
    async with make_client(server) as client:
        submission = await client.generate.run(VIDEO_LAYERS_MODEL_ID, BODY)
    assert len(server.posts) == 2
    assert len(server.jobs) == 1
    assert submission.reconciled is False
    assert len(server.listings) == 4  # two looks (two pages each) before sending again
    assert client.generate.reconcile_settle_seconds in fake_time.sleeps


async def test_at_most_one_resend(make_client: Any) -> None:
    server = FakeGenerateServer("503", "503", "ok")
    async with make_client(server) as client:
        with pytest.raises(SubmissionUncertainError, match="two attempts"):
            await client.generate.run(VIDEO_LAYERS_MODEL_ID, BODY)
    assert len(server.posts) == 2
    assert server.jobs == []


async def test_a_resend_that_turns_ambiguous_is_reconciled_again(make_client: Any) -> None:
    server = FakeGenerateServer("503", "create-then-reset")
    async with make_client(server) as client:
        submission = await client.generate.run(VIDEO_LAYERS_MODEL_ID, BODY)
    assert len(server.posts) == 2
    assert len(server.jobs) == 1
    assert submission.reconciled is True


async def test_reconciliation_off_raises_at_once(make_client: Any) -> None:
    server = FakeGenerateServer("create-then-reset")
    async with make_client(server) as client:
        with pytest.raises(SubmissionUncertainError, match="reconciliation is off"):
            await client.generate.run(VIDEO_LAYERS_MODEL_ID, BODY, reconcile=False)
    assert server.listings == []
    assert len(server.posts) == 1


async def test_429_is_not_ambiguous_and_not_retried(make_client: Any) -> None:
    server = FakeGenerateServer("429")
    async with make_client(server) as client:
        with pytest.raises(RateLimitError) as caught:
            await client.generate.run(VIDEO_LAYERS_MODEL_ID, BODY)
    assert caught.value.action_name == "parallel-custom-jobs"
    assert caught.value.action_limit == 2
    assert len(server.posts) == 1
    assert server.listings == []
    assert server.jobs == []


async def test_400_is_raised_with_its_reason(make_client: Any) -> None:
    server = FakeGenerateServer("400")
    async with make_client(server) as client:
        with pytest.raises(BadRequestError) as caught:
            await client.generate.run(VIDEO_LAYERS_MODEL_ID, BODY)
    assert caught.value.reason == "separationInstruction is required"
    assert str(caught.value) == (
        f"POST /v1/generate/custom/{VIDEO_LAYERS_MODEL_ID} answered 400: "
        "separationInstruction is required (trace tr_400)"
    )
    assert len(server.posts) == 1


async def test_a_connect_error_is_retried_because_nothing_was_sent(make_client: Any) -> None:
    server = FakeGenerateServer("connect-error", "ok")
    async with make_client(server) as client:
        submission = await client.generate.run(VIDEO_LAYERS_MODEL_ID, BODY)
    assert len(server.posts) == 2
    assert len(server.jobs) == 1
    assert submission.reconciled is False
    assert server.listings == []


async def test_connect_errors_exhausted_say_nothing_was_sent(make_client: Any) -> None:
    server = FakeGenerateServer(*["connect-error"] * 4)
    async with make_client(server) as client:
        with pytest.raises(ScenarioTransportError) as caught:
            await client.generate.run(VIDEO_LAYERS_MODEL_ID, BODY)
    assert caught.value.request_sent is False
    assert server.listings == []


async def test_reconciliation_picks_our_job_among_others(make_client: Any) -> None:
    server = FakeGenerateServer("create-then-503")
    ours = {**EXPECTED_INPUT, "modelId": VIDEO_LAYERS_MODEL_ID}
    server.add_job("job_other_input", {**ours, "maxLayers": 4}, now_iso())
    server.add_job("job_other_model", {**ours, "modelId": ALEPH_MODEL_ID}, now_iso())
    server.add_job("job_same_but_old", ours, now_iso(-3600))
    server.add_job("job_no_input", {}, now_iso())
    async with make_client(server) as client:
        submission = await client.generate.run(VIDEO_LAYERS_MODEL_ID, BODY)
    assert submission.job_id == "job_5"
    assert submission.reconciled is True


async def test_reconciliation_accepts_fields_the_server_filled(make_client: Any) -> None:
    server = FakeGenerateServer("503", "503")
    body = AlephInput(prompt="noir", video="asset_clip")
    server.add_job(
        "job_filled",
        {"prompt": "noir", "video": "asset_clip", "seed": 1234, "modelId": ALEPH_MODEL_ID},
        now_iso(),
    )
    async with make_client(server) as client:
        submission = await client.generate.run(ALEPH_MODEL_ID, body)
    assert submission.job_id == "job_filled"
    assert len(server.posts) == 1


async def test_a_job_already_handed_out_is_never_claimed_twice(make_client: Any) -> None:
    server = FakeGenerateServer("ok", "create-then-reset")
    async with make_client(server) as client:
        first = await client.generate.run(VIDEO_LAYERS_MODEL_ID, BODY)
        second = await client.generate.run(VIDEO_LAYERS_MODEL_ID, BODY)
    assert (first.job_id, second.job_id) == ("job_1", "job_2")
    assert second.reconciled is True
