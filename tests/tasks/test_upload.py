# ruff: noqa: ASYNC240
"""upload_video and upload_image against the live emulator and a real Prefect server: cached by
content, never by name, wherever the bytes live."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.client.schemas.objects import StateType

from prefect_scenario import video
from prefect_scenario.blocks import ScenarioCredentials
from prefect_scenario.caching import DIGESTS
from prefect_scenario.storage import discard
from prefect_scenario.tasks import upload_image, upload_video
from support.emulator import stats
from support.s3 import s3_client

pytestmark = pytest.mark.usefixtures("prefect_harness")


async def test_upload_is_cached_by_content_not_name(
    live_emulator: Any,
    credentials: ScenarioCredentials,
    sample_clip: Path,
    sample_image: Path,
    tmp_path: Path,
    s3_bucket: Any,
    moto_server: str,
) -> None:
    @flow
    async def upload(path: Any, storage: Any = None) -> Any:
        return await upload_video(path, credentials=credentials, storage=storage, return_state=True)

    first = await upload(sample_clip)
    asset_id = await first.result()
    assert first.type is StateType.COMPLETED
    assert first.name == "Completed"
    assert asset_id.startswith("asset_")
    assert stats(live_emulator)["uploads_created"] == 1

    renamed = tmp_path / "a-completely-different-name.mp4"
    shutil.copyfile(sample_clip, renamed)
    second = await upload(renamed)
    assert second.name == "Cached"
    assert await second.result() == asset_id
    assert stats(live_emulator)["uploads_created"] == 1

    # The same bytes inside an S3 bucket: fetched to hash them, then recognised, not uploaded.
    s3_client(moto_server).upload_file(str(sample_clip), s3_bucket.bucket_name, "incoming/clip-from-s3.mp4")
    from_s3 = await upload("incoming/clip-from-s3.mp4", s3_bucket)
    assert from_s3.name == "Cached"
    assert await from_s3.result() == asset_id
    assert stats(live_emulator)["uploads_created"] == 1
    # The cache key needed the content: the fetched copy waits for a task body that never came
    # (a cache hit), and is removed when claimed, expired, or at exit.
    held = DIGESTS.take("incoming/clip-from-s3.mp4", s3_bucket)
    assert held is not None
    assert held[0].is_file()
    assert held[1].size == sample_clip.stat().st_size
    discard(held[0])
    assert not held[0].exists()

    # An asset id is used as is.
    passthrough = await upload(asset_id)
    assert await passthrough.result() == asset_id
    assert stats(live_emulator)["uploads_created"] == 1

    changed = tmp_path / "clip.mp4"  # the old name, new bytes
    video.make_sample_clip(changed, seconds=2.0, width=160, height=120, fps=12, moving_objects=1)
    third = await upload(changed)
    assert third.name == "Completed"
    assert await third.result() != asset_id
    assert stats(live_emulator)["uploads_created"] == 2

    @flow
    async def upload_picture() -> str:
        return await upload_image(sample_image, credentials=credentials)

    image_asset = await upload_picture()
    assert image_asset.startswith("asset_")
    assert image_asset != asset_id
    assert (await upload_picture()) == image_asset
    assert stats(live_emulator)["uploads_created"] == 3


async def test_new_bytes_in_s3_mean_a_new_upload(
    live_emulator: Any,
    credentials: ScenarioCredentials,
    sample_clip: Path,
    s3_bucket: Any,
    moto_server: str,
    tmp_path: Path,
) -> None:
    s3 = s3_client(moto_server)
    s3.upload_file(str(sample_clip), s3_bucket.bucket_name, "clip.mp4")

    @flow
    async def upload() -> str:
        return await upload_video("clip.mp4", credentials=credentials, storage=s3_bucket)

    first = await upload()
    other = tmp_path / "other.mp4"
    video.make_sample_clip(other, seconds=2.0, width=160, height=120, fps=12, moving_objects=1)
    s3.upload_file(str(other), s3_bucket.bucket_name, "clip.mp4")  # same key, new content
    second = await upload()
    assert first != second
    assert stats(live_emulator)["uploads_created"] == 2
