"""Slots of a batch: the SlotPool before blocks, blocks forced to one slot, the fixed window, and blocks.

``python -m bench.slots [--clips 20 60] [--size 6] [--runs 1] [--job-seconds 2 4] [--handover S]
[--variants ...] [--json PATH]``

One real ``prefect server start`` (SQLite) for the whole benchmark. Each run is a fresh process that
runs one flow: N clips, each an "upload" task run, then a slot of a ``SlotPool`` (limit of ``size``
slots, pool of ``size``) held for a "submit" task run and a job of ``--job-seconds LO HI`` (drawn
uniformly; 2-4 s by default), then a "download" task run. The task runs keep the server as busy as a
batch's do. Run ``r`` draws its job durations with seed ``r``, so every variant of a run gets the
same jobs. Variants:

* ``before``: the ``SlotPool`` of commit ``BEFORE_BLOCKS`` (``git show``, its ``concurrency.py``):
  one acquisition per slot, each clip asking for its own;
* ``k=1``: this tree's pool with every block capped at one slot (the mutation);
* ``fixed-window``: this tree's pool with ``handover_jobs=0``: a block is fresh for
  ``handover_seconds`` only, whatever the jobs' length (the rule before the handover window);
* ``blocks``: this tree's pool.

``--handover S`` is passed as ``handover_seconds`` to every pool that takes it (the pool's own
default otherwise; the table's "handover s" says what each pool ran with, "old default" for a pool
without the keyword). Jobs longer than the handover time are the long-job case: with 6-minute jobs
against 60 s, ``--job-seconds 20 40 --handover 10`` is the same shape 18x faster. There a fixed
window goes stale before a block's first job ends, its lanes idle until its slowest job ends, and
the batch advances in waves; the lane utilisation below shows them.

Counted in the run's process, by wrapping Prefect's client: every increment request the server
answered (granted or refused with 423, Prefect's own retries included) and every read of the limit.
The wait is from a clip asking for a slot to holding one. Times: the batch's wall (the whole flow's
clips, uploads and downloads included); the ideal wall, the job seconds over ``size`` (every lane
busy all the time, nothing else); the slot phase, from the first clip asking for a slot to the last
job giving its slot back; and lane utilisation, the job seconds over ``size`` times the slot phase
(1.0: no lane ever idle; waves and slow acquisitions lower it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench._common import REPO

VARIANTS = ("before", "k=1", "fixed-window", "blocks")
JOB_SECONDS = (2.0, 4.0)
_MARK = "SLOTS-RESULT "
# The last commit whose SlotPool took one slot per acquisition (in concurrency.py then).
BEFORE_BLOCKS = "a755204416f7"


def _old_pool_class(workdir: Path) -> Any:
    """``SlotPool`` before blocks, imported from a copy (read with ``git show``, nothing written)."""
    source = subprocess.run(
        ["git", "show", f"{BEFORE_BLOCKS}:prefect_scenario/concurrency.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = workdir / "concurrency_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("concurrency_before", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.SlotPool


def _pool_class(variant: str, workdir: Path) -> Any:
    from prefect_scenario import slot_pool

    if variant == "before":
        return _old_pool_class(workdir)
    if variant in ("blocks", "fixed-window"):
        return slot_pool.SlotPool

    class OneAtATime(slot_pool.SlotPool):
        async def _room_on_server(self, name: str) -> int | None:
            room = await super()._room_on_server(name)
            return None if room is None else min(room, 1)

    return OneAtATime


class Counts:
    """Requests of the slot protocol, counted where Prefect's client sends them."""

    def __init__(self) -> None:
        self.increments_granted = 0
        self.increments_refused = 0
        self.increment_seconds: list[float] = []
        self.reads = 0
        self.releases = 0

    def install(self) -> None:
        import httpx
        from prefect.client.orchestration import PrefectClient

        counts = self
        increment = PrefectClient.increment_concurrency_slots_with_lease
        read = PrefectClient.read_global_concurrency_limit_by_name
        release = PrefectClient.release_concurrency_slots_with_lease

        async def counted_increment(self: PrefectClient, *args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                response = await increment(self, *args, **kwargs)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == 423:
                    counts.increments_refused += 1
                raise
            finally:
                counts.increment_seconds.append(time.monotonic() - started)
            counts.increments_granted += 1
            return response

        async def counted_read(self: PrefectClient, *args: Any, **kwargs: Any) -> Any:
            counts.reads += 1
            return await read(self, *args, **kwargs)

        async def counted_release(self: PrefectClient, *args: Any, **kwargs: Any) -> Any:
            counts.releases += 1
            return await release(self, *args, **kwargs)

        PrefectClient.increment_concurrency_slots_with_lease = counted_increment  # type: ignore[method-assign]
        PrefectClient.read_global_concurrency_limit_by_name = counted_read  # type: ignore[method-assign]
        PrefectClient.release_concurrency_slots_with_lease = counted_release  # type: ignore[method-assign]


def _pool_kwargs(variant: str, pool_class: Any, handover: float | None) -> dict[str, Any]:
    """The keywords the variant's pool is made with: only those its ``__init__`` takes."""
    accepts = inspect.signature(pool_class).parameters
    kwargs: dict[str, Any] = {}
    if handover is not None and "handover_seconds" in accepts:
        kwargs["handover_seconds"] = handover
    if variant == "fixed-window":
        kwargs["handover_jobs"] = 0.0  # the window is handover_seconds only: the old rule
    return kwargs


def run_one(
    variant: str,
    clips: int,
    size: int,
    seed: int,
    job_seconds: tuple[float, float] = JOB_SECONDS,
    handover: float | None = None,
) -> dict[str, Any]:
    """One flow run of ``clips`` clips through the variant's pool; its figures."""
    import random

    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    workdir = Path(tempfile.mkdtemp(prefix="bench-slots-"))
    pool_class = _pool_class(variant, workdir)
    pool_kwargs = _pool_kwargs(variant, pool_class, handover)
    counts = Counts()
    counts.install()
    name = f"bench-slots-{uuid.uuid4().hex[:8]}"
    rng = random.Random(seed)
    durations = [rng.uniform(*job_seconds) for _ in range(clips)]

    @task(cache_policy=NO_CACHE, persist_result=False)
    async def step(i: int) -> int:
        return i

    @flow(persist_result=False)
    async def slot_batch() -> dict[str, Any]:
        async with get_client() as client:
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=size))
        waits: list[float] = []
        pool = pool_class(name, size, **pool_kwargs)
        asks: list[float] = []  # when clips asked for a slot
        ends: list[float] = []  # when clips gave their slot back
        full: list[float] = []  # when ``size`` jobs first held a slot at once
        running = 0

        async def clip(i: int) -> None:
            nonlocal running
            await step(i)
            asked = time.monotonic()
            asks.append(asked)
            async with pool.slot():
                waits.append(time.monotonic() - asked)
                running += 1
                if running == size and not full:
                    full.append(time.monotonic())
                try:
                    await step(i)
                    await asyncio.sleep(durations[i])
                finally:
                    running -= 1
            ends.append(time.monotonic())
            await step(i)

        started = time.monotonic()
        async with pool:
            await asyncio.gather(*(clip(i) for i in range(clips)))
        wall = time.monotonic() - started
        async with get_client() as client:
            left = (await client.read_global_concurrency_limit_by_name(name)).active_slots
        ordered = sorted(waits)
        slot_phase = max(ends) - min(asks)
        window = getattr(pool, "handover_window", None)
        return {
            "variant": variant,
            "clips": clips,
            "size": size,
            "seed": seed,
            "job_seconds_range": list(job_seconds),
            # What the pool ran with; a pool without the setting kept its own fixed rule.
            "handover_seconds": getattr(pool, "handover_seconds", "old default"),
            "handover_jobs": getattr(pool, "handover_jobs", None),
            # The window at the batch's end, by the longest job the pool saw (None: no such rule).
            "handover_window_end_seconds": round(window(), 1) if callable(window) else None,
            "wall_seconds": round(wall, 2),
            "job_seconds_total": round(sum(durations), 2),
            # Every lane busy from the start to the end, and nothing else: the job seconds over size.
            "ideal_wall_seconds": round(sum(durations) / size, 2),
            "slot_phase_seconds": round(slot_phase, 2),
            # Job time over the lanes' time in the slot phase: lower with waves of idle lanes.
            "lane_utilisation": round(sum(durations) / (size * slot_phase), 3),
            # From the first clip asking to every slot of the limit in use: the start's acquisitions.
            "all_slots_busy_after_seconds": round(full[0] - asks[0], 2) if full else None,
            # Job time over the slot time the batch had: 1.0 would be no slot ever idle.
            "slot_use": round(sum(durations) / (size * wall), 3),
            "wait_median_seconds": round(statistics.median(ordered), 2),
            "wait_p90_seconds": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
            "wait_max_seconds": round(ordered[-1], 2),
            "slots_acquired": pool.acquisitions,
            "acquisition_calls": getattr(pool, "acquisition_calls", pool.acquisitions),
            "handovers": pool.handovers,
            "increments_granted": counts.increments_granted,
            "increments_refused": counts.increments_refused,
            "increment_median_seconds": round(statistics.median(counts.increment_seconds), 3)
            if counts.increment_seconds
            else None,
            "limit_reads": counts.reads - 1,  # less the read of the leftovers above
            "releases": counts.releases,
            "active_slots_after": left,
            "load_1min_after": round(os.getloadavg()[0], 2),  # the machine is shared: say how busy
        }

    return asyncio.run(slot_batch())


