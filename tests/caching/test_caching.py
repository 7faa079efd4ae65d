"""Cache keys: content not names, scope not secrets, flow run unless reuse is asked for."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prefect.filesystems import LocalFileSystem

from prefect_scenario.blocks import ScenarioCredentials
from prefect_scenario.caching import (
    DownloadPolicy,
    JobRequestPolicy,
    UploadContentPolicy,
    content_digest,
    job_request_key,
)
from prefect_scenario.models import Job, JobMetadata, JobStatus, VideoLayersInput
from prefect_scenario.storage import sha256_file

pytestmark = pytest.mark.usefixtures("prefect_harness")

CANARY = "canary-SECRET-7f3a"


def creds(secret: str = CANARY, project: str | None = "proj_1", key: str = "key-1") -> ScenarioCredentials:
    return ScenarioCredentials(
        api_key=key, api_secret=secret, base_url="http://127.0.0.1:1/v1", project_id=project
    )


def ctx(flow_run_id: Any = "fr-1") -> Any:
    return SimpleNamespace(task_run=SimpleNamespace(flow_run_id=flow_run_id, id="tr-1"))


def upload_key(
    path: Any, credentials: ScenarioCredentials, storage: Any = None, kind: str = "video"
) -> str | None:
    policy = UploadContentPolicy(source_parameter=kind, kind=kind)
    return policy.compute_key(ctx(), {kind: path, "credentials": credentials, "storage": storage}, {})


def test_upload_key_follows_content_not_name(tmp_path: Path) -> None:
    a = tmp_path / "a.mp4"
    a.write_bytes(b"x" * 3_000_000)
    b = tmp_path / "renamed-copy.mp4"
    b.write_bytes(a.read_bytes())
    key_a = upload_key(a, creds())
    assert key_a is not None
    assert upload_key(b, creds()) == key_a
    assert upload_key(str(b), creds()) == key_a
    b.write_bytes(b"y" + a.read_bytes()[1:])
    assert upload_key(b, creds()) != key_a
    # same bytes, another kind of asset: another key
    assert upload_key(a, creds(), kind="image") != key_a


def test_upload_key_depends_on_scope_never_on_the_key_or_secret(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"clip")
    base = upload_key(clip, creds())
    assert upload_key(clip, creds(secret="another", key="key-2")) == base
    assert upload_key(clip, creds(project="proj_2")) != base
    assert CANARY not in str(base)


def test_upload_key_none_for_asset_ids_and_missing_files(tmp_path: Path) -> None:
    assert upload_key("asset_AbCdEf123", creds()) is None
    assert upload_key(tmp_path / "missing.mp4", creds()) is None


def test_upload_key_inside_a_local_file_system_block(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "c.mp4").write_bytes(b"content-1")
    (tmp_path / "other.mp4").write_bytes(b"content-1")
    block = LocalFileSystem(basepath=str(tmp_path))
    assert upload_key("clips/c.mp4", creds(), storage=block) == upload_key(tmp_path / "other.mp4", creds())


def test_content_digest_is_chunked_sha256(tmp_path: Path) -> None:
    import hashlib

    data = uuid.uuid4().bytes * 400_000
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    digest = content_digest(path)
    assert digest.sha256 == hashlib.sha256(data).hexdigest() == sha256_file(path).sha256
    assert digest.size == len(data)


def test_job_key_per_flow_run_unless_reused() -> None:
    policy = JobRequestPolicy()
    body = {"video": "asset_1", "separationInstruction": "people apart", "maxLayers": 3}

    def key(run: str, reuse: bool, **changes: Any) -> str | None:
        inputs = {
            "model_id": "model_scenario-video-layers-extractor",
            "body": body,
            "credentials": creds(),
            "estimate": None,
            "max_creative_units": 10.0,
            "reuse_across_runs": reuse,
            **changes,
        }
        return policy.compute_key(ctx(run), inputs, {})

    assert key("fr-1", False) == key("fr-1", False)
    assert key("fr-1", False) != key("fr-2", False)
    assert key("fr-1", True) == key("fr-2", True)
    # budget and estimate are not part of what was bought; secrets are not either
    assert key("fr-1", True, max_creative_units=99.0, estimate=object()) == key("fr-2", True)
    assert key("fr-1", True, credentials=creds(secret="x", key="y")) == key("fr-1", True)
    assert key("fr-1", True, credentials=creds(project="proj_2")) != key("fr-1", True)
    assert key("fr-1", True, body={**body, "maxLayers": 4}) != key("fr-1", True)
    assert key("fr-1", True, body={"maxLayers": 3, **body}) == key("fr-1", True)  # key order does not matter
    model = VideoLayersInput(video="asset_1", separation_instruction="people apart", max_layers=3)
    assert key("fr-1", True, body=model) == key("fr-1", True)
    assert job_request_key("model_scenario-video-layers-extractor", body, creds().cache_scope(), None) == key(
        "fr-9", True
    )


def _job(asset_ids: list[str]) -> Job:
    return Job(
        job_id="job_X1",
        job_type="custom",
        status=JobStatus.SUCCESS,
        created_at="2026-01-10T09:00:00.000Z",
        updated_at="2026-01-10T09:00:01.000Z",
        metadata=JobMetadata(asset_ids=asset_ids),
    )


def test_download_key_is_none_while_a_local_file_is_missing(tmp_path: Path) -> None:
    policy = DownloadPolicy()
    job = _job(["asset_a", "asset_b"])
    inputs = {"job": job, "credentials": creds(), "destination": str(tmp_path), "storage": None}
    assert policy.compute_key(ctx(), inputs, {}) is None
    folder = tmp_path / "job_X1"
    folder.mkdir()
    (folder / "00-asset_a.mp4").write_bytes(b"a")
    (folder / ".01-asset_b.mp4.1234.part").write_bytes(b"b")  # a partial file does not count
    assert policy.compute_key(ctx(), inputs, {}) is None
    (folder / "01-asset_b.webm").write_bytes(b"b")
    present = policy.compute_key(ctx(), inputs, {})
    assert present is not None
    assert policy.compute_key(ctx("another-run"), inputs, {}) == present
    assert policy.compute_key(ctx(), {**inputs, "destination": str(tmp_path / "elsewhere")}, {}) is None


def test_download_key_for_s3_names_bucket_and_prefix() -> None:
    from prefect_aws import AwsCredentials, S3Bucket

    policy = DownloadPolicy()
    job = _job(["asset_a"])

    def key(bucket: str, destination: str) -> str | None:
        storage = S3Bucket(bucket_name=bucket, credentials=AwsCredentials(aws_secret_access_key=CANARY))
        return policy.compute_key(ctx(), {"job": job, "destination": destination, "storage": storage}, {})

    assert key("b1", "out") is not None
    assert key("b1", "out") == key("b1", "out")
    assert key("b1", "out") != key("b2", "out")
    assert key("b1", "out") != key("b1", "other")


@pytest.mark.parametrize("job_assets", [[], None])
def test_download_key_none_without_outputs(job_assets: Any) -> None:
    job = _job(job_assets or [])
    assert DownloadPolicy().compute_key(ctx(), {"job": job, "destination": "x", "storage": None}, {}) is None
