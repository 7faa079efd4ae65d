"""The submission ledger's store: whole entries, one holder per intent, a dead holder never blocks."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.filesystems import LocalFileSystem

from prefect_scenario import ledger as ledger_module
from prefect_scenario.errors import SubmissionBusyError
from prefect_scenario.ledger import LedgerEntry, LocalLedgerStore, Owner, store_for

REPO = Path(__file__).resolve().parents[2]


def _entry(key: str = "k1", state: str = "submitting", job_id: str | None = None) -> LedgerEntry:
    return LedgerEntry(
        key=key,
        model_id="model_runway-aleph-2",
        inputs={"video": "asset_x", "prompt": "p"},
        scope="http://api.test/v1|proj",
        state=state,  # type: ignore[arg-type]
        job_id=job_id,
        sent_at=datetime.now(UTC),
        owner=Owner.current("run-1"),
    )


async def test_entries_are_written_whole_and_read_back(tmp_path: Path) -> None:
    store = LocalLedgerStore(tmp_path / "ledger")
    assert await store.read("k1") is None
    await store.write(_entry())
    await store.write(_entry().with_state("submitted", job_id="job_1"))
    entry = await store.read("k1")
    assert entry is not None
    assert (entry.state, entry.job_id, entry.binds) == ("submitted", "job_1", True)
    # When the answer was recorded stays put through later writes (delivered).
    answered = entry.answered_at
    assert answered is not None
    delivered = entry.with_state("delivered")
    assert delivered.answered_at == answered
    assert delivered.updated_at >= answered
    assert entry.with_state("delivered").binds is False
    # Nothing half-written is left beside the entries.
    assert sorted(p.name for p in (tmp_path / "ledger").iterdir()) == ["k1.json"]
    assert [e.key for e in store.entries()] == ["k1"]


def test_the_ledger_lives_beside_local_results(tmp_path: Path) -> None:
    store = store_for(LocalFileSystem(basepath=str(tmp_path)))
    assert isinstance(store, LocalLedgerStore)
    assert store.root == tmp_path / "prefect-scenario-ledger"


async def test_one_holder_per_intent_at_a_time(tmp_path: Path) -> None:
    store = LocalLedgerStore(tmp_path)
    order: list[str] = []

    async def submit(name: str) -> None:
        async with store.hold("same", Owner.current(None)):
            order.append(f"{name} in")
            await asyncio.sleep(0.3)
            order.append(f"{name} out")

    async def other_key() -> None:
        await asyncio.sleep(0.05)
        async with store.hold("another", Owner.current(None)):
            order.append("other")

    await asyncio.gather(submit("a"), submit("b"), other_key())
    # a and b never overlap; a different intent does not wait for them.
    assert order.index("a out") < order.index("b in") or order.index("b out") < order.index("a in")
    assert order.index("other") < max(order.index("a out"), order.index("b out"))


async def test_a_killed_holder_frees_the_intent_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = (
        "import fcntl, sys, time\n"
        f"handle = open({str(tmp_path / 'k.lock')!r}, 'a+b')\n"
        "fcntl.flock(handle.fileno(), fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(3600)\n"
    )
    process = subprocess.Popen(  # noqa: ASYNC220 (one child; its output is read off the loop)
        [sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert process.stdout is not None
        assert await asyncio.to_thread(process.stdout.readline) == "held\n"
        store = LocalLedgerStore(tmp_path)
        monkeypatch.setattr(ledger_module, "HOLD_TIMEOUT_SECONDS", 0.5)
        with pytest.raises(SubmissionBusyError, match="another process held the submit"):
            async with store.hold("k", Owner.current(None)):
                pass
        os.killpg(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait, 30)
        async with store.hold("k", Owner.current(None)):
            pass  # the kernel released the dead holder's lock
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def test_an_owner_is_gone_once_its_process_ended() -> None:
    assert Owner.current(None).is_gone() is False
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = Owner.current(None).model_copy(update={"pid": int(done.stdout)})
    assert dead.is_gone() is True
    # A pid reused by another process is another process: its start time differs.
    reused = Owner.current(None).model_copy(update={"pid_started": 1})
    assert reused.is_gone() is True
    elsewhere = dead.model_copy(update={"host": "another-host"})
    assert elsewhere.is_gone() is False  # unknown there: never taken for dead


async def test_a_ledger_in_an_s3_bucket_keeps_entries_and_one_holder_at_a_time(
    s3_bucket: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where results go to S3 (``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK``), the ledger goes with them,
    and S3's conditional writes make its lease exact: one holder per intent across workers."""
    from prefect_scenario.ledger import S3LedgerStore, _Lease

    store = store_for(s3_bucket)
    assert isinstance(store, S3LedgerStore)
    assert await store.read("k1") is None
    await store.write(_entry().with_state("submitted", job_id="job_s3"))
    entry = await store.read("k1")
    assert entry is not None
    assert (entry.state, entry.job_id) == ("submitted", "job_s3")

    inside = 0
    most = 0
    entered = 0

    async def submit() -> None:
        nonlocal inside, most, entered
        # Each "worker" its own store, as on separate machines: nothing shared but the bucket.
        async with store_for(s3_bucket).hold("k1", Owner.current(None)):
            inside += 1
            entered += 1
            most = max(most, inside)
            await asyncio.sleep(0.1)
            inside -= 1

    await asyncio.gather(*(submit() for _ in range(5)))
    assert (entered, most) == (5, 1)

    # A live lease of another worker is waited for (here: past a short limit, refused); an expired one
    # (its holder died) is taken over at once.
    client = s3_bucket._get_s3_client()
    lease_key = s3_bucket._resolve_path("prefect-scenario-ledger/k2.lease")
    live = _Lease(token="other-worker", expires_at=datetime.now(UTC) + timedelta(seconds=300))
    client.put_object(Bucket=s3_bucket.bucket_name, Key=lease_key, Body=live.model_dump_json().encode())
    monkeypatch.setattr(ledger_module, "HOLD_TIMEOUT_SECONDS", 1.0)
    with pytest.raises(SubmissionBusyError):
        async with store.hold("k2", Owner.current(None)):
            pass
    dead = _Lease(token="dead-worker", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    client.put_object(Bucket=s3_bucket.bucket_name, Key=lease_key, Body=dead.model_dump_json().encode())
    async with store.hold("k2", Owner.current(None)):
        pass


_S3_HOLDER = """
import asyncio, sys
from prefect_aws import AwsCredentials, S3Bucket
from prefect_scenario import ledger
from prefect_scenario.ledger import Owner, store_for

ledger.LEASE_SECONDS, ledger.LEASE_RENEW_SECONDS = float(sys.argv[3]), float(sys.argv[4])
credentials = AwsCredentials(aws_access_key_id="testing", aws_secret_access_key="testing",
                             region_name="us-east-1", aws_client_parameters={"endpoint_url": sys.argv[1]})

bucket = S3Bucket(bucket_name=sys.argv[2], credentials=credentials)

async def main() -> None:
    async with store_for(bucket).hold("k3", Owner.current(None)):
        print("held", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_an_s3_lease_is_renewed_while_its_holder_lives_and_freed_soon_after_it_is_killed(
    s3_bucket: Any, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another machine's holder, SIGKILLed inside its hold (its POST answered, its lease not yet
    released), blocks the intent only until its lease runs out: seconds, not the whole worst case of
    a submit. While it lives it renews the lease, however long its POST takes."""
    lease, renew = 2.0, 0.4
    monkeypatch.setattr(ledger_module, "LEASE_SECONDS", lease)
    monkeypatch.setattr(ledger_module, "LEASE_RENEW_SECONDS", renew)
    process = subprocess.Popen(  # noqa: ASYNC220 (one child; its output is read off the loop)
        [sys.executable, "-c", _S3_HOLDER, moto_server, s3_bucket.bucket_name, str(lease), str(renew)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        assert await asyncio.to_thread(process.stdout.readline) == "held\n"
        store = store_for(s3_bucket)
        # Held past two lease lengths: only its renewals keep the others out.
        await asyncio.sleep(2 * lease)
        monkeypatch.setattr(ledger_module, "HOLD_TIMEOUT_SECONDS", 1.0)
        with pytest.raises(SubmissionBusyError):
            async with store.hold("k3", Owner.current(None)):
                pass
        os.killpg(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait, 30)
        monkeypatch.setattr(ledger_module, "HOLD_TIMEOUT_SECONDS", 5 * lease)
        async with store.hold("k3", Owner.current(None)):
            pass  # its lease ran out, unrenewed
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
