"""The batch flows against the live emulator and the session's Prefect server.

What is checked is what a batch promises: jobs in flight never pass the global concurrency limit
(the emulator's ``max_jobs_in_flight``), Scenario's own 429 ceiling is waited out, the budget stops
submissions in order, one bad clip fails only itself, and every clip ends in the table artifact.
Each test uses a global concurrency limit of its own name: the Prefect server is shared by the session.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound

from prefect_scenario import video
from prefect_scenario.concurrency import CeilingWatch, ensure_global_concurrency_limit
from prefect_scenario.errors import InputValidationError, RateLimitError
from prefect_scenario.flows.batch import BatchResult, ClipResult, aleph_edit_batch, video_to_layers_batch
from prefect_scenario.storage import find_videos, load_storage
from prefect_scenario.tasks import job_ids_from_labels
from support.emulator import GENERATE_ROUTE, control, stats
from support.files import sha256_of
from support.prefect_api import artifacts, flow_run, task_runs

INSTRUCTION = "each moving object apart from the background"
CLIP_SECONDS = 1.0
# Video to Layers on the emulator: ceil(seconds) x (2 + max_layers) creative units.
LAYERS_COST = 1 * (2 + 2)


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six distinct 1 s clips (distinct content: uploads and jobs are cached by content)."""
    folder = tmp_path_factory.mktemp("batch-clips")
    for index in range(6):
        video.make_sample_clip(
            folder / f"clip-{index}.mp4",
            seconds=CLIP_SECONDS,
            width=160,
            height=120,
            fps=12,
            moving_objects=1,
            seed=index + 1,
        )
    (folder / "notes.txt").write_text("not a clip")
    return folder


@pytest.fixture
def limit_name() -> str:
    """A global concurrency limit name of this test's own."""
    return f"scenario-test-{uuid.uuid4().hex[:10]}"


async def _gcl_size(name: str) -> int | None:
    async with get_client() as client:
        try:
            return int((await client.read_global_concurrency_limit_by_name(name)).limit)
        except ObjectNotFound:
            return None


async def _run_layers(**kwargs: Any) -> tuple[Any, BatchResult]:
    state = await video_to_layers_batch(INSTRUCTION, max_layers=2, return_state=True, **kwargs)
    result = await state.aresult(raise_on_failure=False)
    assert isinstance(result, BatchResult)
    return state, result


def _check_outputs(clip: ClipResult) -> None:
    assert clip.status == "succeeded", clip
    assert clip.job_id
    assert clip.outputs
    for output in clip.outputs:
        file = Path(output.location)
        assert file.is_file()
        assert file.stat().st_size == output.size
        assert sha256_of(file) == output.sha256


async def test_batch_over_a_folder_never_passes_the_limit(
    live_emulator: Any, credentials: Any, clips_dir: Path, limit_name: str, tmp_path: Path
) -> None:
    # Jobs long enough for Prefect to hand the second slot out while the first job runs (a slot
    # request to the test server takes up to a couple of seconds under the batch's own load).
    control(live_emulator, "POST", "config", {"job_seconds": 3.0})
    assert await _gcl_size(limit_name) is None

    state, result = await _run_layers(
        folder=str(clips_dir),
        destination=str(tmp_path / "out"),
        credentials=credentials,
        concurrency_limit_name=limit_name,
        concurrency_limit=2,
    )

    assert state.type == StateType.COMPLETED, state.message
    assert state.message == f"6 of 6 clip(s) succeeded, {6 * LAYERS_COST} CU spent"
    # The flow created the missing limit, sized from its parameter.
    assert await _gcl_size(limit_name) == 2
    counters = stats(live_emulator)
    assert counters["jobs_created"] == 6
    assert counters["max_jobs_in_flight"] == 2, counters
    assert [Path(c.video).name for c in result.clips] == [f"clip-{i}.mp4" for i in range(6)]
    for clip in result.clips:
        _check_outputs(clip)
        assert clip.creative_units_cost == LAYERS_COST
        assert not clip.reused
    assert len({c.job_id for c in result.clips}) == 6
    assert result.concurrency_limit == 2
    assert result.creative_units_cost == 6 * LAYERS_COST

    found = {a.key: a for a in await artifacts(state.state_details.flow_run_id) if a.key}
    table = found["video-to-layers-batch-clips"]
    assert table.type == "table"
    for clip in result.clips:
        assert clip.job_id in table.data
        assert clip.source in table.data
    assert "6 of 6 clip(s) succeeded" in found["video-to-layers-batch-summary"].data
    assert float(found["video-to-layers-batch-progress"].data) == 100.0
    # Tasks, not subflows: five task runs per clip (upload, submit, wait, download, no estimate
    # without a budget).
    names = [run.task_key.split("-")[0] for run in await task_runs(state.state_details.flow_run_id)]
    # The wait runs inline (no task run of its own): the batch's log and table show it.
    assert sorted(set(names)) == ["download_outputs", "submit_job", "upload_video"]
    assert len(names) == 3 * 6
    # Every job id is on the run's labels once the batch is over (written in the background).
    run = await flow_run(state.state_details.flow_run_id)
    assert sorted(job_ids_from_labels(run.labels)) == sorted(c.job_id for c in result.clips if c.job_id)


