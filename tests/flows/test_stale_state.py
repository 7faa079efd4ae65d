"""State an earlier run left that must not bite the next one: a cached asset that is gone, a free
estimate that failed inside a batch's submit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect_scenario.flows import video_to_layers
from prefect_scenario.flows.batch import BatchResult, video_to_layers_batch
from prefect_scenario.tasks import submit as submit_module
from support.emulator import GENERATE_ROUTE, control, faults, stats

INSTRUCTION = "each moving object apart from the background"


async def test_a_cached_upload_whose_asset_is_gone_is_uploaded_again(
    live_emulator: Any, credentials: Any, sample_clip: Path, tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level("INFO")
    first = await video_to_layers(
        str(sample_clip), INSTRUCTION, max_layers=2, credentials=credentials, destination=str(tmp_path / "a")
    )
    assert stats(live_emulator)["uploads_created"] == 1
    # The emulator restarts (or the asset is deleted in the Scenario app): the cached asset id is stale.
    control(live_emulator, "POST", "reset")

    second = await video_to_layers(
        str(sample_clip), INSTRUCTION, max_layers=2, credentials=credentials, destination=str(tmp_path / "b")
    )
    assert second.status == "success"
    assert second.inputs["video"] != first.inputs["video"]
    counters = stats(live_emulator)
    assert counters["uploads_created"] == 1  # uploaded again, once
    assert counters["jobs_created"] == 1

    # Once re-uploaded, the cache holds the new asset: a third run uploads nothing.
    third = await video_to_layers(
        str(sample_clip), INSTRUCTION, max_layers=2, credentials=credentials, destination=str(tmp_path / "b")
    )
    assert third.inputs["video"] == second.inputs["video"]
    assert stats(live_emulator)["uploads_created"] == 1
    # The log says which asset was reused, not only Prefect's "Cached".
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"Reusing {third.inputs['video']} for {sample_clip.name}" in m for m in messages), messages
    assert any(
        f"names {first.inputs['video']}, which the Scenario API no longer has: uploading it again" in m
        for m in messages
    ), messages


async def _batch(credentials: Any, clips: list[str], out: Path) -> BatchResult:
    state = await video_to_layers_batch(
        INSTRUCTION,
        max_layers=2,
        videos=clips,
        credentials=credentials,
        destination=str(out),
        concurrency_limit_name=None,
        return_state=True,
    )
    result = await state.aresult(raise_on_failure=False)
    assert isinstance(result, BatchResult)
    return result


async def test_a_batch_retries_a_failed_free_estimate_and_says_nothing_was_spent(
    live_emulator: Any, credentials: Any, sample_clip: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(submit_module, "ESTIMATE_RETRY_DELAYS", [0.2, 0.2])
    # The dry run fails more often than the client retries it (4 attempts): the submit task's own
    # estimate is retried, and the clip goes through.
    faults(live_emulator, {"route": GENERATE_ROUTE, "kind": "status", "status": 503, "count": 5})
    result = await _batch(credentials, [str(sample_clip)], tmp_path / "one")
    [clip] = result.clips
    assert clip.status == "succeeded", clip
    assert stats(live_emulator)["jobs_created"] == 1

    # Down for good: the clip fails, and says that nothing was spent.
    control(live_emulator, "POST", "reset")
    faults(live_emulator, {"route": GENERATE_ROUTE, "kind": "status", "status": 503, "count": 1000})
    result = await _batch(credentials, [str(sample_clip)], tmp_path / "two")
    [clip] = result.clips
    assert clip.status == "failed"
    assert "nothing was spent" in (clip.error or "")
    assert stats(live_emulator)["jobs_created"] == 0
    control(live_emulator, "DELETE", "faults")
