"""Sample media shared by the video and fake-model tests: a pytest plugin (see tests/conftest.py).

Module-scoped, so each test module makes its own once; a module defining a fixture of the same name
(e2e's ``media``, say) keeps its own.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from prefect_scenario import video
from prefect_scenario.emulator.service.fakes import LayerFile, extract_layers


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("video")


@pytest.fixture(scope="module")
def clip(media: Path) -> Path:
    """4 s, 320x240, 24 fps, two moving objects, no audio."""
    path = media / "clip.mp4"
    video.make_sample_clip(path, seconds=4.0, moving_objects=2, seed=3)
    return path


@pytest.fixture(scope="module")
def clip_with_audio(media: Path) -> Path:
    path = media / "clip_audio.mp4"
    video.make_sample_clip(path, seconds=3.0, fps=25, moving_objects=2, with_audio=True, seed=5)
    return path


@pytest.fixture(scope="module")
def layers_by_max(clip: Path, media: Path) -> dict[int, list[LayerFile]]:
    results = {}
    for max_layers in (1, 2, 3, 6):
        started = time.perf_counter()
        results[max_layers] = extract_layers(clip, media / f"layers{max_layers}", max_layers=max_layers)
        print(f"extract_layers(max_layers={max_layers}): {time.perf_counter() - started:.2f} s")
    return results
