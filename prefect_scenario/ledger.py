"""The submission ledger: a durable record that a paid submit was *started*, and what it bought.

The Scenario API has no idempotency key, and a flow run can die at any instant: between "the paid
POST answered" and "Prefect persisted the task's result" a crash used to leave nothing behind, and
the rerun (a new flow run, which Prefect's cache does not connect to the old one) bought a second
job. The ledger closes that window, as Scenario's own Blender add-on does (prepared, submitting,
remote or uncertain):

* before the POST, an entry is written in state ``submitting``, keyed like the submit's cache
  (model, inputs, credentials scope; no flow run id, so every run with the same intent sees it);
* the moment the POST answers, the job id is written (``submitted``): before any label, event or
  result;
* when the run has stored the outputs, the entry is ``delivered``: from then on it no longer binds
  later runs (Prefect's cache decides reuse, and ``refresh`` or a seedless edit may buy anew);
* a submit that finds an entry ``submitted`` adopts its job (unless it failed); one that finds an
  entry ``submitting`` lists recent jobs first and pays only when that listing succeeded and shows
  none (see :mod:`prefect_scenario.tasks.submit`).

Where: beside the persisted task results (Prefect's result storage, the same for every run that
shares results): a directory on the local disk, or a storage block such as an ``S3Bucket``. The
local store serializes submits of one intent with ``flock`` (released by the kernel when a process
dies, so a dead holder never blocks); an ``S3Bucket`` uses a lease object written with S3's
conditional writes (exact), any other block a lease written then read back (best-effort); a lease
is renewed while its holder lives, so one whose machine died frees the intent within
``LEASE_SECONDS``. Entries hold ids, hashes, the request body (asset ids and text, as the API
records them) and the credentials *scope*: never a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from prefect.filesystems import LocalFileSystem, WritableFileSystem
from pydantic import BaseModel, ConfigDict, Field

from prefect_scenario.errors import SubmissionBusyError

LEDGER_FOLDER = "prefect-scenario-ledger"
EntryState = Literal["submitting", "submitted", "delivered", "abandoned"]
# How long a submit waits for another live process's submit of the same intent before giving up
# (that one is inside its POST: seconds, at most the client's timeouts and one reconciliation).
HOLD_TIMEOUT_SECONDS = 900.0
# A block-store lease is written for LEASE_SECONDS and renewed every LEASE_RENEW_SECONDS while its
# holder lives (its POST may take minutes: client timeouts, one reconciliation). A holder whose
# machine died frees the intent within LEASE_SECONDS, not after the worst case of a whole submit.
LEASE_SECONDS = 30.0
LEASE_RENEW_SECONDS = 10.0

_logger = logging.getLogger("prefect_scenario.ledger")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _process_start_ticks(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (None when it does not exist).

    With the pid it names one process for good: a pid reused by a later process has another start.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])


class Owner(BaseModel):
    """The process and flow run that started a submit."""

    model_config = ConfigDict(frozen=True)

    host: str
    pid: int
    pid_started: int | None = None
    flow_run_id: str | None = None

    @classmethod
    def current(cls, flow_run_id: str | None) -> Owner:
        """This process, in flow run ``flow_run_id``."""
        pid = os.getpid()
        return cls(
            host=socket.gethostname(), pid=pid, pid_started=_process_start_ticks(pid), flow_run_id=flow_run_id
        )

    def is_gone(self) -> bool:
        """True when the owner's process certainly no longer runs (it ran on this host and ended)."""
        if self.host != socket.gethostname():
            return False
        started = _process_start_ticks(self.pid)
        return started is None or (self.pid_started is not None and started != self.pid_started)

    def describe(self) -> str:
        """``flow run X (process P on H)`` for messages."""
        run = f"flow run {self.flow_run_id}" if self.flow_run_id else "a run outside Prefect"
        return f"{run} (process {self.pid} on {self.host})"


