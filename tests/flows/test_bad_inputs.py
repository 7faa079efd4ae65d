"""A matrix of bad inputs: each fails in a second, locally, with its own message, and costs nothing.

Every case runs through the FLOW (a real flow run on the session's Prefect server, as a deployment
or the UI would start it), and a few through the CLI as a user types them. After each one the
emulator's counters must still read zero: no upload, no dry run, no job.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from prefect_scenario import video
from prefect_scenario.errors import InputValidationError
from prefect_scenario.flows import aleph_edit, aleph_edit_batch, video_to_layers, video_to_layers_batch
from prefect_scenario.validation import KeyframeSpec, PromptImageSpec
from support.emulator import stats

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


@dataclass(frozen=True)
class Media:
    clip_10s: Path
    clip_31s: Path
    clip_17mib: Path
    text_mp4: Path
    truncated_mp4: Path
    image: Path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, sample_image: Path) -> Media:
    root = tmp_path_factory.mktemp("bad-inputs")
    clip_10s = root / "ten-seconds.mp4"
    video.make_sample_clip(clip_10s, seconds=10.0, width=160, height=120, fps=12)
    clip_31s = root / "thirty-one-seconds.mp4"
    video.make_sample_clip(clip_31s, seconds=31.0, width=96, height=64, fps=8)
    clip_17mib = root / "seventeen-mib.mp4"
    probe = video.make_sample_clip(clip_17mib, seconds=8.0, width=160, height=120, fps=12, bitrate=18_500_000)
    assert probe.size_bytes > 17 * MIB
    text_mp4 = root / "notes.mp4"
    text_mp4.write_text("Shot list: 1. wide, 2. close-up, 3. the cat jumps.\n" * 40)
    truncated_mp4 = root / "cut-off.mp4"
    whole = clip_10s.read_bytes()
    truncated_mp4.write_bytes(whole[: len(whole) // 2])
    return Media(clip_10s, clip_31s, clip_17mib, text_mp4, truncated_mp4, sample_image)


Run = Callable[..., Awaitable[Any]]


def _cases(m: Media) -> list[tuple[str, Run, dict[str, Any], str]]:
    """(name, flow, arguments, a part of the expected message) for every bad input."""
    image = str(m.image)
    good = str(m.clip_10s)
    return [
        ("text file named .mp4", video_to_layers, {"video": str(m.text_mp4)}, "is a text file, not a video"),
        (
            "text file named .mp4 (edit)",
            aleph_edit,
            {"video": str(m.text_mp4)},
            "is a text file, not a video",
        ),
        (
            "truncated video",
            aleph_edit,
            {"video": str(m.truncated_mp4)},
            "starts like an MP4/MOV file but FFmpeg cannot decode it: it is truncated or damaged",
        ),
        (
            "truncated video (layers)",
            video_to_layers,
            {"video": str(m.truncated_mp4)},
            "truncated or damaged",
        ),
        (
            "31 s clip, splitting off",
            aleph_edit,
            {"video": str(m.clip_31s), "allow_split": False},
            "lasts 31.00 s; Runway Aleph 2 takes at most 30 s: trim it, or allow splitting",
        ),
        (
            "17 MiB clip, fitting off",
            aleph_edit,
            {"video": str(m.clip_17mib), "fit_to_limits": False},
            "MiB; Runway Aleph 2 takes at most 16 MiB: re-encode it at a lower bitrate, or allow fitting",
        ),
        (
            "6 keyframes",
            aleph_edit,
            {"video": good, "keyframes": [KeyframeSpec(image=image, seconds=s) for s in range(6)]},
            "6 keyframes given; Runway Aleph 2 takes at most 5: drop 1",
        ),
        (
            "keyframes and prompt images",
            aleph_edit,
            {
                "video": good,
                "keyframes": [KeyframeSpec(image=image, seconds=1)],
                "prompt_images": [PromptImageSpec(image=image, timestamp_seconds=1)],
            },
            "keyframes and prompt images cannot be used together",
        ),
        (
            "keyframe at 40 s of a 10 s clip",
            aleph_edit,
            {"video": good, "keyframes": [KeyframeSpec(image=image, seconds=40)]},
            "at 40 s is after the end of the 10.00 s clip: use a time from 0 to 10.00",
        ),
        ("empty prompt", aleph_edit, {"video": good, "prompt": "   "}, "prompt is empty: describe the edit"),
        (
            "prompt that says nothing",
            aleph_edit,
            {"video": good, "prompt": "?!... 42"},
            "describes nothing: say what to change",
        ),
        (
            "empty separation instruction",
            video_to_layers,
            {"video": good, "separation_instruction": ""},
            "separation_instruction is empty: say how to split the clip",
        ),
        (
            "instruction that says nothing",
            video_to_layers,
            {"video": good, "separation_instruction": "- - -"},
            "describes nothing: name what to separate",
        ),
        (
            "max_layers 0",
            video_to_layers,
            {"video": good, "max_layers": 0},
            "max_layers is 0; Video to Layers takes 1 to 10",
        ),
        (
            "max_layers 11",
            video_to_layers,
            {"video": good, "max_layers": 11},
            "max_layers is 11; Video to Layers takes 1 to 10",
        ),
        (
            "a batch suspended outside a deployment",
            video_to_layers_batch,
            {"videos": [good], "wait": "suspend"},
            "wait='suspend' cannot work here: this flow run has no deployment",
        ),
        (
            "a spread batch that would suspend",
            video_to_layers_batch,
            {"videos": [good], "wait": "suspend", "clips_per_flow_run": 5},
            "wait='suspend' with clips_per_flow_run: a spread batch waits on its child flow runs",
        ),
        (
            "an unknown wait mode (batch)",
            aleph_edit_batch,
            {"videos": [good], "wait": "later"},
            "wait must be one of 'inline', 'suspend', not 'later'",
        ),
        (
            "1001-character prompt",
            aleph_edit,
            {"video": good, "prompt": "snow " * 200 + "x"},
            "prompt is 1001 characters; Runway Aleph 2 takes at most 1000: shorten it by 1",
        ),
    ]


async def test_every_bad_input_fails_the_flow_with_its_own_message_and_costs_nothing(
    live_emulator: Any, credentials: Any, media: Media, tmp_path: Path
) -> None:
    messages: dict[str, str] = {}
    for name, flow, arguments, expected in _cases(media):
        defaults: dict[str, Any] = (
            {"prompt": "make it a snowy night"}
            if flow in (aleph_edit, aleph_edit_batch)
            else {"separation_instruction": "each moving shape apart from the background"}
        )
        started = time.monotonic()
        state = await flow(
            **{**defaults, **arguments},
            destination=str(tmp_path / "out"),
            credentials=credentials,
            return_state=True,
        )
        elapsed = time.monotonic() - started
        assert state.is_failed(), name
        with pytest.raises(InputValidationError) as caught:
            await state.aresult()
        message = str(caught.value)
        assert expected in message, (name, message)
        messages[name] = message
        counters = stats(live_emulator)
        assert (counters["uploads_created"], counters["dry_runs"], counters["jobs_created"]) == (0, 0, 0), (
            name
        )
        # A flow run's own overhead (a few API calls to the Prefect server) plus a local probe.
        assert elapsed < 15, (name, elapsed)
        print(f"{name}: {elapsed:.2f} s: {message}")
    # Each fault has a message of its own: what one case's message says appears in no other fault's
    # (the same fault through both flows says the same thing).
    fault = {name: name.removesuffix(" (edit)").removesuffix(" (layers)") for name in messages}
    for name, _, _, expected in _cases(media):
        saying = {fault[other] for other, message in messages.items() if expected in message}
        assert saying == {fault[name]}, (name, saying)
    assert not (tmp_path / "out").exists()


def _run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect_scenario.cli", *args],
        cwd=REPO,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_cli_refuses_bad_inputs_in_one_line_before_any_upload(
    live_emulator: Any, scenario_env: dict[str, str], media: Media
) -> None:
    # No Prefect server on this port: a bad input must be refused before one would be needed.
    env = {**scenario_env, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    good = str(media.clip_10s)
    cases = [
        (["edit", str(media.clip_31s), "--prompt", "snow", "--no-split"], "lasts 31.00 s", "--no-split"),
        (["edit", str(media.clip_17mib), "--prompt", "snow", "--no-split"], "takes at most 16 MiB", "--fit"),
        (["layers", str(media.text_mp4), "--instruction", "the shapes"], "is a text file, not a video", ""),
        (["layers", good, "--instruction", "the shapes", "--max-layers", "0"], "max_layers is 0", ""),
        (
            ["edit", good, "--prompt", "snow", "--keyframe", f"{media.image}@40"],
            "after the end of the 10.00 s clip",
            "",
        ),
    ]
    for args, expected, fix in cases:
        done = _run_cli(args, env)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (args, done.stderr)
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("error: ")
        assert expected in lines[0]
        assert fix in lines[0]
        assert "Traceback" not in done.stderr
    counters = stats(live_emulator)
    assert (counters["uploads_created"], counters["jobs_created"]) == (0, 0)
