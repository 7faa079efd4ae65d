"""``/generate/custom/{modelId}``: price and run a generation.

The run is the paid call. The API has no idempotency key, so a request that may have reached the
server is never sent again blindly: an ambiguous outcome (read timeout, reset after sending, 5xx)
is reconciled by listing recent custom jobs and matching ``metadata.input``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect_scenario.errors import (
    ScenarioAPIError,
    ScenarioError,
    ScenarioTransportError,
    SubmissionUncertainError,
)
from prefect_scenario.models import (
    CostEstimate,
    GenerateResponse,
    Job,
    RequestModel,
    model_input_body,
)

from ._http import HttpCore, parse
from .jobs import JobsAPI
from .policies import parse_time

logger = logging.getLogger("prefect_scenario.client")


@dataclass(frozen=True)
class Submission:
    """What a paid submit produced.

    Attributes:
        job: the job, as the submit answered it (or as the listing showed it when reconciled).
        creative_units_cost: creative units billed; for a reconciled job, rebuilt from
            ``job.billing`` (None when the job carries no billing yet).
        cost_details: creative units per billing action.
        reconciled: True when the submit's answer was lost and the job was found by listing:
            it was created exactly once, by this submit.
    """

    job: Job
    creative_units_cost: float | None
    cost_details: dict[str, float] = field(default_factory=dict)
    reconciled: bool = False

    @property
    def job_id(self) -> str:
        """The id of the job."""
        return self.job.job_id

    @classmethod
    def from_response(cls, response: GenerateResponse) -> Submission:
        """A submission from the submit's own answer."""
        return cls(
            job=response.job,
            creative_units_cost=response.creative_units_cost,
            cost_details=dict(response.cost_details),
            reconciled=False,
        )

    @classmethod
    def from_reconciled_job(cls, job: Job) -> Submission:
        """A submission rebuilt from a job found by listing."""
        if job.billing is None:
            return cls(job=job, creative_units_cost=None, reconciled=True)
        # cuCost is the main action ("custom-generation" for custom models); add-ons such as the
        # quality gate are listed apart, like costDetails of the submit's answer.
        details = {"custom-generation": job.billing.cu_cost, **(job.billing.cu_cost_details or {})}
        return cls(job=job, creative_units_cost=sum(details.values()), cost_details=details, reconciled=True)


def _body(body: RequestModel | Mapping[str, Any]) -> dict[str, Any]:
    return body.to_body() if isinstance(body, RequestModel) else dict(body)


def _is_ambiguous(status_code: int) -> bool:
    # 5xx: the server may have created the job before failing. 408/409: it gave up or hit a
    # lock, after reading who knows how much. Every other status is a refusal: nothing was made.
    return status_code >= 500 or status_code in (408, 409)


def _match_rank(recorded: dict[str, Any] | None, expected: dict[str, Any]) -> int:
    """2: the job's input equals ours; 1: it has ours plus fields the server filled; 0: no."""
    if recorded is None:
        return 0
    if recorded == expected:
        return 2
    if all(name in recorded and recorded[name] == value for name, value in expected.items()):
        return 1
    return 0