class LedgerEntry(BaseModel):
    """What the ledger knows of one intent (one model + inputs + credentials scope).

    Attributes:
        key: the intent's key (see :func:`prefect_scenario.caching.job_request_key`).
        model_id: the model.
        inputs: the request body, as sent.
        scope: the credentials' cache scope (base URL and project; no secret).
        state: ``submitting`` (the POST may be in flight or lost), ``submitted`` (the POST answered
            with ``job_id``), ``delivered`` (the run stored the outputs), ``abandoned`` (the API
            refused the submit: nothing was created).
        job_id: the job, once known.
        sent_at: when the POST was about to be sent.
        owner: the process and flow run that holds the job now: the one that sent the POST, or the
            last run that adopted the job after its holder died.
        earlier_owners: the runs that held the job before ``owner`` (oldest first): each one died
            before it delivered.
        earlier_job_ids: jobs bought for this intent before (delivered, failed, refused): a
            reconciliation never takes one of them for the lost answer of this submit.
        answered_at: when the job id was recorded (the POST had just answered, or the job was found).
        updated_at: when the entry was last written.
    """

    model_config = ConfigDict(frozen=True)

    key: str
    model_id: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    scope: str = ""
    state: EntryState
    job_id: str | None = None
    sent_at: datetime
    owner: Owner
    earlier_owners: tuple[Owner, ...] = ()
    earlier_job_ids: tuple[str, ...] = ()
    answered_at: datetime | None = None
    updated_at: datetime = Field(default_factory=_utcnow)

    @property
    def binds(self) -> bool:
        """True while the entry stands for a paid submit whose job no run has delivered yet."""
        return self.state in ("submitting", "submitted")

    def adopted_by(self, owner: Owner, job_id: str) -> LedgerEntry:
        """The entry once ``owner`` adopted ``job_id``: it holds the job from now on."""
        earlier = (*self.earlier_owners, self.owner) if owner != self.owner else self.earlier_owners
        return self.model_copy(update={"owner": owner, "earlier_owners": earlier}).with_state(
            "submitted", job_id=job_id
        )

    def with_state(self, state: EntryState, *, job_id: str | None = None) -> LedgerEntry:
        """The entry moved to ``state`` (with ``job_id`` when it becomes known)."""
        now = _utcnow()
        update: dict[str, Any] = {"state": state, "job_id": job_id or self.job_id, "updated_at": now}
        if job_id and job_id != self.job_id:
            update["answered_at"] = now
        return self.model_copy(update=update)


class LedgerStore(ABC):
    """Where entries live; one entry per key, written whole."""

    @abstractmethod
    async def read(self, key: str) -> LedgerEntry | None:
        """The entry of ``key``, if any."""

    @abstractmethod
    async def write(self, entry: LedgerEntry) -> None:
        """Write ``entry`` whole (a reader sees the old entry or the new one, never a mix)."""

    @abstractmethod
    def hold(self, key: str, owner: Owner) -> contextlib.AbstractAsyncContextManager[None]:
        """Exclusive among live processes for ``key``, for one submit's decide-and-send section."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the ledger is, in words (for messages)."""


def _dumps(entry: LedgerEntry) -> bytes:
    return entry.model_dump_json().encode()


def _loads(data: bytes) -> LedgerEntry | None:
    try:
        return LedgerEntry.model_validate_json(data)
    except ValueError:
        return None  # an unreadable entry is treated as none: see the caller's reconciliation