async def test_scenario_ceiling_is_waited_out_not_failed(
    live_emulator: Any, credentials: Any, clips_dir: Path, limit_name: str, tmp_path: Path
) -> None:
    # The Prefect limit allows 3, Scenario's ceiling only 1: while a 3 s job runs, the other clips
    # holding a Prefect slot submit and get 429.
    control(live_emulator, "POST", "config", {"job_seconds": 3.0, "concurrency_ceiling": 1})
    videos = [str(clips_dir / f"clip-{i}.mp4") for i in range(4)]

    state, result = await _run_layers(
        videos=videos,
        destination=str(tmp_path / "out"),
        credentials=credentials,
        concurrency_limit_name=limit_name,
        concurrency_limit=3,
    )

    assert state.type == StateType.COMPLETED, state.message
    assert [c.status for c in result.clips] == ["succeeded"] * 4
    for clip in result.clips:
        _check_outputs(clip)
    counters = stats(live_emulator)
    assert counters["jobs_created"] == 4
    assert counters["max_jobs_in_flight"] == 1
    refused = counters["requests"][GENERATE_ROUTE] - counters["jobs_created"] - counters["dry_runs"]
    assert refused > 0
    assert result.ceiling_refusals == refused
    retried = [
        run
        for run in await task_runs(state.state_details.flow_run_id)
        if run.task_key.startswith("submit_job") and run.run_count > 1
    ]
    assert retried
    assert all(run.state_type == StateType.COMPLETED for run in retried)


async def test_budget_stops_new_submissions_in_order(
    live_emulator: Any, credentials: Any, clips_dir: Path, limit_name: str, tmp_path: Path
) -> None:
    budget = 3 * LAYERS_COST + 1  # room for three clips, not four

    state, result = await _run_layers(
        folder=str(clips_dir),
        destination=str(tmp_path / "out"),
        credentials=credentials,
        budget_creative_units=budget,
        concurrency_limit_name=limit_name,
    )

    assert state.type == StateType.COMPLETED, state.message
    assert [c.status for c in result.clips] == ["succeeded"] * 3 + ["skipped: budget"] * 3
    assert "3 skipped: budget" in (state.message or "")
    assert all(c.job_id is None and not c.outputs for c in result.skipped)
    assert all(c.estimated_creative_units == LAYERS_COST for c in result.clips)
    counters = stats(live_emulator)
    assert counters["jobs_created"] == 3
    assert counters["dry_runs"] == 6
    assert result.planned_creative_units == 3 * LAYERS_COST <= budget
    table = next(
        a for a in await artifacts(state.state_details.flow_run_id) if a.key == "video-to-layers-batch-clips"
    )
    assert table.data.count("skipped: budget") == 3


