"""The flow-run label helpers (job_labels.py): every job id lands on the labels, none is lost."""

from __future__ import annotations

import pytest

from prefect_scenario.job_labels import merged_job_labels
from prefect_scenario.tasks import JOB_ID_LABEL, JOB_IDS_LABEL, MODEL_ID_LABEL, job_ids_from_labels

pytestmark = pytest.mark.usefixtures("prefect_harness")


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

    from prefect_scenario.job_labels import record_job_on_flow_run
    from support.prefect_api import flow_run

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


async def test_a_batchs_deferred_writes_linger_and_read_the_run_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch submits one job every few tenths of a second: its deferred label writes gather the ids
    that come just after them, and the flow run is read once, not before every PATCH."""
    import asyncio

    from prefect import flow
    from prefect.client.orchestration import PrefectClient

    from prefect_scenario.job_labels import deferred_job_labels, drain_job_labels, record_job_on_flow_run
    from support.prefect_api import flow_run

    patches: list[dict[str, object]] = []
    reads: list[object] = []
    real_update, real_read = PrefectClient.update_flow_run_labels, PrefectClient.read_flow_run

    async def counting_update(self: PrefectClient, flow_run_id: object, labels: dict[str, object]) -> None:
        patches.append(dict(labels))
        await real_update(self, flow_run_id, labels)  # type: ignore[arg-type]

    async def counting_read(self: PrefectClient, flow_run_id: object) -> object:
        reads.append(flow_run_id)
        return await real_read(self, flow_run_id)  # type: ignore[arg-type]

    monkeypatch.setattr(PrefectClient, "update_flow_run_labels", counting_update)
    monkeypatch.setattr(PrefectClient, "read_flow_run", counting_read)

    @flow
    async def trickling_batch() -> None:
        with deferred_job_labels():
            for i in range(30):
                assert await record_job_on_flow_run(f"job_{i}", "m")
                await asyncio.sleep(0.1)
            await drain_job_labels()

    state = await trickling_batch(return_state=True)
    assert state.is_completed()
    flow_run_id = state.state_details.flow_run_id
    reads_by_the_writer = [r for r in reads if str(r) == str(flow_run_id)]
    run = await flow_run(flow_run_id)
    assert job_ids_from_labels(run.labels) == [f"job_{i}" for i in range(30)]
    # 3 s of submits with a 1 s linger: a handful of PATCHes (30 without it), one read (30 without).
    assert len(patches) <= 5, f"{len(patches)} PATCHes for 30 ids"
    assert len(reads_by_the_writer) <= 2, f"{len(reads_by_the_writer)} reads of the flow run"
