"""The batch's progress bar: written in the background, seldom, and always to its last figure."""

from __future__ import annotations

import asyncio
from uuid import uuid4

import pytest

from prefect_scenario.flows import batch_report
from prefect_scenario.flows.batch_report import BatchProgress


async def test_ticks_do_not_wait_for_the_api_and_make_few_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[float] = []
    slow_api = asyncio.Event()

    async def update(*, artifact_id: object, progress: float) -> None:
        await slow_api.wait()  # the API answers only when the test says so
        written.append(progress)

    monkeypatch.setattr(batch_report, "aupdate_progress_artifact", update)
    monkeypatch.setattr(batch_report, "PROGRESS_MIN_INTERVAL_SECONDS", 0.3)
    progress = BatchProgress(total=50, artifact_id=uuid4())

    for _ in range(25):
        await asyncio.wait_for(progress.tick(), timeout=1)  # returns although the API hangs
    slow_api.set()
    for _ in range(24):
        await progress.tick()
        await asyncio.sleep(0.02)
    await progress.flush()
    await progress.tick()
    await progress.flush()

    assert written[-1] == 100.0
    assert written == sorted(written)
    # 50 ticks over ~0.5 s with writes at least 0.3 s apart: the first, about one more, the flushes.
    assert len(written) <= 5, written


async def test_a_failed_write_is_tried_again_by_the_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[float] = []

    async def flaky(*, artifact_id: object, progress: float) -> None:
        if not written and progress < 100:
            written.append(-1.0)
            raise RuntimeError("503")
        written.append(progress)

    monkeypatch.setattr(batch_report, "aupdate_progress_artifact", flaky)
    monkeypatch.setattr(batch_report, "get_run_logger", lambda: __import__("logging").getLogger("t"))
    progress = BatchProgress(total=2, artifact_id=uuid4())
    await progress.tick()
    await asyncio.sleep(0.05)
    await progress.tick()
    await progress.flush()
    assert written == [-1.0, 100.0]
