"""Clips over Runway Aleph 2's limits: split into chunk jobs and stitched back, or fitted.

Against the live emulator, whose fake Aleph restyles each chunk for real, and the session's Prefect
server. Clips are small (160x120, 12 fps) so a 75 s clip stays fast; every job's inputs are read
back from the emulator (``GET /v1/jobs/{id}``), not from our own records.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_scenario import video
from prefect_scenario.errors import BudgetExceededError, ChunksFailedError
from prefect_scenario.flows import aleph_edit
from prefect_scenario.flows.chunk_references import chunk_at, map_references
from prefect_scenario.validation import KeyframeSpec, PromptImageSpec
from support.emulator import GENERATE_ROUTE, faults, stats
from support.files import sha256_of
from support.prefect_api import artifacts, logs

REPO = Path(__file__).resolve().parents[2]
FPS = 12
PROMPT = "turn it into a watercolour painting"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("long-clips")


@pytest.fixture(scope="module")
def clip_75s(media_dir: Path) -> Path:
    """75 s with audio: three chunks of at most 29 s."""
    path = media_dir / "long-75s.mp4"
    video.make_sample_clip(path, seconds=75.0, width=160, height=120, fps=FPS, with_audio=True)
    return path


@pytest.fixture(scope="module")
def clip_31s(media_dir: Path) -> Path:
    """31 s with audio: just over the limit, two chunks."""
    path = media_dir / "long-31s.mp4"
    video.make_sample_clip(path, seconds=31.0, width=160, height=120, fps=FPS, with_audio=True, seed=3)
    return path


@pytest.fixture(scope="module")
def clip_17mib(media_dir: Path) -> Path:
    """8 s but 17.4 MiB (a constant bitrate padded with filler): over the size limit only."""
    path = media_dir / "large-17mib.mp4"
    probe = video.make_sample_clip(path, seconds=8.0, width=160, height=120, fps=FPS, bitrate=18_500_000)
    assert probe.size_bytes > 17 * MIB
    return path


def job_of(emulator: Any, job_id: str) -> dict[str, Any]:
    """A job as the emulator serves it (``GET /v1/jobs/{id}``)."""
    response = httpx.get(f"{emulator.base_url}/jobs/{job_id}", auth=("reader", "reader"), timeout=10)
    response.raise_for_status()
    job: dict[str, Any] = response.json()["job"]
    return job


def check_stored(output: Any) -> Path:
    """An output's file is there, with the size and sha256 recorded."""
    file = Path(output.location)
    assert file.is_file(), file
    assert file.stat().st_size == output.size
    assert sha256_of(file) == output.sha256
    return file


def asset_of(emulator: Any, asset_id: str) -> dict[str, Any]:
    response = httpx.get(f"{emulator.base_url}/assets/{asset_id}", auth=("reader", "reader"), timeout=10)
    response.raise_for_status()
    asset: dict[str, Any] = response.json()["asset"]
    return asset


# ---------------------------------------------------------------------------------------------
# Planning and mapping (no jobs)
# ---------------------------------------------------------------------------------------------


def test_the_split_lands_on_scene_cuts_when_there_are_some(media_dir: Path) -> None:
    # Three shots of 20, 20 and 22 s (different scenes), joined: the even split of 62 s into three
    # would cut at 20.67 s and 41.33 s; the plan moves both cuts to the scene changes.
    shots = []
    for number, (seconds, seed) in enumerate([(20.0, 1), (20.0, 5), (22.0, 9)]):
        shot = media_dir / f"shot{number}.mp4"
        video.make_sample_clip(shot, seconds=seconds, width=160, height=120, fps=FPS, seed=seed)
        shots.append(shot)
    joined = media_dir / "three-shots.mp4"
    video.concat_videos(shots, joined)
    spans = video.plan_split(joined, max_seconds=30, max_bytes=16 * MIB)
    assert [(s.start_frame, s.end_frame, s.cut) for s in spans] == [
        (0, 240, "start"),
        (240, 480, "scene"),
        (480, 744, "scene"),
    ]


def test_without_scene_cuts_the_split_lands_on_the_source_keyframes(clip_75s: Path) -> None:
    spans = video.plan_split(clip_75s, max_seconds=29, max_bytes=16 * MIB)
    # The sample clip has a keyframe every 2 s (24 frames); the even cuts (25 s, 50 s) move to the
    # nearest ones, and every chunk stays within the limit.
    assert [(s.start_seconds, s.end_seconds, s.cut) for s in spans] == [
        (0.0, 24.0, "start"),
        (24.0, 50.0, "keyframe"),
        (50.0, 75.0, "keyframe"),
    ]
    assert all(s.duration_seconds <= 29 for s in spans)


