"""Every Scenario job status has exactly one Prefect outcome (peers.md, pain point 13)."""

from __future__ import annotations

import pytest
from prefect.client.schemas.objects import StateType

from prefect_scenario.errors import JobCanceledError, JobFailedError
from prefect_scenario.models import Job, JobMetadata, JobStatus
from prefect_scenario.tasks import outcome_for, progress_artifact_key

pytestmark = pytest.mark.usefixtures("prefect_harness")

# Written out by hand on purpose: the test must fail when the enum grows and nobody decided.
EXPECTED: dict[JobStatus, tuple[StateType, bool, type[Exception] | None]] = {
    JobStatus.PENDING: (StateType.PENDING, False, None),
    JobStatus.QUEUED: (StateType.PENDING, False, None),
    JobStatus.WARMING_UP: (StateType.PENDING, False, None),
    JobStatus.IN_PROGRESS: (StateType.RUNNING, False, None),
    JobStatus.FINALIZING: (StateType.RUNNING, False, None),
    JobStatus.SUCCESS: (StateType.COMPLETED, True, None),
    JobStatus.FAILURE: (StateType.FAILED, True, JobFailedError),
    JobStatus.CANCELED: (StateType.CANCELLED, True, JobCanceledError),
}


def make_job(status: JobStatus, **metadata: object) -> Job:
    return Job(
        job_id="job_AbC123",
        job_type="custom",
        status=status,
        created_at="2026-01-10T09:00:00.000Z",
        updated_at="2026-01-10T09:00:01.000Z",
        metadata=JobMetadata(**metadata),  # type: ignore[arg-type]
    )


def test_the_table_covers_the_whole_enum() -> None:
    assert set(EXPECTED) == set(JobStatus)


@pytest.mark.parametrize("status", list(JobStatus), ids=lambda s: s.value)
def test_status_maps_to_outcome(status: JobStatus) -> None:
    state_type, final, error_type = EXPECTED[status]
    outcome = outcome_for(make_job(status, error="boom", hint="try again"))
    assert outcome.state_type is state_type
    assert outcome.final is final is status.is_terminal
    if error_type is None:
        assert outcome.error is None
    else:
        assert type(outcome.error) is error_type
        assert outcome.error.job_id == "job_AbC123"
        assert outcome.error.status == status.value
        assert outcome.error.error == "boom"
        assert outcome.error.hint == "try again"


def test_failure_message_carries_error_and_hint() -> None:
    error = outcome_for(make_job(JobStatus.FAILURE, error="Generation failed", hint="check the clip")).error
    assert error is not None
    assert "job_AbC123" in str(error)
    assert "Generation failed" in str(error)
    assert "check the clip" in str(error)
    without = outcome_for(make_job(JobStatus.FAILURE)).error
    assert without is not None
    assert without.error is None
    assert "no error message" in str(without)


def test_synonyms_from_docs_prose_map_too() -> None:
    assert outcome_for(make_job(JobStatus("failed"))).state_type is StateType.FAILED
    assert outcome_for(make_job(JobStatus("cancelled"))).state_type is StateType.CANCELLED


def test_progress_artifact_key_is_valid() -> None:
    key = progress_artifact_key("job_7QxVn3pRk2HsWd9YbLmT4cFa")
    assert key == "scenario-job-7qxvn3prk2hswd9ybl" + "mt4cfa"
    from prefect.client.schemas.actions import ArtifactCreate

    ArtifactCreate(key=key, type="progress", data=1.0)  # the server's own key validation
