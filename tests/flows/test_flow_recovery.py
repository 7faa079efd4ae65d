"""Failures after the paid submit never buy a second job; a failed job says why and what to do."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from prefect_scenario.client.policies import RetryPolicy
from prefect_scenario.errors import JobFailedError
from prefect_scenario.flows import ScenarioRunResult, aleph_edit, video_to_layers
from prefect_scenario.tasks import download_outputs
from support.emulator import FILES_ROUTE, GENERATE_ROUTE, advance_clock, faults, stats
from support.files import check_local_outputs
from support.prefect_api import flow_run, logs, task_runs

PROMPT = "make it look like a summer afternoon"


async def test_flow_retry_after_a_failed_download_reuses_the_job(
    live_emulator: Any, credentials: Any, sample_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The task's retries as configured, without their 5/10/20 s waits (the flows use this object).
    monkeypatch.setattr(download_outputs, "retry_delay_seconds", [0.0, 0.0, 0.0])
    monkeypatch.setattr(download_outputs, "retry_jitter_factor", None)
    # Enough 500s that every attempt of the download task fails (each attempt gives up after the
    # client's max_attempts stalls), so only the flow's own retry can finish the run.
    assert download_outputs.retries == 3
    count = (download_outputs.retries + 1) * RetryPolicy().max_attempts
    faults(live_emulator, {"route": FILES_ROUTE, "kind": "status", "status": 500, "count": count})
    out = tmp_path / "out"
    started = time.monotonic()
    state = await aleph_edit.with_options(retries=1, retry_delay_seconds=0)(
        str(sample_clip), PROMPT, seed=5, destination=str(out), credentials=credentials, return_state=True
    )
    result: ScenarioRunResult = await state.aresult()
    elapsed = time.monotonic() - started

    counters = stats(live_emulator)
    assert counters["faults_fired"] == {"status": count}
    assert counters["jobs_created"] == 1, "the flow retry must not submit again"
    run = await flow_run(state.state_details.flow_run_id)
    assert run.run_count == 2
    assert run.state.is_completed()
    check_local_outputs(result, out)
    # The job came from this very flow run's first attempt, not from an earlier run.
    assert not result.reused
    submits = [t for t in await task_runs(run.id) if t.name.startswith("submit-")]
    assert sorted(t.state.name for t in submits) in (["Cached", "Completed"], ["Completed"])
    downloads = [t for t in await task_runs(run.id) if t.name == "download-outputs"]
    assert {t.state.name for t in downloads} == {"Failed", "Completed"}
    print(f"flow retry after {count} file-server 500s: {elapsed:.1f} s, 1 job")


async def test_reset_after_the_submit_was_accepted_creates_one_job(
    live_emulator: Any, credentials: Any, sample_clip: Path, tmp_path: Path
) -> None:
    # The estimate is the first POST to this route: a zero-second delay lets it through, so the
    # reset hits the paid submit itself, after the server created the job.
    faults(
        live_emulator,
        {"route": GENERATE_ROUTE, "kind": "delay", "seconds": 0, "count": 1},
        {"route": GENERATE_ROUTE, "kind": "reset_after_accept", "count": 1},
    )
    state = await video_to_layers(
        str(sample_clip),
        "each moving object apart from the background",
        max_layers=2,
        destination=str(tmp_path / "out"),
        credentials=credentials,
        return_state=True,
    )
    result: ScenarioRunResult = await state.aresult()
    counters = stats(live_emulator)
    assert counters["faults_fired"] == {"delay": 1, "reset_after_accept": 1}
    assert counters["jobs_created"] == 1
    assert result.status == "success"
    assert len(result.outputs) == 2
    messages = [log.message for log in await logs(state.state_details.flow_run_id)]
    assert any("found again after an uncertain submit" in m for m in messages), messages


async def _run_while(flow_call: Any, when_files_requested: Any) -> ScenarioRunResult:
    """Run a flow; once its first file download is in flight, call ``when_files_requested``."""
    running = asyncio.ensure_future(flow_call)
    deadline = time.monotonic() + 60
    while not running.done() and time.monotonic() < deadline:
        counters = await asyncio.to_thread(stats, when_files_requested.emulator)
        if counters["requests"].get(FILES_ROUTE, 0) >= 1:
            await asyncio.to_thread(when_files_requested)
            break
        await asyncio.sleep(0.05)
    result: ScenarioRunResult = await running
    return result


class _ExpireUrls:
    """Move the emulator clock past the signed URLs' lifetime."""

    def __init__(self, emulator: Any) -> None:
        self.emulator = emulator

    def __call__(self) -> None:
        ttl = float(self.emulator.state.config.asset_url_ttl_seconds)
        advance_clock(self.emulator, ttl + 60)


async def test_an_expired_url_is_refreshed_without_a_new_job(
    live_emulator: Any, credentials: Any, sample_clip: Path, tmp_path: Path
) -> None:
    # Hold the first file request for 2 s; the clock jumps past the URL's expiry meanwhile, so the
    # file server refuses it (403) and the client must come back with a fresh signed URL.
    faults(live_emulator, {"route": FILES_ROUTE, "kind": "delay", "seconds": 2, "count": 1})
    out = tmp_path / "out"
    result = await _run_while(
        aleph_edit(str(sample_clip), PROMPT, seed=8, destination=str(out), credentials=credentials),
        _ExpireUrls(live_emulator),
    )
    counters = stats(live_emulator)
    assert counters["faults_fired"] == {"delay": 1}
    assert counters["jobs_created"] == 1
    assert counters["requests"][FILES_ROUTE] == 2, "one refused, one with a fresh URL"
    assert live_emulator.state.clock.offset_seconds > 60
    check_local_outputs(result, out)


async def test_a_truncated_download_is_resumed_without_a_new_job(
    live_emulator: Any, credentials: Any, sample_clip: Path, tmp_path: Path
) -> None:
    faults(live_emulator, {"route": FILES_ROUTE, "kind": "truncate", "keep_fraction": 0.4, "count": 1})
    out = tmp_path / "out"
    result = await aleph_edit(str(sample_clip), PROMPT, seed=9, destination=str(out), credentials=credentials)
    counters = stats(live_emulator)
    assert counters["faults_fired"] == {"truncate": 1}
    assert counters["jobs_created"] == 1
    assert counters["requests"][FILES_ROUTE] == 2
    check_local_outputs(result, out)


async def test_a_failed_job_surfaces_its_error_and_hint_and_is_never_reused(
    live_emulator: Any, credentials: Any, sample_clip: Path, tmp_path: Path
) -> None:
    error = "The source video has no detectable motion"
    hint = "Use a clip where the objects to separate move"
    faults(live_emulator, {"route": GENERATE_ROUTE, "kind": "fail_job", "error": error, "hint": hint})
    out = str(tmp_path / "out")
    state = await video_to_layers(
        str(sample_clip), "the moving shapes", destination=out, credentials=credentials, return_state=True
    )
    assert state.is_failed()
    with pytest.raises(JobFailedError) as raised:
        await state.aresult()
    assert raised.value.error == error
    assert raised.value.hint == hint
    assert error in str(raised.value)
    assert hint in str(raised.value)
    assert error in (state.message or "")
    assert stats(live_emulator)["jobs_created"] == 1

    # Same inputs again: the failed job is not handed back from the cache; a new one runs.
    result = await video_to_layers(
        str(sample_clip), "the moving shapes", destination=out, credentials=credentials
    )
    assert result.status == "success"
    assert not result.reused
    assert stats(live_emulator)["jobs_created"] == 2