def test_reference_images_go_to_the_chunk_holding_their_time(clip_75s: Path) -> None:
    spans = video.plan_split(clip_75s, max_seconds=29, max_bytes=16 * MIB)
    assert [chunk_at(spans, t) for t in (0.0, 23.99, 24.0, 49.9, 50.0, 75.0)] == [0, 0, 1, 1, 2, 2]
    mapped = map_references(
        spans,
        [KeyframeSpec(image="a.png", seconds=10), KeyframeSpec(image="b.png", at=0.9)],
        [],
        75.0,
    )
    assert [[(k.image, k.seconds) for k in m.keyframes] for m in mapped] == [
        [("a.png", 10.0)],
        [],
        [("b.png", 17.5)],  # 0.9 x 75 s = 67.5 s, 17.5 s into the chunk starting at 50 s
    ]
    images = map_references(spans, [], [PromptImageSpec(image="c.png", position_percentage=0.5)], 75.0)
    assert [[(p.image, p.timestamp_seconds) for p in m.prompt_images] for m in images] == [
        [],
        [("c.png", 13.5)],  # 37.5 s of the output is 13.5 s into the second chunk
        [],
    ]


# ---------------------------------------------------------------------------------------------
# The flow
# ---------------------------------------------------------------------------------------------


async def test_a_75_second_clip_is_edited_as_chunk_jobs_and_stitched_back(
    live_emulator: Any, credentials: Any, clip_75s: Path, sample_image: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    source = video.probe_video(clip_75s)
    keyframe_times = [10.0, 30.0, 0.9 * source.duration_seconds]
    state = await aleph_edit(
        str(clip_75s),
        PROMPT,
        keyframes=[
            KeyframeSpec(image=str(sample_image), seconds=10.0),
            KeyframeSpec(image=str(sample_image), seconds=30.0),
            KeyframeSpec(image=str(sample_image), at=0.9),
        ],
        seed=7,
        destination=str(out),
        credentials=credentials,
        allow_split=True,
        max_creative_units=1000,
        return_state=True,
    )
    result = await state.aresult()

    # Three or more chunk jobs, covering the clip end to end, each within Aleph's limits.
    chunks = result.chunks
    assert len(chunks) >= 3
    assert chunks[0].start_seconds == 0.0
    assert abs(chunks[-1].end_seconds - source.duration_seconds) < 1 / FPS
    assert all(a.end_seconds == b.start_seconds for a, b in itertools.pairwise(chunks))
    assert all(c.end_seconds - c.start_seconds <= 30 for c in chunks)
    job_ids = [c.job_id for c in chunks]
    assert len(set(job_ids)) == len(chunks)
    assert None not in job_ids
    counters = stats(live_emulator)
    assert counters["jobs_created"] == len(chunks)
    assert counters["dry_runs"] == len(chunks)  # every chunk estimated before anything was spent

    # The jobs as the emulator holds them: same prompt and seed, their own chunk video each, and
    # every keyframe in the chunk holding its time, at the chunk's local time.
    inputs = [job_of(live_emulator, str(job_id))["metadata"]["input"] for job_id in job_ids]
    assert {i["prompt"] for i in inputs} == {PROMPT}
    assert {i["seed"] for i in inputs} == {7}
    assert len({i["video"] for i in inputs}) == len(chunks)
    expected: dict[int, list[float]] = {}
    for t in keyframe_times:
        chunk = next(c for c in chunks if c.start_seconds <= t < c.end_seconds)
        expected.setdefault(chunk.index, []).append(round(t - chunk.start_seconds, 3))
    for chunk, wire in zip(chunks, inputs, strict=True):
        assert [k["seconds"] for k in wire.get("keyframes", [])] == expected.get(chunk.index, [])
        assert all("at" not in k for k in wire.get("keyframes", []))
        # Each chunk video is within the limits, as the emulator measured it.
        properties = asset_of(live_emulator, wire["video"])["properties"]
        assert properties["duration"] <= 30
        assert properties["size"] <= 16 * MIB
    assert expected == {0: [10.0], 1: [6.0], 2: [17.5]}  # chunks 0-24 s, 24-50 s, 50-75 s

    # One stitched video: the source's duration within one frame, the source's audio.
    assert len(result.outputs) == 1
    stitched = result.outputs[0]
    stitched_file = check_stored(stitched)
    probe = video.probe_video(stitched_file)
    assert abs(probe.duration_seconds - source.duration_seconds) <= 1 / FPS
    assert probe.nb_frames == source.nb_frames
    assert probe.has_audio
    print(
        f"75 s clip: {len(chunks)} chunk jobs "
        f"({', '.join(f'{c.start_seconds:g}-{c.end_seconds:g} s' for c in chunks)}), stitched "
        f"{probe.duration_seconds:.3f} s vs source {source.duration_seconds:.3f} s, "
        f"{result.creative_units_cost} CU"
    )

    # Every chunk's own output is stored too, and the money adds up.
    for chunk in chunks:
        assert chunk.status == "success"
        assert chunk.outputs
        check_stored(chunk.outputs[0])
    assert result.creative_units_cost == sum(c.creative_units_cost or 0 for c in chunks)
    assert result.estimated_creative_units == sum(c.estimated_creative_units or 0 for c in chunks)
    assert result.job_id is None

    # The manifest lists every chunk's job, cost and outputs, and the stitched output first.
    manifest = json.loads(json.dumps(result.to_manifest(relative_to=out)))
    assert manifest["outputs"][0]["path"] == stitched.path
    assert manifest["outputs"][0]["sha256"] == stitched.sha256
    assert [c["job_id"] for c in manifest["chunks"]] == job_ids
    for entry in manifest["chunks"]:
        assert set(entry) >= {
            "index",
            "start_seconds",
            "end_seconds",
            "job_id",
            "creative_units_cost",
            "outputs",
        }
        assert (out / entry["outputs"][0]["path"]).is_file()

    # The whole clip's estimate was logged before the first job was submitted.
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    messages = [log.message for log in await logs(flow_run_id)]
    estimate_line = next(i for i, m in enumerate(messages) if m.startswith("Estimate for the whole clip"))
    first_submit = next(i for i, m in enumerate(messages) if " submitted to " in m)
    assert estimate_line < first_submit
    summary = next(a for a in await artifacts(flow_run_id) if a.key == "aleph-edit-summary")
    assert "## Chunks" in str(summary.data)
    assert all(str(job_id) in str(summary.data) for job_id in job_ids)


async def test_the_budget_applies_to_the_whole_clip_and_a_dry_run_prices_every_chunk(
    live_emulator: Any, credentials: Any, clip_75s: Path, tmp_path: Path
) -> None:
    out = str(tmp_path / "out")
    dry = await aleph_edit(
        str(clip_75s), PROMPT, destination=out, credentials=credentials, allow_split=True, dry_run=True
    )
    assert dry.is_dry_run
    assert len(dry.chunks) == 3
    assert all(c.status == "estimated" and c.job_id is None for c in dry.chunks)
    # The emulator prices Aleph at 10 CU per started second: 24 s + 26 s + 25 s.
    assert [c.estimated_creative_units for c in dry.chunks] == [240, 260, 250]
    assert dry.estimated_creative_units == 750

    # Each chunk alone is under the budget; the total is not: refused before any job.
    state = await aleph_edit(
        str(clip_75s),
        PROMPT,
        destination=out,
        credentials=credentials,
        allow_split=True,
        max_creative_units=500,
        return_state=True,
    )
    with pytest.raises(BudgetExceededError, match="would cost 750 creative units") as caught:
        await state.aresult()
    assert caught.value.estimate == 750
    assert caught.value.budget == 500
    counters = stats(live_emulator)
    assert counters["jobs_created"] == 0
    assert counters["dry_runs"] == 6


async def test_a_chunk_failed_on_the_server_is_retried_as_a_new_job(
    live_emulator: Any, credentials: Any, clip_31s: Path, tmp_path: Path
) -> None:
    faults(live_emulator, {"route": GENERATE_ROUTE, "kind": "fail_job", "count": 1})
    out = str(tmp_path / "out")
    inputs = {"seed": 11, "destination": out, "credentials": credentials, "allow_split": True}
    result = await aleph_edit(str(clip_31s), PROMPT, **inputs)
    assert len(result.chunks) == 2
    retried = [c for c in result.chunks if c.failed_job_ids]
    assert len(retried) == 1
    chunk = retried[0]
    assert chunk.job_id not in chunk.failed_job_ids
    failed_job = job_of(live_emulator, chunk.failed_job_ids[0])
    assert failed_job["status"] == "failure"
    # The retry is a job of its own with the same inputs.
    assert job_of(live_emulator, str(chunk.job_id))["metadata"]["input"] == failed_job["metadata"]["input"]
    assert stats(live_emulator)["jobs_created"] == 3
    stitched = video.probe_video(Path(result.outputs[0].location))
    assert abs(stitched.duration_seconds - video.probe_video(clip_31s).duration_seconds) <= 1 / FPS
    # A rerun with the same inputs reuses both chunks' jobs, the retried chunk's new one included.
    again = await aleph_edit(str(clip_31s), PROMPT, **inputs)
    assert [c.job_id for c in again.chunks] == [c.job_id for c in result.chunks]
    assert stats(live_emulator)["jobs_created"] == 3


async def test_a_chunk_that_still_fails_fails_the_flow_and_nothing_is_stitched(
    live_emulator: Any, credentials: Any, clip_31s: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    faults(live_emulator, {"route": GENERATE_ROUTE, "kind": "fail_job", "count": 1})
    state = await aleph_edit(
        str(clip_31s),
        PROMPT,
        destination=str(out),
        credentials=credentials,
        allow_split=True,
        chunk_retries=0,
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(ChunksFailedError) as caught:
        await state.aresult()
    error = caught.value
    assert len(error.failed_chunks) == 1
    message = str(error)
    assert f"chunk {error.failed_chunks[0]} (" in message
    assert "not stitched" in message
    assert error.job_id
    assert job_of(live_emulator, error.job_id)["status"] == "failure"
    assert stats(live_emulator)["jobs_created"] == 2
    # No stitched video from a partial set; the finished chunk (paid for) is stored.
    assert not list(out.glob("aleph-stitched-*"))
    stored = [p for p in out.rglob("*.mp4")]
    assert len(stored) == 1
    assert str(stored[0].resolve()) in message


async def test_a_retry_of_the_flow_run_pays_only_for_the_failed_chunk(
    live_emulator: Any, credentials: Any, clip_31s: Path, tmp_path: Path
) -> None:
    faults(live_emulator, {"route": GENERATE_ROUTE, "kind": "fail_job", "count": 1})
    state = await aleph_edit.with_options(retries=1)(
        str(clip_31s),
        PROMPT,
        destination=str(tmp_path / "out"),
        credentials=credentials,
        allow_split=True,
        chunk_retries=0,
        return_state=True,
    )
    result = await state.aresult()
    assert [c.status for c in result.chunks] == ["success", "success"]
    # First attempt: two jobs, one failed. The retry found the finished chunk's job in its persisted
    # submit and paid only for a new job of the failed chunk.
    assert stats(live_emulator)["jobs_created"] == 3
    assert all(job_of(live_emulator, str(c.job_id))["status"] == "success" for c in result.chunks)
    assert len(result.outputs) == 1


async def test_a_clip_over_16_mib_is_fitted_when_asked_and_the_result_says_so(
    live_emulator: Any, credentials: Any, clip_17mib: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = await aleph_edit(
        str(clip_17mib), PROMPT, destination=str(out), credentials=credentials, fit_to_limits=True
    )
    assert result.fitted_to_limits
    assert result.job_id is not None
    assert not result.chunks
    assert any("re-encoded to fit" in note for note in result.notes)
    sent = job_of(live_emulator, result.job_id)["metadata"]["input"]["video"]
    properties = asset_of(live_emulator, sent)["properties"]
    assert properties["size"] <= 16 * MIB
    assert properties["codecName"] == "h264"
    assert result.to_manifest(relative_to=out)["fitted_to_limits"] is True
    assert result.sources["video"] == str(clip_17mib)
    assert stats(live_emulator)["jobs_created"] == 1


def test_the_cli_splits_by_default(
    live_emulator: Any, scenario_env: dict[str, str], clip_31s: Path, tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    out = tmp_path / "cli"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefect_scenario.cli",
            "edit",
            str(clip_31s),
            "--prompt",
            PROMPT,
            "--seed",
            "5",
            "--out",
            str(out),
        ],
        cwd=REPO,
        env={
            **os.environ,
            **scenario_env,
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "PYTHONPATH": str(REPO),
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "2 chunk jobs" in done.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["chunks"]) == 2
    stitched = out / manifest["outputs"][0]["path"]
    assert sha256_of(stitched) == manifest["outputs"][0]["sha256"]
    assert video.probe_video(stitched).has_audio
    assert stats(live_emulator)["jobs_created"] == 2