class GenerateAPI:
    """Generations with custom models: ``client.generate``.

    Attributes:
        reconcile_skew_seconds: how far before the submit started a job's creation may appear to
            be and still be ours (client and server clocks differ). Missing our job would cost a
            duplicate, so this errs wide.
        reconcile_settle_seconds: pause before a second look when the first listing finds
            nothing: a request still in flight on the server may create its job a moment later.
    """

    reconcile_skew_seconds: float = 300.0
    reconcile_settle_seconds: float = 2.0

    def __init__(self, http: HttpCore, jobs: JobsAPI) -> None:
        self._http = http
        self._jobs = jobs
        # Jobs this client already handed out: a reconciliation never returns one of them again
        # (two identical submits in flight must not both claim the same job).
        self._claimed: set[str] = set()

    async def estimate(self, model_id: str, body: RequestModel | Mapping[str, Any]) -> CostEstimate:
        """What the generation would cost (``?dryRun=true``, HTTP 269); nothing runs.

        Safe to retry. A dry run prices without validating: a payload can quote fine and fail
        at run time.
        """
        response = await self._http.send_api(
            "POST", "generate", "custom", model_id, params={"dryRun": "true"}, json=_body(body)
        )
        try:
            payload = response.json()
        except ValueError:
            payload = None  # parse() below reports the unreadable body
        if isinstance(payload, dict) and payload.get("job"):
            job_id = payload["job"].get("jobId") if isinstance(payload["job"], dict) else None
            raise ScenarioAPIError(
                f"POST /generate/custom/{model_id}?dryRun=true created a job ({job_id}) instead of "
                "pricing it: do not submit again before checking that job",
                status_code=response.status_code,
                method="POST",
                url=str(response.request.url.copy_with(query=None)),
            )
        return parse(CostEstimate, response)

    async def run(
        self, model_id: str, body: RequestModel | Mapping[str, Any], *, reconcile: bool = True
    ) -> Submission:
        """Submits the paid generation and returns the job it created.

        Sent once. Retried only after failures that prove nothing was sent (connect errors).
        On an ambiguous outcome (read timeout, reset after sending, 5xx, 408, 409) recent custom
        jobs are listed and the one whose ``metadata.input`` equals this submit's body plus
        ``modelId`` is returned (``reconciled=True``). Only when the listing proves no such job
        exists is the request sent a second time (once), then reconciled again.

        Args:
            model_id: the model, e.g. ``model_runway-aleph-2``.
            body: the model's inputs (a request model, or a mapping in wire form).
            reconcile: False raises :class:`SubmissionUncertainError` on any ambiguous outcome
                instead of listing jobs.

        Raises:
            BadRequestError: the API refused the inputs (nothing was created).
            RateLimitError: the team's concurrency ceiling or a cooldown (nothing was created);
                ``action_limit`` and ``retry_after_seconds`` say more.
            ScenarioTransportError: the request could not be sent (``request_sent=False``).
            SubmissionUncertainError: the submit may have created a job that cannot be found;
                never submit again blindly.
        """
        payload = _body(body)
        expected = model_input_body(model_id, payload)
        started = datetime.now(UTC)
        sends = 0
        while True:
            sends += 1
            cause: ScenarioError
            try:
                response = await self._http.send_api(
                    "POST", "generate", "custom", model_id, json=payload, idempotent=False
                )
            except ScenarioTransportError as exc:
                if not exc.request_sent:
                    raise
                cause = exc
            except ScenarioAPIError as exc:
                if not _is_ambiguous(exc.status_code):
                    raise
                cause = exc
            else:
                try:
                    answer = parse(GenerateResponse, response)
                except ScenarioAPIError as exc:
                    # Accepted but unreadable: the job exists. Find it, and never send again.
                    job = await self._find(model_id, expected, started, exc) if reconcile else None
                    if job is None:
                        raise self._uncertain(model_id, exc, "the answer was unreadable") from exc
                    return self._claim(Submission.from_reconciled_job(job))
                return self._claim(Submission.from_response(answer))

            if not reconcile:
                raise self._uncertain(model_id, cause, "reconciliation is off") from cause
            logger.warning(
                "submit to %s had an ambiguous outcome (%s); looking for the job before anything else",
                model_id,
                cause,
            )
            job = await self._find(model_id, expected, started, cause)
            if job is not None:
                logger.info("submit to %s reconciled: Scenario job %s was created once", model_id, job.job_id)
                return self._claim(Submission.from_reconciled_job(job))
            if sends >= 2:
                raise self._uncertain(model_id, cause, "two attempts, no job listed") from cause
            logger.warning("no Scenario job matches the submit to %s: sending it once more", model_id)

    def _claim(self, submission: Submission) -> Submission:
        self._claimed.add(submission.job.job_id)
        return submission

    @staticmethod
    def _uncertain(model_id: str, cause: Exception, why: str) -> SubmissionUncertainError:
        return SubmissionUncertainError(
            f"the submit to {model_id} may have created a job, and none could be matched ({why}): "
            f"{cause}. Nothing more was sent. See recent jobs with `prefect-scenario jobs --since 1h`; "
            "run the same command again once the API answers: it adopts the job if the listing shows "
            "one, and pays only when it shows none",
            model_id=model_id,
        )

    async def _find(
        self, model_id: str, expected: dict[str, Any], started: datetime, cause: Exception
    ) -> Job | None:
        """The job this submit created, from the job listing; None when the listing shows none.

        Raises:
            SubmissionUncertainError: the listing itself failed.
        """
        for look in range(2):
            if look:
                await self._http.sleep(self.reconcile_settle_seconds)
            job = await self.find_submitted(
                model_id, expected, since=started, excluding=self._claimed, cause=cause
            )
            if job is not None:
                return job
        return None

    async def find_submitted(
        self,
        model_id: str,
        body: RequestModel | Mapping[str, Any],
        *,
        since: datetime,
        excluding: Iterable[str] = (),
        cause: Exception | str | None = None,
    ) -> Job | None:
        """The custom job a submit of ``body`` sent at ``since`` created, if the listing shows one.

        Lists custom jobs updated since ``since`` (less :attr:`reconcile_skew_seconds`, for clock
        differences) across every page, and returns the newest whose ``metadata.input`` is this
        body: exactly, else with extra fields the server filled in. ``excluding`` names jobs known
        to be someone else's (bought earlier for the same inputs).

        Args:
            model_id: the model the submit went to.
            body: the submit's inputs (as sent, or the request model).
            since: when the submit was sent (or about to be).
            excluding: job ids that must not be returned.
            cause: what made the outcome uncertain, for the error message.

        Returns:
            The job, or None when the listing succeeded and shows none.

        Raises:
            SubmissionUncertainError: the listing itself failed: nothing proves there is no job.
        """
        expected = model_input_body(model_id, _body(body))
        skipped = set(excluding)
        window_start = since - timedelta(seconds=self.reconcile_skew_seconds)
        try:
            jobs = [
                job async for job in self._jobs.list(type="custom", updated_after=window_start, page_size=100)
            ]
        except ScenarioError as exc:
            because = f" ({cause})" if cause else ""
            raise SubmissionUncertainError(
                f"the submit to {model_id} may have created a job{because}, and listing jobs to find it "
                f"failed too ({exc}). Nothing new was submitted. See the jobs with `prefect-scenario jobs "
                f"--since 1h`; run the same command again once the listing works: it adopts the job if "
                f"there is one, and pays only when the listing shows none",
                model_id=model_id,
            ) from exc
        best: tuple[int, datetime, Job] | None = None
        for job in jobs:
            if job.job_id in skipped:
                continue
            rank = _match_rank(job.metadata.input, expected)
            created = parse_time(job.created_at) or window_start
            if rank == 0 or created < window_start:
                continue
            if best is None or (rank, created) > best[:2]:
                best = (rank, created, job)
        return best[2] if best is not None else None
