"""Retry and polling policies of the client: pure data plus pure functions, no I/O.

Both are frozen dataclasses so one instance can be shared by every client of a process and put in
a Prefect block without surprises.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime

from prefect_scenario.errors import ScenarioConfigError
from prefect_scenario.models import Job, JobStatus

# Shared source of jitter when the caller passes no generator of its own (tests pass a seeded one).
_RNG = random.Random()


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before sending an idempotent request again.

    One retry layer for HTTP failures: connect errors, timeouts, resets, 408, 409, 429 and 5xx are
    retried, bounded by ``max_attempts`` and by ``max_total_seconds`` of wall time. The paid
    ``POST /generate/custom/{modelId}`` never goes through here except for failures that prove the
    request was never sent.

    Attributes:
        max_attempts: attempts in all, the first included.
        max_total_seconds: time budget across attempts and the waits between them.
        base_delay: first backoff delay, doubled per retry.
        max_delay: ceiling of one backoff delay.
        jitter: the backoff delay is multiplied by a factor in ``(1 - jitter, 1]``.
        max_retry_after: the longest ``Retry-After`` honoured; a server asking for more (or for
            more than the remaining budget) gets the error raised at once, carrying
            ``retry_after_seconds`` so the caller can schedule a later attempt.
    """

    max_attempts: int = 4
    max_total_seconds: float = 60.0
    base_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.25
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ScenarioConfigError("RetryPolicy.max_attempts must be at least 1")
        if self.max_total_seconds < 0 or self.base_delay < 0 or self.max_delay < 0:
            raise ScenarioConfigError("RetryPolicy delays and budget must not be negative")
        if not 0 <= self.jitter < 1:
            raise ScenarioConfigError("RetryPolicy.jitter must be in [0, 1)")

    @staticmethod
    def is_retryable_status(status_code: int) -> bool:
        """True for the statuses worth another attempt of an idempotent request."""
        return status_code in (408, 409, 429) or status_code >= 500

    def backoff(self, retries_done: int, rng: random.Random | None = None) -> float:
        """Exponential backoff before retry number ``retries_done + 1``, with jitter."""
        raw = min(self.base_delay * (2.0**retries_done), self.max_delay)
        return raw * (1.0 - self.jitter * (rng or _RNG).random())


