"""``python -m bench [BENCHMARK ...] [--quick] [--runs N] [--profile] [--out DIR]``.

Benchmarks: ``polling``, ``overhead``, ``memory``, ``scale``, ``watcher``, ``fleet`` (default: all six,
in that order; ``fleet`` starts Prefect servers of its own, on SQLite and on PostgreSQL, after the
shared one is stopped), and, only when named, ``suspend`` (a deployed batch in ``wait="inline"``
and ``wait="suspend"`` mode at 50 and 200 clips, a server of its own; ~30 min) and ``crash`` (kill -9
at every phase, a killed batch, a fault soak: ``make soak``).
Writes ``<out>/latest.json`` and ``<out>/latest.md`` (``quick.json`` / ``quick.md`` with ``--quick``,
so a smoke run never overwrites real figures). Running a subset keeps the other benchmarks' last
results in the report, each with its own date.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench._common import RESULTS_DIR, load_average, machine_facts, write_json

BENCHMARKS = ("polling", "overhead", "memory", "scale", "watcher", "fleet", "suspend", "crash")
NEEDS_PREFECT = {"overhead", "memory", "scale", "watcher", "crash"}
# Start servers of their own (SQLite and PostgreSQL side by side): run once the shared one is stopped,
# so no idle third server competes with them for the CPUs.
OWN_SERVERS = {"fleet", "suspend"}
# Run only when named: crash measures safety, not speed, and takes as long as the others together;
# suspend takes ~30 min of 60 s jobs (2 modes x 50 and 200 clips), most of the default run again.
ONLY_WHEN_NAMED = {"suspend", "crash"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "benchmarks",
        nargs="*",
        metavar="BENCHMARK",
        help=f"any of {', '.join(BENCHMARKS)} or all (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: small N, small files, 1-3 runs")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default per benchmark)")
    parser.add_argument("--jobs", type=int, default=None, help="N of the overhead benchmark (default 50)")
    parser.add_argument(
        "--scale-jobs", type=int, default=None, help="N of the scale benchmark (default 1000)"
    )
    parser.add_argument(
        "--watcher-jobs", type=int, default=None, help="N of the watcher benchmark (default 1000)"
    )
    parser.add_argument(
        "--scale-deadline", type=float, default=None, help="seconds a scale flow run may take (default 480)"
    )
    parser.add_argument(
        "--fleet-clips", type=int, default=None, help="clips of the fleet benchmark's batches (default 30)"
    )
    parser.add_argument(
        "--suspend-clips",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="batch sizes of the suspend benchmark (default 50 200)",
    )
    parser.add_argument(
        "--suspend-job-seconds",
        type=float,
        default=None,
        help="emulator job time of the suspend benchmark (60)",
    )
    parser.add_argument(
        "--suspend-ceiling",
        type=int,
        default=None,
        help="custom-job ceiling and limit of the suspend benchmark (20)",
    )
    parser.add_argument(
        "--suspend-interval",
        type=float,
        default=None,
        help="the suspend benchmark's watcher sweep seconds (5)",
    )
    parser.add_argument("--profile", action="store_true", help="also record py-spy profiles (extra runs)")
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the Prefect server's database (default sqlite, Prefect's embedded default)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the reports go")
    return parser


@contextlib.contextmanager
def _prefect_server(needed: bool, log_dir: Path, database: str = "sqlite") -> Iterator[Any]:
    if not needed:
        yield None
        return
    from bench._services import prefect_server

    print(f"starting a Prefect server ({database}) in its own process...", flush=True)
    with prefect_server(log_dir=log_dir, database=database) as server:
        print(
            f"  Prefect API at {server.url} (ready in {server.extra.get('startup_seconds', 0)} s)", flush=True
        )
        yield server


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = sorted(set(args.benchmarks) - {*BENCHMARKS, "all"})
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)} or all")
    chosen = [
        name
        for name in BENCHMARKS
        if name in args.benchmarks
        or (name not in ONLY_WHEN_NAMED and ("all" in args.benchmarks or not args.benchmarks))
    ]
    stem = "quick" if args.quick else "latest"
    json_path, md_path = args.out / f"{stem}.json", args.out / f"{stem}.md"
    previous: dict[str, Any] = {}
    if json_path.exists():
        with contextlib.suppress(ValueError):
            previous = json.loads(json_path.read_text())
    log_dir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    profile_dir = (args.out / "profiles") if args.profile else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    document: dict[str, Any] = {
        "machine": machine_facts(),
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "logs": str(log_dir),
        "benchmarks": dict(previous.get("benchmarks", {})),
    }
    if previous.get("benchmarks") and set(previous["benchmarks"]) - set(chosen):
        # Sections of an earlier invocation stay in the report: say which invocation made them.
        earlier = {
            "command": previous.get("command"),
            "date": previous.get("machine", {}).get("date"),
            "total_seconds": previous.get("total_seconds"),
            "benchmarks": sorted(previous["benchmarks"]),
        }
        document["history"] = [*previous.get("history", []), earlier][-5:]
    print(f"bench: {', '.join(chosen)}{' (quick)' if args.quick else ''}; logs in {log_dir}", flush=True)
    failures = 0

    def one(name: str, prefect: Any) -> None:
        nonlocal failures
        print(f"== {name}", flush=True)
        began = time.monotonic()
        load_before = load_average()
        try:
            section = _run(name, args, prefect, log_dir, profile_dir)
        except Exception as exc:  # one broken benchmark must not lose the others' figures
            failures += 1
            section = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"   FAILED: {section['error']}", flush=True)
        section["ran_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        section["seconds"] = round(time.monotonic() - began, 1)
        section["load_average_before"] = load_before
        section["load_average_after"] = load_average()
        document["benchmarks"][name] = section
        print(f"   done in {section['seconds']} s", flush=True)
        document["total_seconds"] = round(time.monotonic() - started, 1)
        write_json(json_path, document)
        md_path.write_text(report.render(document))

    shared = [name for name in chosen if name not in OWN_SERVERS]
    with _prefect_server(bool(NEEDS_PREFECT.intersection(shared)), log_dir, args.database) as prefect:
        if prefect is not None:
            document["prefect_server"] = {
                "url": prefect.url,
                "startup_seconds": prefect.extra.get("startup_seconds"),
                "database": args.database,
            }
        for name in shared:
            one(name, prefect)
    for name in chosen:
        if name in OWN_SERVERS:
            one(name, None)
    document["total_seconds"] = round(time.monotonic() - started, 1)
    write_json(json_path, document)
    md_path.write_text(report.render(document))
    print(f"wrote {json_path} and {md_path} in {document['total_seconds']} s", flush=True)
    return 1 if failures else 0


def _run(
    name: str, args: argparse.Namespace, prefect: Any, log_dir: Path, profile_dir: Path | None
) -> dict[str, Any]:
    if name == "polling":
        from bench import polling

        return polling.run(quick=args.quick, runs=args.runs)
    if name == "memory":
        from bench import memory

        return memory.run(
            prefect=prefect, log_dir=log_dir, quick=args.quick, runs=args.runs, profile_dir=profile_dir
        )
    if name == "overhead":
        from bench import overhead

        return overhead.run(
            prefect=prefect,
            log_dir=log_dir,
            quick=args.quick,
            runs=args.runs,
            jobs=args.jobs,
            profile_dir=profile_dir,
        )
    if name == "crash":
        from bench import crash

        return crash.run(prefect=prefect, log_dir=log_dir, quick=args.quick)
    if name == "fleet":
        from bench import fleet

        return fleet.run(
            log_dir=log_dir, quick=args.quick, runs=args.runs, jobs=args.jobs, clips=args.fleet_clips
        )
    if name == "suspend":
        from bench import suspend

        return suspend.run(
            log_dir=log_dir,
            quick=args.quick,
            sizes=tuple(args.suspend_clips) if args.suspend_clips else None,
            job_seconds=args.suspend_job_seconds,
            ceiling=args.suspend_ceiling,
            sweep_seconds=args.suspend_interval,
            database=args.database,
        )
    if name == "watcher":
        from bench import watcher

        return watcher.run(prefect=prefect, log_dir=log_dir, quick=args.quick, jobs=args.watcher_jobs)
    from bench import scale

    return scale.run(
        prefect=prefect,
        log_dir=log_dir,
        quick=args.quick,
        jobs=args.scale_jobs,
        deadline=args.scale_deadline,
        profile_dir=profile_dir,
    )


if __name__ == "__main__":
    raise SystemExit(main())
