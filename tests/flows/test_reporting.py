"""The summary artifact's markdown, as the Prefect UI renders it: readable without knowing the wire."""

from __future__ import annotations

from prefect_scenario.flows.reporting import summary_markdown
from prefect_scenario.flows.result import ScenarioRunResult
from prefect_scenario.models import ALEPH_MODEL_ID


def _edit_with_keyframes() -> ScenarioRunResult:
    return ScenarioRunResult(
        model_id=ALEPH_MODEL_ID,
        job_id="job_abc",
        status="success",
        inputs={
            "prompt": "a rainy noir night",
            "video": "asset_video",
            "keyframes": [{"uri": "asset_red", "seconds": 0.5}, {"uri": "asset_blue", "at": 0.75}],
            "seed": 7,
        },
        sources={"video": "clip.mp4", "keyframes[0]": "red.png", "keyframes[1]": "blue.png"},
    )


def test_keyframes_are_a_table_of_their_own_with_their_source_files() -> None:
    markdown = summary_markdown(_edit_with_keyframes())

    assert "| keyframes | 2, in the table keyframes below |" in markdown
    assert "### keyframes" in markdown
    assert "| # | source | uri | seconds | at |" in markdown
    assert "| 0 | `red.png` | asset_red | 0.5 |  |" in markdown
    assert "| 1 | `blue.png` | asset_blue |  | 0.75 |" in markdown
    assert "{'uri'" not in markdown  # no Python repr anywhere
    assert "keyframes[0] (source)" not in markdown  # an item's source is in its row, not in Inputs
    assert "| video (source) | `clip.mp4` |" in markdown


def test_the_first_table_has_a_header_and_inputs_use_parameter_names() -> None:
    result = ScenarioRunResult(
        model_id="model_scenario-video-layers-extractor",
        job_id="job_abc",
        status="success",
        inputs={"video": "asset_v", "separationInstruction": "each dancer", "maxLayers": 3},
    )

    markdown = summary_markdown(result)

    assert "| | |" not in markdown
    assert "| run | |" in markdown
    assert "| separation_instruction | each dancer |" in markdown
    assert "| max_layers | 3 |" in markdown
