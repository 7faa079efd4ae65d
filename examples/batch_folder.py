"""Video to Layers over a folder of clips, inside a Prefect global concurrency limit and a budget.

The limit (``scenario-custom-jobs``, created with 2 slots when missing) keeps the team's parallel
custom-job ceiling; the budget stops new submits before the estimates would pass it.
Run it: ``python examples/batch_folder.py``.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from prefect_scenario.flows.batch import video_to_layers_batch
from prefect_scenario.testing import emulate_scenario
from prefect_scenario.video import make_sample_clip


async def main(work: Path) -> None:
    clips = work / "incoming"
    clips.mkdir()
    for index in range(4):
        make_sample_clip(clips / f"shot-{index}.mp4", seconds=1.0, width=96, height=64, fps=8, seed=index)
    result = await video_to_layers_batch(
        "each moving object apart from the background",
        folder=str(clips),
        max_layers=2,
        destination=str(work / "layers"),
        budget_creative_units=100,
    )
    print(result.message())
    for clip in result.clips:
        print(f"  {Path(clip.video).name}: {clip.status}, job {clip.job_id}, {len(clip.outputs)} output(s)")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder, emulate_scenario(job_seconds=1.0) as emulator:
        asyncio.run(main(Path(folder)))
        print(f"jobs created on the emulator: {emulator.stats()['jobs_created']}")