class LocalLedgerStore(LedgerStore):
    """Entries as JSON files in a local folder; ``flock`` serializes submits of one key."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def location(self) -> str:
        return str(self.root)

    def _path(self, key: str, suffix: str = ".json") -> Path:
        return self.root / f"{key}{suffix}"

    async def read(self, key: str) -> LedgerEntry | None:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        return _loads(data)

    async def write(self, entry: LedgerEntry) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        target = self._path(entry.key)
        # Written beside, then renamed over: a crash mid-write leaves the old entry, never half one.
        partial = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        partial.write_bytes(_dumps(entry))
        os.replace(partial, target)

    def entries(self) -> list[LedgerEntry]:
        """Every readable entry, newest first."""
        found = []
        for path in self.root.glob("*.json") if self.root.is_dir() else ():
            with contextlib.suppress(OSError):
                entry = _loads(path.read_bytes())
                if entry is not None:
                    found.append(entry)
        return sorted(found, key=lambda e: e.updated_at, reverse=True)

    @contextlib.asynccontextmanager
    async def hold(self, key: str, owner: Owner) -> AsyncIterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        handle = self._path(key, ".lock").open("a+b")
        try:
            await _acquire(lambda: _try_flock(handle.fileno()), key, self.location)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        finally:
            handle.close()


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


async def _acquire(attempt: Callable[[], Any], key: str, location: str) -> None:
    """Call ``attempt`` until it succeeds, without holding a thread; say once what it waits for."""
    deadline = time.monotonic() + HOLD_TIMEOUT_SECONDS
    told = False
    while not await _maybe_async(attempt()):
        if not told:
            _logger.info(
                "Another live process is submitting the same Scenario job (ledger %s, key %s): waiting "
                "for it to finish, so the job is bought once",
                location,
                key[:12],
            )
            told = True
        if time.monotonic() > deadline:
            raise SubmissionBusyError(
                f"another process held the submit of these inputs for over {HOLD_TIMEOUT_SECONDS:.0f} s "
                f"(ledger {location}, key {key}); nothing was submitted: run again once it is done "
                "(it adopts that process's job)"
            )
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _renewed(renew: Callable[[], Awaitable[bool]], key: str, location: str) -> AsyncIterator[None]:
    """Call ``renew`` every ``LEASE_RENEW_SECONDS`` while the body runs; False means the lease is lost.

    The body is not interrupted when the lease is lost (it may be inside a paid POST: stopping it
    would not unsend it); that is said, once. On exit the renewal in progress is waited for, so no
    late renewal lands after the release.
    """
    stop = asyncio.Event()

    async def keep() -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LEASE_RENEW_SECONDS)
                return
            try:
                still_mine = await renew()
            except Exception as exc:  # a store briefly down: the lease still runs, try again
                _logger.warning(
                    "Could not renew the submit lease (ledger %s, key %s): %s", location, key[:12], exc
                )
                continue
            if not still_mine:
                _logger.warning(
                    "The submit lease (ledger %s, key %s) expired and another process took it: this "
                    "process was stalled for over %.0f s",
                    location,
                    key[:12],
                    LEASE_SECONDS,
                )
                return

    keeper = asyncio.create_task(keep())
    try:
        yield
    finally:
        stop.set()
        await keeper


async def _maybe_async(value: Any) -> bool:
    if asyncio.iscoroutine(value):
        value = await value
    return bool(value)


class _Lease(BaseModel):
    token: str
    expires_at: datetime


class BlockLedgerStore(LedgerStore):
    """Entries as JSON objects in a Prefect storage block (``S3Bucket`` and the like).

    Object stores have no lock: submits of one key are serialized by a lease object, written,
    then read back after a pause, and renewed while held; a holder that dies frees it when the lease
    expires. Two
    processes that write a lease within the same pause could both see their own (the later
    write wins the read-back of one of them only): this is best-effort, where a local ledger is
    exact. Runs of one intent on many workers at the same moment are what it would take.
    """

    def __init__(self, storage: WritableFileSystem, folder: str = LEDGER_FOLDER) -> None:
        self.storage = storage
        self.folder = folder.strip("/")

    @property
    def location(self) -> str:
        return f"{self.storage.get_block_type_slug()}:{self.folder}"

    def _path(self, key: str, suffix: str = ".json") -> str:
        return f"{self.folder}/{key}{suffix}"

    async def _read_bytes(self, path: str) -> bytes | None:
        try:
            data: bytes = await self.storage.read_path(path)
        except Exception:  # each block says "missing" its own way (FileNotFoundError, ClientError)
            return None
        return data

    async def read(self, key: str) -> LedgerEntry | None:
        data = await self._read_bytes(self._path(key))
        return _loads(data) if data else None

    async def write(self, entry: LedgerEntry) -> None:
        await self.storage.write_path(self._path(entry.key), _dumps(entry))

    @contextlib.asynccontextmanager
    async def hold(self, key: str, owner: Owner) -> AsyncIterator[None]:
        token = f"{owner.host}:{owner.pid}:{uuid.uuid4().hex}"
        path = self._path(key, ".lease")

        async def attempt() -> bool:
            data = await self._read_bytes(path)
            if data:
                with contextlib.suppress(ValueError):
                    lease = _Lease.model_validate_json(data)
                    if lease.token != token and lease.expires_at > _utcnow():
                        return False
            mine = _Lease(token=token, expires_at=_utcnow() + timedelta(seconds=LEASE_SECONDS))
            await self.storage.write_path(path, mine.model_dump_json().encode())
            await asyncio.sleep(0.5)
            again = await self._read_bytes(path)
            return again is not None and token.encode() in again

        async def renew() -> bool:
            data = await self._read_bytes(path)
            if data is None or token.encode() not in data:
                return False
            mine = _Lease(token=token, expires_at=_utcnow() + timedelta(seconds=LEASE_SECONDS))
            await self.storage.write_path(path, mine.model_dump_json().encode())
            return True

        await _acquire(attempt, key, self.location)
        try:
            async with _renewed(renew, key, self.location):
                yield
        finally:
            released = _Lease(token="", expires_at=_utcnow())
            with contextlib.suppress(Exception):
                await self.storage.write_path(path, released.model_dump_json().encode())


class S3LedgerStore(BlockLedgerStore):
    """A ledger in a prefect-aws ``S3Bucket``, its lease exact through S3's conditional writes.

    The lease object is created with ``If-None-Match: *`` (only one writer can create it), taken
    over when expired with ``If-Match`` on the expired lease's ETag (only one writer can replace
    it), and released the same way: two workers starting the same intent at once never both hold
    it. Entries are read and written through the block, as for any other block.
    """

    def _client_and_key(self, key: str) -> tuple[Any, str, str]:
        bucket: Any = self.storage
        return bucket._get_s3_client(), bucket.bucket_name, bucket._resolve_path(self._path(key, ".lease"))

    @contextlib.asynccontextmanager
    async def hold(self, key: str, owner: Owner) -> AsyncIterator[None]:
        client, bucket, lease_key = await asyncio.to_thread(self._client_and_key, key)
        token = f"{owner.host}:{owner.pid}:{uuid.uuid4().hex}"
        held: dict[str, str] = {}

        def put(lease: _Lease, **condition: str) -> str | None:
            body = lease.model_dump_json().encode()
            try:
                answer = client.put_object(Bucket=bucket, Key=lease_key, Body=body, **condition)
            except Exception as exc:
                if _s3_precondition_failed(exc):
                    return None  # someone else wrote first: not ours
                raise
            return str(answer["ETag"])

        def attempt() -> bool:
            mine = _Lease(token=token, expires_at=_utcnow() + timedelta(seconds=LEASE_SECONDS))
            etag = put(mine, IfNoneMatch="*")
            if etag is None:
                try:
                    current = client.get_object(Bucket=bucket, Key=lease_key)
                except Exception as exc:
                    if _s3_missing(exc):
                        return False  # released meanwhile: try creating it again
                    raise
                lease = _Lease.model_validate_json(current["Body"].read())
                if lease.expires_at > _utcnow():
                    return False
                etag = put(mine, IfMatch=str(current["ETag"]))  # take over an expired lease, atomically
            if etag is None:
                return False
            held["etag"] = etag
            return True

        def renew() -> bool:
            mine = _Lease(token=token, expires_at=_utcnow() + timedelta(seconds=LEASE_SECONDS))
            etag = put(mine, IfMatch=held["etag"])  # only while the lease is still the one written last
            if etag is None:
                return False
            held["etag"] = etag
            return True

        await _acquire(lambda: asyncio.to_thread(attempt), key, self.location)
        try:
            async with _renewed(lambda: asyncio.to_thread(renew), key, self.location):
                yield
        finally:
            released = _Lease(token="", expires_at=_utcnow())
            with contextlib.suppress(Exception):
                await asyncio.to_thread(put, released, IfMatch=held["etag"])


def _s3_error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _s3_precondition_failed(exc: BaseException) -> bool:
    return _s3_error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict")


def _s3_missing(exc: BaseException) -> bool:
    return _s3_error_code(exc) in ("NoSuchKey", "404")


def store_for(storage: WritableFileSystem) -> LedgerStore:
    """The ledger that lives beside results in ``storage``."""
    if isinstance(storage, LocalFileSystem):
        return LocalLedgerStore(Path(storage._resolve_path(LEDGER_FOLDER)))
    if type(storage).__name__ == "S3Bucket" and hasattr(storage, "_get_s3_client"):
        return S3LedgerStore(storage)
    return BlockLedgerStore(storage)


async def current_ledger() -> LedgerStore:
    """The ledger of the current run's result storage (Prefect's default outside a run)."""
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.results import aget_default_result_storage

    storage: WritableFileSystem | None = None
    for context in (TaskRunContext.get(), FlowRunContext.get()):
        store = getattr(context, "result_store", None)
        if store is not None and store.result_storage is not None:
            storage = store.result_storage
            break
    if storage is None:
        storage = await aget_default_result_storage()
    return store_for(storage)


def describe_entry(entry: LedgerEntry) -> dict[str, Any]:
    """An entry as plain data for people (no secret is in an entry to begin with)."""
    return json.loads(entry.model_dump_json())  # type: ignore[no-any-return]
