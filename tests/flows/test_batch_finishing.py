"""What a batch does after a clip's job: a long Aleph clip split and stitched, layers reviewed, S3 read once.

Against the live emulator (whose fakes restyle and separate for real), the session's Prefect server,
and moto's S3 server for the bucket test. Each batch's table artifact is read back from Prefect.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect.client.schemas.objects import StateType

from prefect_scenario import video
from prefect_scenario.flows.batch import BatchResult, aleph_edit_batch, video_to_layers_batch
from support.emulator import stats
from support.files import sha256_of
from support.prefect_api import artifacts

FPS = 12
PROMPT = "turn it into a watercolour painting"
INSTRUCTION = "each moving object apart from the background"


def _stored(output: Any) -> Path:
    """The output's file, checked against its recorded size and sha256."""
    file = Path(output.location)
    assert file.is_file(), file
    assert file.stat().st_size == output.size
    assert sha256_of(file) == output.sha256
    return file


def _table(rows: str) -> list[dict[str, Any]]:
    data = json.loads(rows)
    assert isinstance(data, list)
    return data


async def _clips_table(state: Any, flow_slug: str) -> list[dict[str, Any]]:
    found = [a for a in await artifacts(state.state_details.flow_run_id) if a.key == f"{flow_slug}-clips"]
    assert found, "no clips table"
    return _table(found[0].data)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 75 s clip with audio (three chunks of at most 29 s) beside two short clips."""
    folder = tmp_path_factory.mktemp("mixed-clips")
    video.make_sample_clip(
        folder / "a-long-75s.mp4", seconds=75.0, width=160, height=120, fps=FPS, with_audio=True
    )
    for index in range(2):
        video.make_sample_clip(
            folder / f"b-short-{index}.mp4", seconds=2.0, width=160, height=120, fps=FPS, seed=index + 4
        )
    return folder


async def test_aleph_batch_splits_a_long_clip_and_stitches_it_back_with_its_audio(
    live_emulator: Any, credentials: Any, mixed_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    state = await aleph_edit_batch(
        PROMPT,
        folder=str(mixed_folder),
        seed=7,
        destination=str(out),
        credentials=credentials,
        concurrency_limit_name=None,
        return_state=True,
    )
    result = await state.aresult()
    assert isinstance(result, BatchResult)
    assert state.type == StateType.COMPLETED, state.message
    assert [c.status for c in result.clips] == ["succeeded"] * 3, result.message()

    long_clip, *short_clips = result.clips
    assert Path(long_clip.video).name == "a-long-75s.mp4"
    # Three or more chunk jobs, one stitched video: the source's frames (±1) and its audio.
    assert len(long_clip.chunk_job_ids) >= 3
    assert long_clip.job_id is None
    assert len(long_clip.outputs) == 1
    stitched = _stored(long_clip.outputs[0])
    source = video.probe_video(mixed_folder / "a-long-75s.mp4")
    probe = video.probe_video(stitched)
    assert abs(probe.nb_frames - source.nb_frames) <= 1
    assert abs(probe.duration_seconds - source.duration_seconds) <= 1 / FPS
    assert probe.has_audio
    assert any("split into" in note for note in long_clip.notes), long_clip.notes
    for clip in short_clips:
        assert clip.job_id
        assert not clip.chunk_job_ids
    jobs = len(long_clip.chunk_job_ids) + 2
    assert stats(live_emulator)["jobs_created"] == jobs
    assert result.creative_units_cost == sum(c.creative_units_cost or 0 for c in result.clips)

    # The table says how the long clip was made: its chunk jobs and the split.
    rows = await _clips_table(state, "aleph-edit-batch")
    assert f"{len(long_clip.chunk_job_ids)} chunk jobs" in rows[0]["job_id"]
    assert "split into" in rows[0]["notes"]
    assert rows[1]["job_id"] == short_clips[0].job_id
    print(
        f"aleph batch: long clip {len(long_clip.chunk_job_ids)} chunk jobs, stitched {probe.nb_frames} "
        f"frames / {probe.duration_seconds:.3f} s vs source {source.nb_frames} / "
        f"{source.duration_seconds:.3f} s, audio {probe.has_audio}"
    )

    # The same batch again (same seed): every job is reused, none created.
    again = await aleph_edit_batch(
        PROMPT,
        folder=str(mixed_folder),
        seed=7,
        destination=str(out),
        credentials=credentials,
        concurrency_limit_name=None,
        return_state=True,
    )
    rerun = await again.aresult()
    assert again.type == StateType.COMPLETED, again.message
    assert stats(live_emulator)["jobs_created"] == jobs
    assert all(c.reused for c in rerun.clips)
    assert rerun.creative_units_cost == 0
    assert rerun.clips[0].chunk_job_ids == long_clip.chunk_job_ids


async def test_aleph_batch_without_splitting_fails_only_the_long_clip(
    live_emulator: Any, credentials: Any, mixed_folder: Path, tmp_path: Path
) -> None:
    state = await aleph_edit_batch(
        PROMPT,
        folder=str(mixed_folder),
        destination=str(tmp_path / "out"),
        credentials=credentials,
        concurrency_limit_name=None,
        allow_split=False,
        return_state=True,
    )
    result = await state.aresult(raise_on_failure=False)
    assert state.type == StateType.FAILED
    assert [c.status for c in result.clips] == ["failed", "succeeded", "succeeded"]
    assert "allow" in (result.clips[0].error or "")
    # Refused before anything was uploaded or spent: only the two short clips' jobs exist.
    assert stats(live_emulator)["jobs_created"] == 2


async def test_layers_batch_reviews_every_clip_and_shows_its_psnr(
    live_emulator: Any, credentials: Any, mixed_folder: Path, tmp_path: Path
) -> None:
    videos = [str(mixed_folder / f"b-short-{index}.mp4") for index in range(2)]
    state = await video_to_layers_batch(
        INSTRUCTION,
        videos=videos,
        max_layers=2,
        destination=str(tmp_path / "out"),
        credentials=credentials,
        concurrency_limit_name=None,
        return_state=True,
    )
    result = await state.aresult()
    assert state.type == StateType.COMPLETED, state.message
    for clip in result.clips:
        assert clip.composite_psnr_db is not None
        assert clip.composite_psnr_db > 30, clip
        assert {Path(p.location).name for p in clip.previews} == {
            "composite-preview.mp4",
            "contact-sheet.jpg",
        }
        for preview in clip.previews:
            _stored(preview)
    rows = await _clips_table(state, "video-to-layers-batch")
    assert [row["psnr_db"] for row in rows] == [c.composite_psnr_db for c in result.clips]
    print("layers batch PSNR:", [row["psnr_db"] for row in rows])


async def test_a_layers_batch_without_review_stores_the_layers_and_nothing_else(
    live_emulator: Any, credentials: Any, mixed_folder: Path, tmp_path: Path
) -> None:
    state = await video_to_layers_batch(
        INSTRUCTION,
        videos=[str(mixed_folder / "b-short-0.mp4")],
        max_layers=2,
        destination=str(tmp_path / "out"),
        credentials=credentials,
        concurrency_limit_name=None,
        review=False,
        return_state=True,
    )
    result = await state.aresult()
    assert state.type == StateType.COMPLETED, state.message
    [clip] = result.clips
    assert clip.outputs
    assert clip.previews == []
    assert clip.composite_psnr_db is None
    stored = sorted(path.name for path in (tmp_path / "out").rglob("*") if path.is_file())
    assert stored == sorted(Path(output.location).name for output in clip.outputs)


async def test_a_batch_from_s3_fetches_each_clip_from_the_bucket_once(
    live_emulator: Any,
    credentials: Any,
    mixed_folder: Path,
    s3_bucket: Any,
    moto_requests: list[tuple[str, str]],
    tmp_path: Path,
) -> None:
    names = ["b-short-0.mp4", "b-short-1.mp4"]
    for name in names:
        await s3_bucket.aupload_from_path(mixed_folder / name, f"incoming/{name}")
    moto_requests.clear()

    state = await video_to_layers_batch(
        INSTRUCTION,
        folder="incoming/",
        video_storage=s3_bucket,
        max_layers=2,
        destination=str(tmp_path / "out"),
        credentials=credentials,
        concurrency_limit_name=None,
        return_state=True,
    )
    result = await state.aresult()
    assert state.type == StateType.COMPLETED, state.message
    assert [c.source for c in result.clips] == [f"s3-bucket:incoming/{name}" for name in names]
    # Reviewed against the source: the one local copy served the probe, the upload and the PSNR.
    assert all(c.composite_psnr_db is not None for c in result.clips)
    gets = [path for method, path in moto_requests if method == "GET" and "/incoming/" in path]
    for name in names:
        assert sum(1 for path in gets if path.endswith(f"/incoming/{name}")) == 1, gets
    print(f"S3 batch: {len(gets)} GETs of clip objects for {len(names)} clips")


async def test_a_batch_resolves_its_credentials_once_and_shares_one_client(
    live_emulator: Any, credentials: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect_scenario.blocks import ScenarioCredentials

    clips = tmp_path / "clips"
    clips.mkdir()
    for index in range(6):
        video.make_sample_clip(clips / f"c{index}.mp4", seconds=1.0, width=96, height=64, fps=8, seed=index)
    name = f"batch-creds-{uuid.uuid4().hex[:8]}"
    await credentials.save(name, overwrite=True)
    loads: list[str] = []
    original = ScenarioCredentials.aload.__func__  # type: ignore[attr-defined]

    async def counted(cls: Any, block_name: str, *args: Any, **kwargs: Any) -> Any:
        loads.append(block_name)
        return await original(cls, block_name, *args, **kwargs)

    monkeypatch.setattr(ScenarioCredentials, "aload", classmethod(counted))
    live_emulator.state.reset()

    state = await video_to_layers_batch(
        INSTRUCTION,
        folder=str(clips),
        max_layers=2,
        destination=str(tmp_path / "out"),
        credentials=f"scenario-credentials/{name}",
        concurrency_limit_name=None,
        return_state=True,
    )
    result = await state.aresult()
    assert state.type == StateType.COMPLETED, state.message
    assert len(result.succeeded) == 6
    assert loads == [name]  # once for the flow run, not once per task
    counters = stats(live_emulator)
    requests = sum(counters["requests"].values())
    # Every task of the flow run shares one client: its connections are bounded by how many requests
    # run at once (uploads of 8 clips being prepared at a time), not by the number of task runs.
    assert counters["connections"] <= 12, counters  # 30 with a client per task
    print(f"batch of 6 clips: {requests} API requests over {counters['connections']} connections")