async def test_one_bad_clip_fails_only_its_own_branch(
    live_emulator: Any, credentials: Any, clips_dir: Path, limit_name: str, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video")
    control(live_emulator, "POST", "faults", [{"route": GENERATE_ROUTE, "kind": "fail_job", "error": "boom"}])
    videos = [
        str(clips_dir / "clip-0.mp4"),
        str(broken),
        str(clips_dir / "clip-1.mp4"),
        str(clips_dir / "clip-2.mp4"),
    ]

    state, result = await _run_layers(
        videos=videos,
        destination=str(tmp_path / "out"),
        credentials=credentials,
        concurrency_limit_name=limit_name,
    )

    assert state.type == StateType.FAILED
    assert [c.video for c in result.clips] == videos
    statuses = [c.status for c in result.clips]
    assert statuses[1] == "failed"
    assert "MediaError" in (result.clips[1].error or "")
    assert statuses.count("failed") == 2
    assert statuses.count("succeeded") == 2
    failed_job = next(c for c in result.failed if c.job_id is not None)
    assert "boom" in (failed_job.error or "")
    for clip in result.succeeded:
        _check_outputs(clip)
    assert "2 failed" in (state.message or "")
    assert "broken.mp4" in (state.message or "")
    assert stats(live_emulator)["jobs_created"] == 3

    # Run again: the failed job (waited on inline, not in a task run) was dropped from the submit
    # cache, so its clip gets a new job; the two good ones are reused.
    _, again = await _run_layers(
        videos=[v for v in videos if v != str(broken)],
        destination=str(tmp_path / "out"),
        credentials=credentials,
        concurrency_limit_name=limit_name,
    )
    assert [c.status for c in again.clips] == ["succeeded"] * 3
    assert failed_job.job_id not in {c.job_id for c in again.clips}
    assert sum(c.reused for c in again.clips) == 2
    assert stats(live_emulator)["jobs_created"] == 4


async def test_a_retried_batch_reruns_only_its_failed_clip(
    live_emulator: Any, credentials: Any, clips_dir: Path, limit_name: str, tmp_path: Path
) -> None:
    """Prefect 3.9.1 retries a flow that returns Failed: the retry buys one job, for the failed clip."""
    control(live_emulator, "POST", "faults", [{"route": GENERATE_ROUTE, "kind": "fail_job", "error": "boom"}])
    videos = [str(clips_dir / f"clip-{index}.mp4") for index in (3, 4, 5)]
    retried = video_to_layers_batch.with_options(retries=1, retry_delay_seconds=0)

    state = await retried(
        INSTRUCTION,
        max_layers=2,
        videos=videos,
        destination=str(tmp_path / "out"),
        credentials=credentials,
        concurrency_limit_name=limit_name,
        return_state=True,
    )
    result = await state.aresult(raise_on_failure=False)

    assert state.type == StateType.COMPLETED, state.message
    assert isinstance(result, BatchResult)
    assert [c.status for c in result.clips] == ["succeeded"] * 3
    for clip in result.clips:
        _check_outputs(clip)
    run = await flow_run(state.state_details.flow_run_id)
    assert run.run_count == 2  # the first attempt returned Failed (one clip's job failed), then the retry
    # Three jobs on the first attempt (one failed), one new job on the retry: the two clips that
    # succeeded were not bought again.
    assert stats(live_emulator)["jobs_created"] == 4


async def test_dry_run_prices_every_clip_and_spends_nothing(
    live_emulator: Any, credentials: Any, clips_dir: Path, limit_name: str, tmp_path: Path
) -> None:
    state, result = await _run_layers(
        folder=str(clips_dir),
        destination=str(tmp_path / "out"),
        credentials=credentials,
        budget_creative_units=2 * LAYERS_COST,
        concurrency_limit_name=limit_name,
        dry_run=True,
    )

    assert state.type == StateType.COMPLETED
    assert [c.status for c in result.clips] == ["estimated"] * 2 + ["skipped: budget"] * 4
    assert stats(live_emulator)["jobs_created"] == 0
    # A dry run never creates the limit: it holds no slot.
    assert await _gcl_size(limit_name) is None


async def test_aleph_batch_without_a_limit_over_an_s3_prefix(
    live_emulator: Any, credentials: Any, clips_dir: Path, s3_bucket: Any, tmp_path: Path
) -> None:
    s3 = s3_bucket.credentials.get_s3_client()
    for index in range(3):
        s3.upload_file(
            str(clips_dir / f"clip-{index}.mp4"), s3_bucket.bucket_name, f"incoming/take-{index}.mp4"
        )
    # Not taken: a sub-folder, a non-video, a key outside the prefix.
    s3.upload_file(str(clips_dir / "clip-3.mp4"), s3_bucket.bucket_name, "incoming/old/take-9.mp4")
    s3.put_object(Bucket=s3_bucket.bucket_name, Key="incoming/readme.txt", Body=b"x")
    s3.upload_file(str(clips_dir / "clip-4.mp4"), s3_bucket.bucket_name, "elsewhere/take-8.mp4")

    # By name, as a deployment's parameters give it (no credentials copied into the parameters).
    block_name = f"incoming-{uuid.uuid4().hex[:8]}"
    await s3_bucket.asave(block_name)

    state = await aleph_edit_batch(
        "turn it into a watercolour painting",
        folder="incoming/",
        video_storage=f"s3-bucket/{block_name}",
        seed=7,
        destination=str(tmp_path / "out"),
        credentials=credentials,
        concurrency_limit_name=None,
        return_state=True,
    )
    result = await state.aresult()

    assert state.type == StateType.COMPLETED, state.message
    assert [c.video for c in result.clips] == [f"incoming/take-{i}.mp4" for i in range(3)]
    assert all(c.source.startswith("s3-bucket:incoming/") for c in result.clips)
    for clip in result.clips:
        _check_outputs(clip)
    assert result.concurrency_limit_name is None
    assert result.concurrency_limit is None
    assert stats(live_emulator)["jobs_created"] == 3


async def test_storage_is_a_block_or_the_name_of_one(s3_bucket: Any) -> None:
    assert await load_storage(None, field="video_storage") is None
    assert await load_storage(s3_bucket, field="video_storage") is s3_bucket
    with pytest.raises(InputValidationError, match="<block type slug>/<block name>"):
        await load_storage("incoming", field="video_storage")
    with pytest.raises(InputValidationError, match="no such saved block"):
        await load_storage("s3-bucket/never-saved-" + uuid.uuid4().hex[:8], field="video_storage")


async def test_existing_limit_keeps_its_size(limit_name: str) -> None:
    assert await ensure_global_concurrency_limit(limit_name, 3) == 3
    # A later batch asking for another size uses the limit as the team set it.
    assert await ensure_global_concurrency_limit(limit_name, 5) == 3
    assert await _gcl_size(limit_name) == 3
    with pytest.raises(ValueError, match="at least 1"):
        await ensure_global_concurrency_limit(limit_name, 0)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    async with get_client() as client:
        await client.update_global_concurrency_limit(limit_name, GlobalConcurrencyLimitUpdate(active=False))
    # Inactive, it bounds nothing: the batch must not queue clips locally for its size either.
    assert await ensure_global_concurrency_limit(limit_name, 3) is None


async def test_find_videos_lists_one_level_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.MOV").write_bytes(b"1")
    (tmp_path / "a.mp4").write_bytes(b"2")
    (tmp_path / ".hidden.mp4").write_bytes(b"3")
    (tmp_path / "notes.txt").write_text("4")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.mp4").write_bytes(b"5")

    listed = await find_videos(None, str(tmp_path), None, None)
    assert listed == [str(tmp_path / "a.mp4"), str(tmp_path / "b.MOV")]
    assert await find_videos(None, str(tmp_path), "*.txt", None) == [str(tmp_path / "notes.txt")]
    # Explicit clips first, repeats dropped.
    first = str(tmp_path / "b.MOV")
    assert await find_videos([first, "asset_abc"], str(tmp_path), None, None) == [
        first,
        "asset_abc",
        str(tmp_path / "a.mp4"),
    ]
    with pytest.raises(InputValidationError, match="give the clips"):
        await find_videos(None, None, None, None)
    with pytest.raises(InputValidationError, match="not a directory"):
        await find_videos(None, str(tmp_path / "missing"), None, None)


def test_ceiling_watch_retries_429_only() -> None:
    from prefect.states import Failed

    watch = CeilingWatch(limit_name="scenario-custom-jobs", limit_size=4)
    should_retry = watch.retry_condition()
    refused = RateLimitError(
        "too many",
        status_code=429,
        method="POST",
        url="http://x/v1/generate/custom/m",
        details={"actionName": "parallel-custom-jobs", "actionLimit": 2},
    )
    assert should_retry(None, None, Failed(data=refused))  # type: ignore[arg-type]
    assert not should_retry(None, None, Failed(data=ValueError("bad input")))  # type: ignore[arg-type]
    assert watch.refusals == 1
    assert watch.api_ceiling == 2