def _table(results: list[dict[str, Any]]) -> str:
    columns = [
        ("clips", "clips"),
        ("variant", "variant"),
        ("seed", "seed"),
        ("job s", "job_seconds_range"),
        ("handover s", "handover_seconds"),
        ("handover jobs", "handover_jobs"),
        ("window at end s", "handover_window_end_seconds"),
        ("wall s", "wall_seconds"),
        ("ideal wall s", "ideal_wall_seconds"),
        ("slot phase s", "slot_phase_seconds"),
        ("lane utilisation", "lane_utilisation"),
        ("all slots busy after s", "all_slots_busy_after_seconds"),
        ("slot use", "slot_use"),
        ("wait median s", "wait_median_seconds"),
        ("wait p90 s", "wait_p90_seconds"),
        ("wait max s", "wait_max_seconds"),
        ("increments granted", "increments_granted"),
        ("refused (423)", "increments_refused"),
        ("increment median s", "increment_median_seconds"),
        ("limit reads", "limit_reads"),
        ("releases", "releases"),
        ("slots acquired", "slots_acquired"),
        ("handovers", "handovers"),
        ("left held", "active_slots_after"),
        ("load", "load_1min_after"),
    ]
    lines = [
        "| " + " | ".join(title for title, _ in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for result in results:
        lines.append("| " + " | ".join(_cell(result[key]) for _, key in columns) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return "-".join(f"{x:g}" for x in value)
    return "-" if value is None else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.slots", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, nargs="+", default=[20, 60])
    parser.add_argument("--size", type=int, default=6)
    parser.add_argument("--runs", type=int, default=1, help="runs of each variant per N (run r: seed r)")
    parser.add_argument(
        "--job-seconds",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        default=list(JOB_SECONDS),
        help="each job lasts a uniform draw from LO to HI seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--handover",
        type=float,
        default=None,
        metavar="SECONDS",
        help="handover_seconds of every pool that takes it (default: the pool's own)",
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--one", nargs=3, metavar=("VARIANT", "CLIPS", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    low, high = args.job_seconds
    if not 0 <= low <= high:
        parser.error("--job-seconds wants 0 <= LO <= HI")
    if args.one:
        variant, clips, seed = args.one
        result = run_one(variant, int(clips), args.size, int(seed), (low, high), args.handover)
        print(_MARK + json.dumps(result), flush=True)
        return

    from bench._services import prefect_server

    results: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-slots-logs-") as logs,
        prefect_server(log_dir=Path(logs)) as server,
    ):
        env = {**os.environ, **server.extra["env"], "PYTHONPATH": str(REPO)}
        command = [sys.executable, "-m", "bench.slots", "--size", str(args.size)]
        # A first run on a fresh server is slower whatever the variant: one unreported warm-up, of
        # short jobs (the default ones) whatever the runs' length.
        subprocess.run(
            [*command, "--one", "blocks", str(args.size), "0"],
            cwd=REPO,
            env=env,
            capture_output=True,
            check=True,
        )
        for clips in args.clips:
            for run in range(args.runs):
                # The same job durations for every variant of a run; the order turns each run, so no
                # variant always meets the server's database at the same size.
                order = args.variants[run % len(args.variants) :] + args.variants[: run % len(args.variants)]
                for variant in order:
                    options = ["--job-seconds", str(low), str(high)]
                    if args.handover is not None:
                        options += ["--handover", str(args.handover)]
                    out = subprocess.run(
                        [*command, *options, "--one", variant, str(clips), str(run)],
                        cwd=REPO,
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=900 + 4 * clips * high / args.size,
                    )
                    if out.returncode != 0:
                        raise RuntimeError(f"{variant} x{clips} failed:\n{out.stderr[-3000:]}")
                    line = next(x for x in out.stdout.splitlines() if x.startswith(_MARK))
                    result = json.loads(line.removeprefix(_MARK))
                    result["run"] = run
                    results.append(result)
                    print(json.dumps(result), flush=True)
    results.sort(key=lambda r: (r["clips"], VARIANTS.index(r["variant"]), r["run"]))
    print(_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
