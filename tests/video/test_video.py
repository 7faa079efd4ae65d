"""Local media work: probing, compositing layers, splitting, joining, previews.

The layer files come from the emulator's fake Video to Layers (its own tests are in
tests/emulator/test_fake_models.py): the product composites and previews layers whatever made them.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image

from prefect_scenario import video
from prefect_scenario.emulator.service.fakes import LayerFile
from prefect_scenario.video import MediaError

MIB = 1024 * 1024


# --- probing ---------------------------------------------------------------------------------


def test_probe_reports_exact_frames_rate_size_and_audio(clip: Path, clip_with_audio: Path) -> None:
    plain = video.probe_video(clip)
    assert (plain.nb_frames, plain.frame_rate, plain.width, plain.height) == (96, 24.0, 320, 240)
    assert plain.duration_seconds == pytest.approx(4.0, abs=0.05)
    assert (plain.container, plain.video_codec, plain.pixel_format) == ("mp4", "h264", "yuv420p")
    assert not plain.has_audio
    assert plain.audio_codec is None
    assert not plain.has_alpha
    assert plain.size_bytes == clip.stat().st_size

    voiced = video.probe_video(clip_with_audio)
    assert (voiced.nb_frames, voiced.frame_rate) == (75, 25.0)
    assert voiced.has_audio
    assert voiced.audio_codec == "aac"
    assert voiced.duration_seconds == pytest.approx(3.0, abs=0.05)
    assert video.mime_type_for(clip) == "video/mp4"


def test_probe_rejects_a_text_file_named_mp4(tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 50)
    with pytest.raises(MediaError, match=r"is not a decodable video: .*; fix: "):
        video.probe_video(fake)


def test_probe_rejects_a_truncated_mp4(clip: Path, tmp_path: Path) -> None:
    data = clip.read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="is not a decodable video"):
        video.probe_video(half)


def test_probe_rejects_a_truncated_webm_whose_header_survives(
    layers_by_max: dict[int, list[LayerFile]], tmp_path: Path
) -> None:
    # WebM keeps its header at the front, so only counting what is left can tell.
    data = layers_by_max[3][1].path.read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[: int(len(data) * 0.95)])
    with pytest.raises(MediaError, match="truncated"):
        video.probe_video(cut)


def test_probe_rejects_an_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError):
        video.probe_video(empty)


def test_image_probe_and_mime_types(tmp_path: Path) -> None:
    png = video.make_sample_image(tmp_path / "red.png", color=(255, 0, 0), width=32, height=16)
    assert (png.format, png.width, png.height, png.mime_type) == ("png", 32, 16, "image/png")
    jpeg_path = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(jpeg_path, format="JPEG")
    assert video.probe_image(jpeg_path).mime_type == "image/jpeg"
    webp_path = tmp_path / "picture.webp"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(webp_path, format="WEBP")
    assert video.mime_type_for(webp_path) == "image/webp"

    broken = tmp_path / "broken.png"
    broken.write_bytes(png.path.read_bytes()[:40])
    with pytest.raises(MediaError, match="not a decodable image"):
        video.probe_image(broken)
    text = tmp_path / "text.png"
    text.write_text("nope")
    with pytest.raises(MediaError):
        video.probe_image(text)
    # Content wins over the name: a PNG saved as .mp4 is still a PNG.
    misnamed = tmp_path / "misnamed.mp4"
    misnamed.write_bytes(png.path.read_bytes())
    assert video.mime_type_for(misnamed) == "image/png"
    assert video.mime_type_for(tmp_path / "missing.mov") == "video/quicktime"


# --- compositing layers ----------------------------------------------------------------------


def test_composite_rejects_layers_of_different_lengths(
    layers_by_max: dict[int, list[LayerFile]], clip_with_audio: Path
) -> None:
    with pytest.raises(MediaError):
        list(video.composite_layers([layers_by_max[1][0].path, clip_with_audio]))


# --- previews --------------------------------------------------------------------------------


def test_contact_sheet_is_a_small_jpeg(layers_by_max: dict[int, list[LayerFile]], tmp_path: Path) -> None:
    layers = [layer.path for layer in layers_by_max[3]]
    sheet = video.contact_sheet(layers, tmp_path / "sheet.jpg", max_bytes=60_000)
    assert sheet.read_bytes()[:3] == b"\xff\xd8\xff"
    assert sheet.stat().st_size <= 60_000
    with Image.open(sheet) as image:
        assert image.format == "JPEG"
        assert image.width > 3 * 100
        assert image.height > 3 * 60
    tight = video.contact_sheet(layers, tmp_path / "tight.jpg", max_bytes=8_000)
    assert tight.stat().st_size <= 8_000

    frames = video.first_frames_sheet([layers[0]], tmp_path / "first.jpg", frames=4)
    assert frames.stat().st_size <= 60_000
    with Image.open(frames) as image:
        assert image.format == "JPEG"


def test_composite_preview_is_an_h264_clip_of_the_same_length(
    layers_by_max: dict[int, list[LayerFile]], tmp_path: Path
) -> None:
    preview = video.composite_preview(
        [layer.path for layer in layers_by_max[2][1:]], tmp_path / "preview.mp4"
    )
    probe = video.probe_video(preview)
    assert (probe.video_codec, probe.nb_frames, probe.pixel_format) == ("h264", 96, "yuv420p")
    # Only the object layer: the checkerboard shows through where it is transparent.
    frame = next(video.composite_layers([preview]))
    assert {int(frame[0, 0, 0]), int(frame[0, 8, 0])} <= set(range(0x60, 0xA0))


# --- long clips: split, join, fit ------------------------------------------------------------


def test_split_and_concat_a_75_second_clip_with_audio(media: Path) -> None:
    long_clip = media / "long.mp4"
    started = time.perf_counter()
    # Splitting and joining re-encode everything: a smaller frame keeps the test quick.
    source = video.make_sample_clip(long_clip, seconds=75.0, width=160, height=120, with_audio=True)
    print(f"make_sample_clip 75 s 160x120 with audio: {time.perf_counter() - started:.2f} s")
    assert (source.nb_frames, source.has_audio) == (1800, True)

    parts = video.split_video(long_clip, media / "parts", max_seconds=30, max_bytes=16 * MIB)
    assert len(parts) >= 3
    probes = [video.probe_video(part) for part in parts]
    for probe in probes:
        assert probe.duration_seconds <= 30.0
        assert probe.size_bytes <= 16 * MIB
        assert probe.has_audio
    assert sum(p.nb_frames for p in probes) == source.nb_frames

    joined = video.concat_videos(parts, media / "joined.mp4", audio_from=long_clip)
    assert joined.nb_frames == source.nb_frames
    assert abs(joined.duration_seconds - source.duration_seconds) <= 1 / source.frame_rate
    assert joined.has_audio


def test_concat_with_each_parts_own_audio_gives_back_the_clip(clip_with_audio: Path, tmp_path: Path) -> None:
    source = video.probe_video(clip_with_audio)
    parts = video.split_video(clip_with_audio, tmp_path / "parts", max_seconds=1.0, max_bytes=MIB)
    assert len(parts) == 3
    assert all(video.probe_video(part).nb_frames == 25 for part in parts)
    joined = video.concat_videos(parts, tmp_path / "joined.mp4")
    assert joined.has_audio
    assert joined.nb_frames == source.nb_frames
    assert abs(joined.duration_seconds - source.duration_seconds) <= 1 / source.frame_rate
    psnr = video.psnr_against_source(clip_with_audio, video.composite_layers([joined.path]))
    print(f"split + concat (two generations) PSNR {psnr:.2f} dB")
    assert psnr > 30


def test_split_respects_a_byte_limit(clip: Path, tmp_path: Path) -> None:
    size = clip.stat().st_size
    parts = video.split_video(clip, tmp_path, max_seconds=30, max_bytes=size // 2)
    assert len(parts) >= 2
    assert all(part.stat().st_size <= size // 2 for part in parts)


def test_fit_to_limits_shrinks_a_17_mib_clip(tmp_path: Path) -> None:
    big = video.make_sample_clip(
        tmp_path / "big.mp4", seconds=4.0, bitrate=36_000_000, noise=True, with_audio=True
    )
    assert big.size_bytes > 16 * MIB
    fitted = video.fit_to_limits(big.path, tmp_path / "fitted.mp4", max_bytes=16 * MIB)
    assert fitted.size_bytes <= 16 * MIB
    assert (fitted.nb_frames, fitted.has_audio) == (big.nb_frames, True)
    small = video.fit_to_limits(big.path, tmp_path / "small.mp4", max_bytes=2 * MIB)
    assert small.size_bytes <= 2 * MIB


def test_fit_to_limits_drops_frames_above_max_fps(tmp_path: Path) -> None:
    fast = video.make_sample_clip(tmp_path / "fast.mp4", seconds=1.0, fps=60)
    fitted = video.fit_to_limits(fast.path, tmp_path / "slow.mp4", max_bytes=MIB, max_fps=30)
    assert fitted.frame_rate == 30.0
    assert fitted.nb_frames == 30
    assert fitted.duration_seconds == pytest.approx(1.0, abs=1 / 30)


def test_fit_to_limits_refuses_an_impossible_budget(clip: Path, tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="cannot fit"):
        video.fit_to_limits(clip, tmp_path / "tiny.mp4", max_bytes=2_000)
