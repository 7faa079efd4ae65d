"""Local validation: every bad input fails in about a second with a message that says what to change."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_scenario import video
from prefect_scenario.errors import InputValidationError, MediaError
from prefect_scenario.validation import (
    KeyframeSpec,
    PromptImageSpec,
    validate_aleph_inputs,
    validate_layers_inputs,
)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("validation") / "clip.mp4"
    video.make_sample_clip(path, seconds=2.0, width=160, height=120, fps=12)
    return path


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("validation-img") / "ref.png"
    video.make_sample_image(path, color=(200, 30, 30))
    return path


def test_a_good_layers_request_passes_and_returns_the_probe(clip: Path) -> None:
    probe = validate_layers_inputs(clip, "separate each moving shape", 4)
    assert probe is not None
    assert probe.nb_frames == 24


def test_an_asset_id_skips_the_local_probe() -> None:
    assert validate_layers_inputs(None, "split the people apart", 6) is None


@pytest.mark.parametrize(
    ("instruction", "max_layers", "field", "words"),
    [
        ("", 6, "separation_instruction", "empty"),
        ("   ", 6, "separation_instruction", "empty"),
        ("?!  ...", 6, "separation_instruction", "describes nothing"),
        ("split", 0, "max_layers", "1 to 10"),
        ("split", 11, "max_layers", "1 to 10"),
    ],
)
def test_bad_layers_inputs_say_what_to_change(
    clip: Path, instruction: str, max_layers: int, field: str, words: str
) -> None:
    with pytest.raises(InputValidationError) as caught:
        validate_layers_inputs(clip, instruction, max_layers)
    assert caught.value.field == field
    assert words in str(caught.value)


def test_a_text_file_named_mp4_is_not_a_video(tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 50)
    with pytest.raises(MediaError) as caught:
        validate_layers_inputs(fake, "split", 6)
    assert "notes.mp4" in str(caught.value)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="does not exist"):
        validate_aleph_inputs(tmp_path / "nope.mp4", "make it noir")


def test_a_good_aleph_request_passes(clip: Path, image: Path) -> None:
    probe = validate_aleph_inputs(
        clip, "make it noir", keyframes=[KeyframeSpec(image=str(image), seconds=1.0)], seed=7
    )
    assert probe is not None


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"prompt": "x" * 1001}, "1001 characters"),
        ({"prompt": "   "}, "prompt is empty"),
        ({"seed": -1}, "seed"),
        ({"seed": 4_294_967_296}, "seed"),
        ({"keyframes": "six"}, "at most 5"),
        ({"keyframes": "one", "prompt_images": "one"}, "cannot be used together"),
        ({"keyframes": "late"}, "after the end"),
    ],
)
def test_bad_aleph_inputs_say_what_to_change(
    clip: Path, image: Path, kwargs: dict[str, object], words: str
) -> None:
    call: dict[str, object] = {"prompt": "make it noir"}
    call.update(kwargs)
    keyframes = {
        "six": [KeyframeSpec(image=str(image), seconds=0.1 * i) for i in range(6)],
        "one": [KeyframeSpec(image=str(image), seconds=0.5)],
        "late": [KeyframeSpec(image=str(image), seconds=40.0)],
    }
    if isinstance(call.get("keyframes"), str):
        call["keyframes"] = keyframes[str(call["keyframes"])]
    if call.get("prompt_images") == "one":
        call["prompt_images"] = [PromptImageSpec(image=str(image), timestamp_seconds=0.5)]
    with pytest.raises(InputValidationError) as caught:
        validate_aleph_inputs(clip, **call)  # type: ignore[arg-type]
    assert words in str(caught.value)


def test_an_undecodable_keyframe_image_is_refused(clip: Path, tmp_path: Path) -> None:
    bad = tmp_path / "ref.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(MediaError, match="not a decodable image"):
        validate_aleph_inputs(clip, "noir", keyframes=[KeyframeSpec(image=str(bad), seconds=0.5)])


def test_clip_limits_name_the_limit_and_the_fix(tmp_path: Path) -> None:
    long_clip = tmp_path / "long.mp4"
    video.make_sample_clip(long_clip, seconds=31.0, width=96, height=64, fps=8)
    with pytest.raises(MediaError) as caught:
        validate_aleph_inputs(long_clip, "noir")
    message = str(caught.value)
    assert "30 s" in message
    assert "allow_split" in message
    # The same clip passes when the caller splits it.
    assert validate_aleph_inputs(long_clip, "noir", enforce_clip_limits=False) is not None


@pytest.mark.parametrize(
    ("text", "seconds", "at"),
    [("ref.png@2.5", 2.5, None), ("dir/a@b.png@1", 1.0, None), ("ref.png@50%", None, 0.5)],
)
def test_keyframe_cli_form_parses(text: str, seconds: float | None, at: float | None) -> None:
    spec = KeyframeSpec.parse(text)
    assert (spec.seconds, spec.at) == (seconds, at)


@pytest.mark.parametrize("text", ["ref.png", "ref.png@", "ref.png@soon"])
def test_keyframe_cli_form_errors_show_the_expected_form(text: str) -> None:
    with pytest.raises(InputValidationError, match=r"ref\.png@2\.5"):
        KeyframeSpec.parse(text)
