"""Results are reused across flow runs: the same clip and inputs spend nothing the second time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect_scenario.flows import ScenarioRunResult, aleph_edit, video_to_layers
from support.emulator import stats
from support.files import check_local_outputs, copy_file

INSTRUCTION = "each moving object apart from the background"


def _counts(emulator: Any) -> tuple[int, int]:
    counters = stats(emulator)
    return counters["jobs_created"], counters["uploads_created"]


async def test_second_layers_run_reuses_the_job_and_refresh_pays_again(
    live_emulator: Any, credentials: Any, sample_clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    # The same content under another name and place: caching follows the bytes, not the path.
    renamed = copy_file(sample_clip, tmp_path / "renamed.mp4")

    first: ScenarioRunResult = await video_to_layers(
        str(sample_clip), INSTRUCTION, max_layers=2, destination=str(out), credentials=credentials
    )
    assert _counts(live_emulator) == (1, 1)
    assert not first.reused

    second: ScenarioRunResult = await video_to_layers(
        str(renamed), INSTRUCTION, max_layers=2, destination=str(out), credentials=credentials
    )
    assert _counts(live_emulator) == (1, 1), "a second run must create no job and no upload"
    assert second.reused
    assert second.job_id == first.job_id
    assert [o.sha256 for o in second.outputs] == [o.sha256 for o in first.outputs]
    check_local_outputs(second, out)
    files_fetched = stats(live_emulator)["requests"].get("GET /files/{assetId}", 0)

    # A different input is a different job.
    other: ScenarioRunResult = await video_to_layers(
        str(sample_clip), INSTRUCTION, max_layers=3, destination=str(out), credentials=credentials
    )
    assert _counts(live_emulator) == (2, 1)
    assert not other.reused

    refreshed: ScenarioRunResult = await video_to_layers(
        str(sample_clip),
        INSTRUCTION,
        max_layers=2,
        destination=str(out),
        credentials=credentials,
        refresh=True,
    )
    assert _counts(live_emulator) == (3, 1), "refresh=True pays for exactly one new job"
    assert not refreshed.reused
    assert refreshed.job_id not in (first.job_id, other.job_id)
    check_local_outputs(refreshed, out)
    # The reused run fetched nothing: its outputs were already stored intact.
    assert files_fetched == len(first.outputs)


async def test_aleph_reuses_only_with_a_seed(
    live_emulator: Any, credentials: Any, sample_clip: Path, tmp_path: Path
) -> None:
    out = str(tmp_path / "out")
    prompt = "make it look like an old film"
    seeded = await aleph_edit(str(sample_clip), prompt, seed=11, destination=out, credentials=credentials)
    again = await aleph_edit(str(sample_clip), prompt, seed=11, destination=out, credentials=credentials)
    assert again.reused
    assert again.job_id == seeded.job_id
    assert _counts(live_emulator) == (1, 1)

    # Without a seed the user asked for a fresh random result each time.
    unseeded = await aleph_edit(str(sample_clip), prompt, destination=out, credentials=credentials)
    unseeded_again = await aleph_edit(str(sample_clip), prompt, destination=out, credentials=credentials)
    assert not unseeded.reused
    assert not unseeded_again.reused
    assert unseeded.job_id != unseeded_again.job_id
    assert _counts(live_emulator) == (3, 1), "the clip is still uploaded once"
