"""storage.py (local and block paths) and the flow-run label helpers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from prefect.filesystems import LocalFileSystem

from prefect_scenario.job_labels import merged_job_labels
from prefect_scenario.storage import (
    discard,
    extension_for,
    materialize,
    materialized,
    sha256_file,
    store_file,
    stored_object_info,
)
from prefect_scenario.tasks import JOB_ID_LABEL, JOB_IDS_LABEL, MODEL_ID_LABEL, job_ids_from_labels


def test_extension_for_mime_types() -> None:
    assert extension_for("video/mp4") == "mp4"
    assert extension_for("video/webm") == "webm"
    assert extension_for("video/quicktime") == "mov"
    assert extension_for("image/png; charset=binary") == "png"
    assert extension_for(None) == "bin"
    assert extension_for("application/x-made-up") == "bin"


async def test_store_file_locally_is_atomic_and_relative(tmp_path: Path) -> None:
    source = tmp_path / "incoming.bin"
    source.write_bytes(b"payload")
    location = await store_file(source, "job_1/00-asset_a.bin", tmp_path / "out")
    target = tmp_path / "out" / "job_1" / "00-asset_a.bin"
    assert location == str(target.resolve())
    assert target.read_bytes() == b"payload"
    assert not source.exists()  # moved, not copied
    leftovers = [p.name for p in target.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    with pytest.raises(ValueError, match=r"\.\."):
        await store_file(target, "../escape.bin", tmp_path / "out")
    info = await stored_object_info("job_1/00-asset_a.bin", tmp_path / "out")
    assert info is not None
    assert info.size == 7
    assert info.sha256 == hashlib.sha256(b"payload").hexdigest()
    assert await stored_object_info("job_1/missing.bin", tmp_path / "out") is None


async def test_materialize_local_and_local_block(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"clip")
    assert await materialize(clip) == clip.resolve()
    block = LocalFileSystem(basepath=str(tmp_path))
    assert await materialize("clip.mp4", block) == clip.resolve()
    with pytest.raises(FileNotFoundError):
        await materialize(tmp_path / "nope.mp4")
    with pytest.raises(FileNotFoundError):
        await materialize("nope.mp4", block)


async def test_materialize_from_a_read_path_only_block(tmp_path: Path) -> None:
    (tmp_path / "c.mp4").write_bytes(b"bytes")
    holder = {"c.mp4": b"bytes"}

    class Minimal:
        """A storage that only offers read_path (like most third-party filesystem blocks)."""

        def get_block_type_slug(self) -> str:
            return "minimal"

        async def read_path(self, path: str) -> bytes:
            return holder[path]

    async with materialized("c.mp4", Minimal()) as local:  # type: ignore[arg-type]
        assert local.read_bytes() == b"bytes"
        assert local.name == "c.mp4"
        kept = local
    assert not kept.exists()
    discard(tmp_path / "c.mp4")  # never removes a file that is not a temporary copy
    assert (tmp_path / "c.mp4").exists()


def test_sha256_file_streams(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a" * (3 * 1024 * 1024 + 5))
    digest = sha256_file(path, chunk_size=1024)
    assert digest.size == 3 * 1024 * 1024 + 5
    assert digest.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_labels_append_job_ids_without_clobbering() -> None:
    first = merged_job_labels({"team": "video"}, ["job_a"], "model_x")
    assert first == {JOB_ID_LABEL: "job_a", JOB_IDS_LABEL: "job_a", MODEL_ID_LABEL: "model_x"}
    second = merged_job_labels({**first, "team": "video"}, ["job_b"], "model_y")
    assert second[JOB_ID_LABEL] == "job_b"
    assert second[JOB_IDS_LABEL] == "job_a,job_b"
    again = merged_job_labels({**first, **second}, ["job_a"], "model_x")
    assert JOB_IDS_LABEL not in again  # already recorded: the id label is not rewritten
    assert again[JOB_ID_LABEL] == "job_a"
    assert job_ids_from_labels({JOB_IDS_LABEL: "job_a,job_b", JOB_ID_LABEL: "job_c"}) == [
        "job_a",
        "job_b",
        "job_c",
    ]
    assert job_ids_from_labels(None) == []


def test_every_job_id_of_a_big_batch_stays_on_the_labels() -> None:
    labels: dict[str, object] = {"team": "video"}
    for start in range(0, 1000, 30):  # written in groups, as the label writer batches them
        labels.update(
            merged_job_labels(labels, [f"job_{i}" for i in range(start, min(start + 30, 1000))], "m")
        )
    assert job_ids_from_labels(labels) == [f"job_{i}" for i in range(1000)]
    assert labels[JOB_IDS_LABEL] == ",".join(f"job_{i}" for i in range(50))
    assert labels[f"{JOB_IDS_LABEL}.20"] == ",".join(f"job_{i}" for i in range(950, 1000))
    assert f"{JOB_IDS_LABEL}.21" not in labels
    assert labels["team"] == "video"


async def test_concurrent_label_writes_are_grouped_and_lose_no_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch records its jobs all at once: every id lands, in far fewer PATCHes than ids, also
    from a task running on another event loop (a thread pool's) at the same time."""
    import asyncio

    from prefect import flow, task
    from prefect.client.orchestration import PrefectClient
    from prefect_test_helpers import flow_run

    from prefect_scenario.job_labels import record_job_on_flow_run

    patches: list[dict[str, object]] = []
    real_update = PrefectClient.update_flow_run_labels

    async def counting_update(self: PrefectClient, flow_run_id: object, labels: dict[str, object]) -> None:
        patches.append(dict(labels))
        await real_update(self, flow_run_id, labels)  # type: ignore[arg-type]

    monkeypatch.setattr(PrefectClient, "update_flow_run_labels", counting_update)

    @task
    def from_another_loop(ids: list[str]) -> list[bool]:
        async def record_all() -> list[bool]:
            return list(await asyncio.gather(*(record_job_on_flow_run(i, "m") for i in ids)))

        return asyncio.run(record_all())

    @flow
    async def many_jobs() -> list[bool]:
        elsewhere = from_another_loop.submit([f"thread_job_{i}" for i in range(20)])
        here = await asyncio.gather(*(record_job_on_flow_run(f"job_{i}", "m") for i in range(120)))
        again = await record_job_on_flow_run("job_7", "m")  # already written: no new PATCH
        return [*here, again, *elsewhere.result()]

    state = await many_jobs(return_state=True)
    assert all(await state.result())
    run = await flow_run(state.state_details.flow_run_id)
    recorded = job_ids_from_labels(run.labels)
    assert sorted(recorded) == sorted(
        [f"job_{i}" for i in range(120)] + [f"thread_job_{i}" for i in range(20)]
    )
    assert len(patches) < 20, f"{len(patches)} PATCHes for 140 ids"
    assert all(
        len(str(value).split(",")) <= 50 for key, value in run.labels.items() if key.startswith(JOB_IDS_LABEL)
    )
