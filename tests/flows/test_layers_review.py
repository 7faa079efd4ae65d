"""Beside the layers: a composite preview video, a contact sheet, and a PSNR figure against the source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from prefect_scenario import video
from prefect_scenario.emulator.service.fakes import extract_layers
from prefect_scenario.flows import video_to_layers
from prefect_scenario.flows.result import ScenarioRunResult
from prefect_scenario.manifest import StoredOutput
from prefect_scenario.models import VIDEO_LAYERS_MODEL_ID
from support.files import sha256_of
from support.prefect_api import artifacts, logs

INSTRUCTION = "each moving shape apart from the background"


def check_previews(result: ScenarioRunResult, source: Path) -> tuple[video.VideoProbe, Image.Image]:
    """Both previews are stored intact and decode: the composite as a video, the sheet as a JPEG."""
    assert [p.kind for p in result.previews] == ["preview", "preview"]
    composite, sheet = result.previews
    for preview in result.previews:
        file = Path(preview.location)
        assert file.is_file()
        assert file.stat().st_size == preview.size
        assert sha256_of(file) == preview.sha256
        # Beside the layers: in the job's own folder.
        assert file.parent == Path(result.outputs[0].location).parent
    assert composite.mime_type == "video/mp4"
    probe = video.probe_video(Path(composite.location))
    original = video.probe_video(source)
    assert (probe.width, probe.height, probe.nb_frames) == (
        original.width,
        original.height,
        original.nb_frames,
    )
    assert sheet.mime_type == "image/jpeg"
    with Image.open(sheet.location) as image:
        image.load()
        assert image.format == "JPEG"
        picture = image.copy()
    return probe, picture


async def test_layers_come_with_a_composite_preview_a_contact_sheet_and_a_psnr(
    live_emulator: Any, credentials: Any, sample_clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    state = await video_to_layers(
        str(sample_clip),
        INSTRUCTION,
        max_layers=3,
        destination=str(out),
        credentials=credentials,
        return_state=True,
    )
    result = await state.aresult()
    # The job's own outputs are the layers only; the previews are kept apart.
    assert len(result.outputs) == 3
    assert all(o.mime_type == "video/webm" for o in result.outputs)
    composite, sheet = check_previews(result, sample_clip)
    assert composite.video_codec == "h264"
    assert sheet.width > 0
    assert result.preview == result.previews[1].location

    psnr = result.composite_psnr_db
    assert psnr is not None
    assert psnr >= 30, psnr
    print(f"layers composite back to the source at {psnr:.2f} dB PSNR ({len(result.outputs)} layers)")

    manifest = json.loads(json.dumps(result.to_manifest(relative_to=out)))
    assert manifest["composite_psnr_db"] == psnr
    assert [p["path"] for p in manifest["previews"]] == [p.path for p in result.previews]
    for entry in manifest["previews"]:
        assert (out / entry["path"]).is_file()

    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    summary = next(a for a in await artifacts(flow_run_id) if a.key == "video-to-layers-summary")
    assert f"{psnr:.1f} dB PSNR: the layers composite back to the source" in str(summary.data)
    assert "composite-preview.mp4" in str(summary.data)
    assert "data:image/jpeg;base64," in str(summary.data)


async def test_a_clip_given_as_an_asset_id_gets_previews_and_a_note_instead_of_a_psnr(
    live_emulator: Any, credentials: Any, sample_clip: Path, tmp_path: Path
) -> None:
    async with credentials.get_client() as client:
        asset = await client.uploads.upload_file(sample_clip, kind="video")
    result = await video_to_layers(
        asset.id, INSTRUCTION, max_layers=2, destination=str(tmp_path / "out"), credentials=credentials
    )
    check_previews(result, sample_clip)
    assert result.composite_psnr_db is None
    assert any("asset id" in note and "no PSNR" in note for note in result.notes)


async def test_layers_that_do_not_add_up_to_the_source_are_flagged(sample_clip: Path, tmp_path: Path) -> None:
    from prefect import flow

    from prefect_scenario.flows.layers_review import review_layers

    # Layers of one clip, reviewed against another of the same size and length: a separation that
    # lost the picture, as far as the review can tell.
    layers = extract_layers(sample_clip, tmp_path / "layers", max_layers=3, instruction="shapes")
    other = tmp_path / "other.mp4"
    source = video.probe_video(sample_clip)
    video.make_sample_clip(
        other, seconds=source.duration_seconds, width=source.width, height=source.height, fps=24, seed=42
    )
    job_id = "job_reviewonly"
    outputs = [
        StoredOutput(
            asset_id=f"asset_{layer.index}",
            path=f"{job_id}/{layer.path.name}",
            location=str(layer.path),
            mime_type="video/webm",
            size=layer.path.stat().st_size,
            sha256=sha256_of(layer.path),
            output_index=layer.index,
            kind="video",
        )
        for layer in sorted(layers, key=lambda layer: layer.index)
    ]
    result = ScenarioRunResult(
        model_id=VIDEO_LAYERS_MODEL_ID,
        job_id=job_id,
        status="success",
        outputs=outputs,
        destination=str(tmp_path / "dest"),
    )

    @flow(name="review-only")
    async def review() -> ScenarioRunResult:
        reviewed, _ = await review_layers(result, source=other, destination_storage=None)
        return reviewed

    state = await review(return_state=True)
    reviewed = await state.aresult()
    assert reviewed.composite_psnr_db is not None
    assert reviewed.composite_psnr_db < 30
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    warnings = [log.message for log in await logs(flow_run_id) if log.level >= 30]
    assert any("do not composite back to the source: check the separation" in w for w in warnings), warnings
