"""Restyle a clip with Runway Aleph 2 from a prompt and a keyframe image, then run it again.

With a seed, the same inputs reuse the earlier job: the second run spends nothing.
Run it: ``python examples/edit_with_keyframe.py``.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from prefect_scenario.flows import aleph_edit
from prefect_scenario.testing import emulate_scenario
from prefect_scenario.validation import KeyframeSpec
from prefect_scenario.video import make_sample_clip, make_sample_image


async def main(work: Path) -> None:
    clip, reference = work / "street.mp4", work / "noir.png"
    make_sample_clip(clip, seconds=2.0, width=160, height=120, fps=12, moving_objects=1)
    make_sample_image(reference, color=(30, 30, 60))
    for attempt in ("first", "second"):
        result = await aleph_edit(
            str(clip),
            "a rainy noir night",
            keyframes=[KeyframeSpec(image=str(reference), seconds=1.0)],
            seed=7,
            destination=str(work / "edit"),
        )
        spent = "nothing spent (reused)" if result.reused else f"{result.creative_units_cost} CU"
        print(f"{attempt} run: Scenario job {result.job_id}, {spent}: {result.outputs[0].location}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder, emulate_scenario(job_seconds=1.0) as emulator:
        asyncio.run(main(Path(folder)))
        print(f"jobs created on the emulator: {emulator.stats()['jobs_created']}")