@dataclass(frozen=True)
class PollPolicy:
    """How long to sleep between two polls of a running job: adaptive, with jitter.

    The two costs are the number of ``GET /jobs/{id}`` requests (rate limits, pain point 8 of
    ``peers.md``) and lateness: the time between the job ending and the poll that sees it. The
    target is a lateness under ~5 % of the job's duration with as few polls as that allows.

    * **Without progress information** (queued, or in progress at ``progress == 0``) nothing
      predicts the end, so the only way to bound lateness relative to duration is to never sleep
      longer than ``lateness_fraction`` (4 %) of the job's age: the interval grows geometrically
      with the age, from ``min_interval`` up to ``max_interval``.
    * **With progress** ``p`` after ``r`` seconds in progress, the remaining time is estimated as
      ``r * (1 - p) / p`` (constant rate). ``r`` is a lower bound (the larger of the client's own
      elapsed time and the server's ``updatedAt``, both measured from the ``in-progress`` entry of
      ``statusHistory``), so the estimate errs early, never late. While the estimate is far away the
      sleep is ``eta_fraction`` of it (60 %: geometric approach, tolerant of a job up to ~1.6x
      faster than it looked), and never longer than ``extrapolation_limit`` times the running time
      observed so far (a rate measured over 10 s does not predict the next 10 minutes), unless
      that is shorter than the tolerance below, capped at ``max_interval``. Once the
      estimate falls within the lateness tolerance (4 % of the predicted total), one sleep aims
      just past the predicted end.
    * Jitter of ``±jitter`` spreads the polls of many concurrent jobs (batch flows) so they do
      not hit the API in lockstep; the final aim is widened by the jitter so that it never lands
      short of the predicted end.

    Measured through ``jobs.wait()`` with a simulated clock, jobs with linear progress
    (``tests/client/test_polling.py``, 20 jitter seeds): at most 11 polls for 30 s, 2 min and
    6 min jobs (14 for the 6 min job when progress moves in 1 % steps), each seen within 3.3 % of
    its duration. Progress that accelerates breaks the constant-rate assumption: such a job may be
    seen up to ~25 % late; the extrapolation limit is what keeps that bounded.

    Attributes:
        min_interval: shortest sleep between two polls.
        max_interval: longest sleep when there is no progress to go by.
        jitter: relative spread of each sleep (0.1 = ±10 %).
        lateness_fraction: the lateness accepted, as a fraction of the job's (predicted) duration.
        eta_fraction: fraction of the estimated remaining time slept while far from the end.
        extrapolation_limit: a sleep on the estimate is at most this multiple of the time the
            rate was measured over.
    """

    min_interval: float = 1.0
    max_interval: float = 30.0
    jitter: float = 0.1
    lateness_fraction: float = 0.04
    eta_fraction: float = 0.6
    extrapolation_limit: float = 1.0

    def __post_init__(self) -> None:
        if self.min_interval <= 0 or self.max_interval < self.min_interval:
            raise ScenarioConfigError("PollPolicy needs 0 < min_interval <= max_interval")
        if not 0 <= self.jitter < 0.5:
            raise ScenarioConfigError("PollPolicy.jitter must be in [0, 0.5)")
        if not 0 < self.eta_fraction < 1 or self.lateness_fraction <= 0 or self.extrapolation_limit <= 0:
            raise ScenarioConfigError("PollPolicy fractions must be positive (eta_fraction below 1)")

    def next_delay(self, elapsed_seconds: float, job: Job, rng: random.Random | None = None) -> float:
        """Seconds to sleep before the next poll of ``job``.

        Args:
            elapsed_seconds: time since the wait started (about the job's creation when the wait
                follows the submit; a later start only makes the policy more cautious).
            job: the job as the last poll returned it.
            rng: source of jitter (a seeded one makes the sequence reproducible).
        """
        base = self._base_delay(elapsed_seconds, job)
        spread = 1.0 + self.jitter * (2.0 * (rng or _RNG).random() - 1.0)
        return max(self.min_interval, base * spread)

    def remaining_seconds(self, elapsed_seconds: float, job: Job) -> float | None:
        """Estimated seconds until the job ends, or None when nothing predicts it."""
        if job.status.is_terminal:
            return 0.0
        running = _running_seconds(elapsed_seconds, job)
        if running is None or running <= 0 or not 0 < job.progress < 1:
            return None
        return running * (1.0 - job.progress) / job.progress

    def _base_delay(self, elapsed_seconds: float, job: Job) -> float:
        age = max(elapsed_seconds, _server_age_seconds(job), 0.0)
        eta = self.remaining_seconds(elapsed_seconds, job)
        if eta is None:
            return min(max(self.lateness_fraction * age, self.min_interval), self.max_interval)
        tolerance = self.lateness_fraction * (age + eta)
        if eta > tolerance:
            running = _running_seconds(elapsed_seconds, job) or 0.0
            # The extrapolation limit never cuts below the tolerance (capped by max_interval, as
            # the tolerance itself rests on the estimate): early on, with a rate measured over a
            # second, that saves a dozen polls of a long job.
            floor = min(tolerance, self.max_interval)
            return min(
                max(self.eta_fraction * eta, tolerance), max(self.extrapolation_limit * running, floor)
            )
        # Close to the end: one sleep past the predicted end. Divided by (1 - jitter) so the
        # shortest jittered draw still lands after it; the margin absorbs a slightly slow finish.
        return eta / (1.0 - self.jitter) + 0.25 * tolerance


def parse_time(value: str | None) -> datetime | None:
    """An API timestamp (ISO 8601, ``Z`` suffix) as an aware datetime; None when unreadable."""
    if not value:
        return None
    try:
        # Python 3.10 does not read the "Z" suffix.
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _server_age_seconds(job: Job) -> float:
    created, updated = parse_time(job.created_at), parse_time(job.updated_at)
    if created is None or updated is None:
        return 0.0
    return (updated - created).total_seconds()


def _running_seconds(elapsed_seconds: float, job: Job) -> float | None:
    """A lower bound of the time the job has spent in progress."""
    if job.status not in (JobStatus.IN_PROGRESS, JobStatus.FINALIZING):
        return None
    created = parse_time(job.created_at)
    started = next(
        (parse_time(item.date) for item in job.status_history if item.status is JobStatus.IN_PROGRESS),
        None,
    )
    if created is None or started is None:
        # No start recorded: the job's age is the best guess (and the sleep stays bounded by
        # extrapolation_limit, so a wrong guess costs lateness only within that bound).
        return max(elapsed_seconds, _server_age_seconds(job))
    queued_for = (started - created).total_seconds()
    # Both are lower bounds: the wait started at or after the creation, and updatedAt is at or
    # before now. The larger is the tighter.
    by_client = elapsed_seconds - queued_for
    updated = parse_time(job.updated_at)
    by_server = (updated - started).total_seconds() if updated else 0.0
    return max(by_client, by_server)
