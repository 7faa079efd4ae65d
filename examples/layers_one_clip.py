"""Split one clip into transparent layers with Video to Layers, against the bundled emulator.

Run it: ``python examples/layers_one_clip.py`` (Prefect starts a temporary server for the run).
Against the real API, drop ``emulate_scenario()`` and set SCENARIO_SDK_API_KEY / _SECRET instead.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from prefect_scenario.flows import video_to_layers
from prefect_scenario.testing import emulate_scenario
from prefect_scenario.video import make_sample_clip


async def main(work: Path) -> None:
    clip = work / "dancers.mp4"
    make_sample_clip(clip, seconds=2.0, width=160, height=120, fps=12, moving_objects=2)
    result = await video_to_layers(
        str(clip),
        "each moving object apart from the background",
        max_layers=3,
        destination=str(work / "layers"),
    )
    print(f"Scenario job {result.job_id}: {len(result.outputs)} layers, {result.creative_units_cost} CU")
    for output in result.outputs:
        print(f"  {output.location} ({output.mime_type}, {output.size} bytes)")
    print(f"layers vs source: {result.composite_psnr_db:.1f} dB PSNR")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder, emulate_scenario(job_seconds=1.0) as emulator:
        asyncio.run(main(Path(folder)))
        print(f"jobs created on the emulator: {emulator.stats()['jobs_created']}")
