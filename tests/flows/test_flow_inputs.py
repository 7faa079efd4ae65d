"""A flow started from the UI or a deployment checks its inputs before any upload or spend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from prefect_scenario.errors import InputValidationError, MediaError
from prefect_scenario.flows import aleph_edit, video_to_layers
from prefect_scenario.validation import KeyframeSpec, PromptImageSpec
from support.emulator import stats


async def test_bad_inputs_fail_the_flow_before_anything_is_uploaded(
    live_emulator: Any, credentials: Any, sample_clip: Path, sample_image: Path, tmp_path: Path
) -> None:
    out = str(tmp_path / "out")
    state = await aleph_edit(
        str(sample_clip), "x" * 1001, destination=out, credentials=credentials, return_state=True
    )
    assert state.is_failed()
    with pytest.raises(InputValidationError, match="1001 characters"):
        await state.aresult()

    state = await aleph_edit(
        str(sample_clip),
        "snow",
        keyframes=[KeyframeSpec(image=str(sample_image), seconds=1)],
        prompt_images=[PromptImageSpec(image=str(sample_image), timestamp_seconds=1)],
        destination=out,
        credentials=credentials,
        return_state=True,
    )
    with pytest.raises(InputValidationError, match="cannot be used together"):
        await state.aresult()

    state = await video_to_layers(
        str(tmp_path / "missing.mp4"),
        "the shapes",
        destination=out,
        credentials=credentials,
        return_state=True,
    )
    with pytest.raises(MediaError, match="does not exist"):
        await state.aresult()

    counters = stats(live_emulator)
    assert counters["uploads_created"] == 0
    assert counters["jobs_created"] == 0
    assert counters["dry_runs"] == 0


async def test_dry_run_flow_estimates_and_spends_nothing(
    live_emulator: Any, credentials: Any, sample_clip: Path, tmp_path: Path
) -> None:
    result = await video_to_layers(
        str(sample_clip),
        "the shapes",
        max_layers=4,
        destination=str(tmp_path),
        credentials=credentials,
        dry_run=True,
    )
    assert result.is_dry_run
    assert result.job_id is None
    assert result.estimated_creative_units is not None
    assert result.estimated_creative_units > 0
    assert result.outputs == []
    counters = stats(live_emulator)
    assert (counters["jobs_created"], counters["dry_runs"], counters["uploads_created"]) == (0, 1, 1)
