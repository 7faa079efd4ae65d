"""The exception tree of prefect-scenario.

::

    ScenarioError
    ├── ScenarioConfigError          credentials or settings missing/invalid (nothing was sent)
    ├── InputValidationError         a bad input found locally, before any upload or spend (also ValueError)
    │   └── MediaError               a file that is not a usable video/image, or over a model limit
    ├── BudgetExceededError          the estimate passes ``max_creative_units``; nothing was spent
    ├── EstimateFailedError          the free estimate failed past its retries; nothing was spent
    ├── ScenarioTransportError       no HTTP answer (connect error, timeout, reset)
    ├── ScenarioAPIError             the API answered with an error status (status_code, reason, trace_id)
    │   ├── BadRequestError          400: the request itself is wrong; retrying never helps
    │   ├── AuthenticationError      401
    │   ├── PermissionDeniedError    403 (also an expired signed URL on the file server)
    │   ├── NotFoundError            404
    │   ├── ConflictError            409
    │   ├── RateLimitError           429 (retry_after; action_name/action_limit for concurrency ceilings)
    │   └── ServerError              5xx
    ├── SubmissionUncertainError     a paid submit may have reached the server and no job could be matched:
    │                                never submit again blindly (a rerun reconciles through the ledger)
    ├── SubmissionBusyError          another live process held the submit of the same inputs too long
    ├── UploadFailedError            the API refused the uploaded file (its errorMessage)
    ├── DownloadError                an output could not be stored intact (size or sha256 mismatch)
    ├── JobWaitTimeoutError          the wait deadline passed; the job itself goes on
    └── JobFailedError               the job ended in failure (error and hint from the server)
        ├── JobCanceledError         the job was canceled
        └── ChunksFailedError        chunks of a split edit failed: nothing was stitched from a partial set

Messages never carry secrets: they are built from API text, ids and paths only.
"""

from __future__ import annotations

from typing import Any


class ScenarioError(Exception):
    """Base of every error raised by prefect-scenario."""


class ScenarioConfigError(ScenarioError):
    """Credentials or settings are missing or invalid; nothing was sent."""


class InputValidationError(ScenarioError, ValueError):
    """A bad input found locally, before any upload or spend.

    Args:
        message: what is wrong and what to change.
        field: the input at fault, when there is one.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class MediaError(InputValidationError):
    """A file that is not a usable video or image, or that passes a model limit."""


class BudgetExceededError(ScenarioError):
    """The estimated cost passes the budget; nothing was spent."""

    def __init__(self, message: str, *, estimate: float, budget: float) -> None:
        super().__init__(message)
        self.estimate = estimate
        self.budget = budget


class EstimateFailedError(ScenarioError):
    """The free dry-run estimate failed past its retries; nothing was submitted or spent."""

    def __init__(self, message: str, *, model_id: str) -> None:
        super().__init__(message)
        self.model_id = model_id


class ScenarioTransportError(ScenarioError):
    """No HTTP answer came back (connect error, timeout, connection reset).

    ``request_sent`` is False when the request certainly never reached the server (a connect
    error), True when it may have (a read timeout, a reset after sending).
    """

    def __init__(self, message: str, *, method: str, url: str, request_sent: bool) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.request_sent = request_sent


class ScenarioAPIError(ScenarioError):
    """The API answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        method: str,
        url: str,
        reason: str | None = None,
        trace_id: str | None = None,
        details: dict[str, Any] | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.method = method
        self.url = url
        self.reason = reason
        self.trace_id = trace_id
        self.details = details or {}
        self.retry_after_seconds = retry_after_seconds


class BadRequestError(ScenarioAPIError):
    """400: the request is wrong (an input, a limit, an unsupported action); retrying never helps."""


class AuthenticationError(ScenarioAPIError):
    """401: the API key/secret or bearer token was refused."""


class PermissionDeniedError(ScenarioAPIError):
    """403: not allowed (plan, project), or an expired signed URL on the file server."""


class NotFoundError(ScenarioAPIError):
    """404: unknown job, asset, model or upload."""


class ConflictError(ScenarioAPIError):
    """409: a conflict (the API uses it for lock timeouts)."""


class RateLimitError(ScenarioAPIError):
    """429: a rate limit, a cooldown, or the team's concurrency ceiling on custom jobs."""

    @property
    def action_name(self) -> str | None:
        """The limited action (e.g. ``parallel-custom-jobs``) when the API names it."""
        value = self.details.get("actionName")
        return value if isinstance(value, str) else None

    @property
    def action_limit(self) -> int | None:
        """The ceiling of the limited action when the API names it."""
        value = self.details.get("actionLimit")
        return int(value) if isinstance(value, int | float) else None


class ServerError(ScenarioAPIError):
    """5xx: a transient server failure."""


class SubmissionUncertainError(ScenarioError):
    """A paid submit may have reached the server and no matching job was found.

    Do not submit again blindly: look for the job in the Scenario app or with
    ``prefect-scenario`` job listing first.
    """

    def __init__(self, message: str, *, model_id: str) -> None:
        super().__init__(message)
        self.model_id = model_id


class SubmissionBusyError(ScenarioError):
    """Another live process kept the submit of the same inputs for too long; nothing was submitted."""


class UploadFailedError(ScenarioError):
    """The API refused an uploaded file."""

    def __init__(self, message: str, *, upload_id: str, error_message: str | None) -> None:
        super().__init__(message)
        self.upload_id = upload_id
        self.error_message = error_message


class DownloadError(ScenarioError):
    """An output could not be stored intact after its retries."""

    def __init__(self, message: str, *, asset_id: str) -> None:
        super().__init__(message)
        self.asset_id = asset_id


class JobWaitTimeoutError(ScenarioError):
    """The wait deadline passed. The job itself goes on (custom jobs cannot be canceled)."""

    def __init__(self, message: str, *, job_id: str, last_status: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.last_status = last_status


class JobFailedError(ScenarioError):
    """The job ended in failure; ``error`` and ``hint`` are the server's."""

    def __init__(
        self,
        message: str,
        *,
        job_id: str,
        status: str,
        error: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.status = status
        self.error = error
        self.hint = hint


class JobCanceledError(JobFailedError):
    """The job was canceled."""


class ChunksFailedError(JobFailedError):
    """Chunks of a split edit failed (after their retries); the edit was not stitched.

    The chunks that succeeded are stored (they are paid for); ``job_id`` is the first failed
    chunk's last job, empty when that chunk failed before a job existed.

    Args:
        message: which chunks failed, why, and where the finished ones are.
        failed_chunks: the indexes (from 0) of the failed chunks.
        job_id: the first failed chunk's last job, or "".
        error: the first failed chunk's error.
        hint: the server's hint for it, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        failed_chunks: list[int],
        job_id: str,
        error: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, job_id=job_id, status="failure", error=error, hint=hint)
        self.failed_chunks = failed_chunks
