"""Fleet: the overhead workload on SQLite and on PostgreSQL side by side, then one batch fanned out
over 1, 2 and 3 process workers, each against the bare SDK script measured in the same run.

Two Prefect servers (``prefect server start``: one on SQLite, one on a PostgreSQL server of its own,
``bench/_services.py``) and the emulator (3 s jobs) stay up for the whole section.

1. **Databases.** The overhead benchmark's workload (``bench/overhead.py``: N = 50 Video-to-Layers
   jobs on distinct clips, at most C = 10 in flight, ``review=False``) by the batch flow against
   each server, and by the bare SDK script, in turn; the order rotates each run (sqlite, postgresql,
   sdk; then postgresql, sdk, sqlite; ...) so drifting load hits all three alike. Wall and CPU
   medians, each database's ratio to the SDK script, the CPU of each server meanwhile (PostgreSQL's
   own processes apart). Then one traced run per database (``trace``, outside the medians): where
   the wall time goes on each.
2. **Workers.** On the PostgreSQL server, as a user deploys: a ``process`` work pool, the credentials
   block ``scenario`` pointing at the emulator, ``prefect deploy --all`` from the repository's
   ``prefect.yaml``. Per worker count (1, 2, 3 ``prefect worker start --limit 2``, started fresh):
   the SDK script on the N clips with the ceiling as its semaphore, then one run of
   ``video-to-layers-batch/on-demand`` created as the UI's Run button does, with
   ``clips_per_flow_run`` (children over the workers) and a global concurrency limit of 6 slots (the
   emulator refuses a seventh job in flight too). The batch's wall is the parent run's ``created`` →
   ``end_time`` on the server: the pickup by a worker, the flow-run processes' start and the
   children included, as a user waits for it. The emulator is reset and the block gets a fresh
   project id before each run, so nothing is cached; jobs created must equal N.

Every process started here is stopped at the end, the workers' flow-run processes (which start a
session of their own) included: each carries a marker in its environment, and the section reports
any process still alive with it (then kills it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

import httpx

from bench._batch import make_clips, run_side
from bench._common import REPO, median, ratio, summarize
from bench._services import EMULATOR_KEY, EMULATOR_SECRET, Emulator, Service, emulator, prefect_server
from bench.overhead import JOB_SECONDS, KEYS, MAX_LAYERS, TARGET_WALL_RATIO, TRACE_LABEL, _extra_run

DATABASES = ("sqlite", "postgresql")
SIDES = (*DATABASES, "sdk")
CEILING = 6
WORKER_COUNTS = (1, 2, 3)
# Flow runs each worker runs at once (``--limit``), as the e2e suite's fan-out workers: the parent
# batch takes one slot of its worker, so W workers run 2W - 1 children at once.
WORKER_LIMIT = 2
POOL = "scenario-process"  # the pool prefect.yaml's deployments name
CREDENTIALS_BLOCK = "scenario"  # the block prefect.yaml's deployments name
DEPLOYMENT = "video-to-layers-batch/on-demand"
TABLE_ARTIFACT = "video-to-layers-batch-clips"
MARKER = "BENCH_FLEET_MARKER"
WORKERS_MARKER = "BENCH_FLEET_WORKERS"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
# The state the UI's Run dialog sends: Scheduled, to start now.
UI_RUN_STATE = {
    "type": "SCHEDULED",
    "message": "Run from the Prefect UI",
    "state_details": {"deferred": False, "untrackable_result": False, "pause_reschedule": False},
}
PREFECT = str(Path(sys.executable).with_name("prefect"))
ROW_KEYS = (*KEYS, "postgres_cpu_seconds", "sqlite_server_cpu_seconds", "postgresql_server_cpu_seconds")


# -- processes --------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _cpu_with_reaped(pid: int | None) -> float | None:
    """CPU seconds of ``pid`` and its live descendants, plus its children that exited and were reaped
    (``cutime``/``cstime``): a worker's finished flow runs, PostgreSQL's ended backends."""
    if pid is None:
        return None
    from bench._common import process_tree_cpu_seconds

    fields = _stat_fields(pid)
    if fields is None:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    reaped = (int(fields[13]) + int(fields[14])) / tick
    return process_tree_cpu_seconds(pid) + reaped


def _postmaster(server: Service) -> int | None:
    """The PID of the PostgreSQL server behind a Prefect server on PostgreSQL."""
    url = server.extra.get("database_url")
    if not url:
        return None
    from prefect_scenario.postgres import postmaster_pid

    hosts = parse_qs(urlsplit(url).query).get("host")
    return postmaster_pid(Path(hosts[0])) if hosts else None


def _marked(name: str, value: str) -> list[int]:
    """Live processes (not this one) whose environment holds ``name=value``."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        fields = _stat_fields(int(entry.name))
        if needle in environ.split(b"\0") and fields is not None and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _describe(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        command = "?"
    return f"{pid}: {command.strip()[:160]}"


def _kill_marked(name: str, value: str) -> list[str]:
    """SIGKILL every live process carrying the marker; what was found (empty: nothing was left)."""
    found = _marked(name, value)
    described = [_describe(pid) for pid in found]
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return described


@contextlib.contextmanager
def _environment(**settings: str | None) -> Iterator[None]:
    """Set (or, for None, remove) environment variables of this process for the block."""
    saved = {key: os.environ.get(key) for key in settings}
    try:
        for key, value in settings.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class _Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    handle: IO[bytes]

    def stop(self) -> None:
        """SIGTERM to its group, SIGKILL after 15 s (its flow-run processes are swept apart)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.handle.close()


# -- the Prefect API, over REST -------------------------------------------------------------------


class _API:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=60)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        for attempt in range(6):
            response = self.http.request(method, path, json=body)
            if response.status_code not in (429, 502, 503) or attempt == 5:
                break
            time.sleep(0.5 * 2**attempt)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 2)


# -- 1. the overhead workload on both databases -----------------------------------------------------


def _databases(
    servers: dict[str, Service],
    emu: Emulator,
    clips: list[str],
    *,
    runs: int,
    concurrency: int,
    log_dir: Path,
    trace: bool = True,
) -> dict[str, Any]:
    jobs = len(clips)
    common: dict[str, Any] = {
        "max_layers": MAX_LAYERS,
        "concurrency": concurrency,
        "log_dir": log_dir,
        "clips": clips,
    }
    postmaster = _postmaster(servers["postgresql"])
    # Warm-up, not measured: the fake model's first (real) run, each server's first flow.
    run_side("sdk", emulator=emu, prefect=servers["postgresql"], **{**common, "clips": clips[:1]})
    for database in DATABASES:
        run_side("flow", emulator=emu, prefect=servers[database], **{**common, "clips": clips[:2]})
    rows: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for attempt in range(runs):
        shift = attempt % len(SIDES)
        for side in (*SIDES[shift:], *SIDES[:shift]):
            server = servers["postgresql" if side == "sdk" else side]
            before = {name: service.cpu_seconds() for name, service in servers.items()}
            postgres_before = _cpu_with_reaped(postmaster)
            row = run_side("sdk" if side == "sdk" else "flow", emulator=emu, prefect=server, **common)
            for name, service in servers.items():
                row[f"{name}_server_cpu_seconds"] = round(service.cpu_seconds() - before[name], 2)
            postgres_after = _cpu_with_reaped(postmaster)
            if postgres_before is not None and postgres_after is not None:
                row["postgres_cpu_seconds"] = round(postgres_after - postgres_before, 2)
            if side == "sdk":
                row.pop("prefect_server_cpu_seconds", None)  # no Prefect server takes part
            rows[side].append(row)
            print(
                f"   run {attempt + 1} {side}: wall {row['wall_seconds']:.1f} s, "
                f"cpu {row['cpu_seconds']:.1f} s, errors {row['errors']}, jobs {row['jobs_created']}",
                flush=True,
            )
    traced = {
        database: _extra_run(
            f"{TRACE_LABEL} on {database}",
            emulator=emu,
            prefect=servers[database],
            what_if=["trace"],
            **common,
        )
        for database in (DATABASES if trace else ())
    }
    summary = {side: summarize(rows[side], ROW_KEYS) for side in SIDES}
    sdk = summary["sdk"]
    ratios: dict[str, Any] = {}
    targets: dict[str, Any] = {}
    for database in DATABASES:
        flow = summary[database]
        wall = ratio(flow["wall_seconds"]["median"], sdk["wall_seconds"]["median"])
        ratios[database] = {
            "wall": wall,
            "cpu": ratio(flow["cpu_seconds"]["median"], sdk["cpu_seconds"]["median"]),
            "wall_paired": [
                ratio(f["wall_seconds"], s["wall_seconds"])
                for f, s in zip(rows[database], rows["sdk"], strict=True)
            ],
        }
        targets[database] = {
            "target": f"flow wall time <= {TARGET_WALL_RATIO} x the SDK script's",
            "value": wall,
            "met": wall is not None and wall <= TARGET_WALL_RATIO,
        }
    return {
        "jobs": jobs,
        "concurrency": concurrency,
        "job_seconds": JOB_SECONDS,
        "max_layers": MAX_LAYERS,
        "runs": runs,
        "order": "rotating: sqlite, postgresql, sdk; then postgresql, sdk, sqlite; ...",
        "summary": summary,
        "ratios": ratios,
        "targets": targets,
        "jobs_created_ok": {
            side: all(row.get("jobs_created") == jobs for row in rows[side]) for side in SIDES
        },
        "errors": {side: [row.get("errors") for row in rows[side]] for side in SIDES},
        "trace": {
            database: {
                "label": f"{TRACE_LABEL} on {database}",
                **{k: run.get(k) for k in ("wall_seconds", "cpu_seconds", "errors", "error", "log")},
                "timings": run.get("trace") or {},
                "prefect_requests": run.get("prefect_requests") or {},
            }
            for database, run in traced.items()
        },
        "raw": {
            side: [
                {k: row.get(k) for k in (*ROW_KEYS, "errors", "jobs_created", "max_jobs_in_flight", "log")}
                for row in rows[side]
            ]
            for side in SIDES
        },
    }


# -- 2. one batch over 1, 2, 3 workers ----------------------------------------------------------------


class _Fleet:
    """The deployment stack on the PostgreSQL server: pool, block, deployments, workers."""

    def __init__(self, server: Service, emu: Emulator, workdir: Path, log_dir: Path, marker: str) -> None:
        self.server = server
        self.emu = emu
        self.workdir = workdir
        self.log_dir = log_dir
        self.api = _API(server.url)
        self.postmaster = _postmaster(server)
        self.env = {
            key: value
            for key, value in os.environ.items()
            # Nothing of the surrounding session: the fleet's own home, server and keys.
            if not key.startswith(("PREFECT_", "SCENARIO_", "BENCH_PREFECT_"))
        }
        self.env.update(
            {
                "PREFECT_HOME": str(workdir / "prefect-home"),
                "PREFECT_API_URL": server.url,
                "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(workdir / "results"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "DO_NOT_TRACK": "1",
                # Workers ask for scheduled runs every second instead of every ten (as the e2e suite).
                "PREFECT_WORKER_QUERY_SECONDS": "1",
                "PREFECT_CLI_PROMPT": "false",
                # Stands in for `pip install prefect-scenario`: entrypoints are module paths.
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
                # `{{ $PWD }}` in prefect.yaml's pull step: flow runs start where the deploy ran.
                "PWD": str(workdir),
                "PYTHONUNBUFFERED": "1",
                MARKER: marker,
            }
        )
        self.setup_seconds: dict[str, float] = {}

    def cli(self, args: list[str], timeout: float = 180) -> str:
        done = subprocess.run(
            args,
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
            check=False,
        )
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:4])} ... exited {done.returncode}:\n{output[-3000:]}")
        return output

    def save_credentials(self, project_id: str) -> None:
        """The block the deployments name, on the emulator, with a project of its own."""
        self.cli(
            [
                sys.executable,
                "-c",
                "import sys; from prefect_scenario.blocks import ScenarioCredentials; "
                "ScenarioCredentials(api_key=sys.argv[1], api_secret=sys.argv[2], base_url=sys.argv[3], "
                "project_id=sys.argv[4]).save(sys.argv[5], overwrite=True)",
                EMULATOR_KEY,
                EMULATOR_SECRET,
                self.emu.base_url,
                project_id,
                CREDENTIALS_BLOCK,
            ]
        )

    def deploy(self) -> None:
        started = time.monotonic()
        self.cli([PREFECT, "work-pool", "create", POOL, "--type", "process", "--overwrite"])
        self.save_credentials(f"proj_fleet{uuid.uuid4().hex[:12]}")
        began = time.monotonic()
        output = self.cli(
            [PREFECT, "--no-prompt", "deploy", "--all", "--prefect-file", str(REPO / "prefect.yaml")],
            timeout=600,
        )
        self.setup_seconds["deploy_seconds"] = round(time.monotonic() - began, 1)
        (self.log_dir / "fleet-deploy.log").write_text(output)
        self.deployment = self.api.call("GET", f"/deployments/name/{DEPLOYMENT}")
        self.setup_seconds["setup_seconds"] = round(time.monotonic() - started, 1)

    def start(self, name: str, command: list[str], log: Path, marker: str) -> _Worker:
        """A long-running process of the stack (a worker, a watcher), in a session of its own."""
        handle = log.open("wb")
        process = subprocess.Popen(
            command,
            cwd=self.workdir,
            env={**self.env, WORKERS_MARKER: marker},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return _Worker(name, process, log, handle)

    def cancel_unfinished(self, run: dict[str, Any], row: dict[str, Any]) -> None:
        """A run not terminal at its deadline: marked ``timed_out`` in ``row`` and cancelled."""
        if run["state_type"] in TERMINAL:
            return
        row["timed_out"] = True
        with contextlib.suppress(Exception):
            self.api.call(
                "POST", f"/flow_runs/{run['id']}/set_state", {"state": {"type": "CANCELLING"}, "force": True}
            )

    def start_workers(self, count: int, marker: str) -> list[_Worker]:
        workers = []
        for number in range(1, count + 1):
            name = f"fleet-{count}w-{number}"
            command = [
                PREFECT,
                "worker",
                "start",
                "--pool",
                POOL,
                "--name",
                name,
                "--limit",
                str(WORKER_LIMIT),
            ]
            workers.append(
                self.start(name, command, self.log_dir / f"fleet-worker-{count}w-{number}.log", marker)
            )
        deadline = time.monotonic() + 180
        names = {worker.name for worker in workers}
        while True:
            for worker in workers:
                if worker.process.poll() is not None:
                    tail = worker.log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"worker {worker.name} exited {worker.process.returncode}:\n{tail}")
            online = {
                item["name"]
                for item in self.api.call("POST", f"/work_pools/{POOL}/workers/filter", {"limit": 100})
                if item.get("status") == "ONLINE"
            }
            if names <= online:
                return workers
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers {sorted(names - online)} not online after 180 s")
            time.sleep(0.5)

    def batch(self, count: int, clips: list[str], per_child: int, timeout: float) -> dict[str, Any]:
        """One fan-out batch of ``clips`` over ``count`` fresh workers; its figures."""
        self.emu.reset()
        project_id = f"proj_fleet{uuid.uuid4().hex[:12]}"
        self.save_credentials(project_id)
        destination = self.workdir / "outputs" / f"{count}w-{uuid.uuid4().hex[:6]}"
        marker = uuid.uuid4().hex
        workers = self.start_workers(count, marker)
        row: dict[str, Any] = {"workers": count, "worker_limit": WORKER_LIMIT, "project_id": project_id}
        try:
            cpu_before = {w.name: _cpu_with_reaped(w.process.pid) or 0.0 for w in workers}
            server_before = self.server.cpu_seconds()
            postgres_before = _cpu_with_reaped(self.postmaster)
            parameters = {
                "videos": clips,
                "destination": str(destination),
                "max_layers": MAX_LAYERS,
                "clips_per_flow_run": per_child,
                "concurrency_limit_name": f"fleet-{uuid.uuid4().hex[:8]}",
                "concurrency_limit": CEILING,
                "review": False,
                # As the overhead batch: no budget, so no estimate per clip (the SDK script makes none).
                "budget_creative_units": None,
            }
            started = time.monotonic()
            parent = self.api.call(
                "POST",
                f"/deployments/{self.deployment['id']}/create_flow_run",
                {"parameters": parameters, "state": UI_RUN_STATE},
            )
            final = parent
            while final["state_type"] not in TERMINAL and time.monotonic() - started < timeout:
                time.sleep(0.5)
                final = self.api.call("GET", f"/flow_runs/{parent['id']}")
            row["observed_seconds"] = round(time.monotonic() - started, 1)
            # Before the workers stop: their flow runs' CPU is reaped into theirs.
            time.sleep(1.0)
            after = {w.name: _cpu_with_reaped(w.process.pid) or cpu_before[w.name] for w in workers}
            row["workers_cpu_seconds"] = round(sum(after[name] - cpu_before[name] for name in after), 2)
            row["prefect_server_cpu_seconds"] = round(self.server.cpu_seconds() - server_before, 2)
            postgres_after = _cpu_with_reaped(self.postmaster)
            if postgres_before is not None and postgres_after is not None:
                row["postgres_cpu_seconds"] = round(postgres_after - postgres_before, 2)
            self.cancel_unfinished(final, row)
            row.update(self._figures(final, len(clips), destination))
        finally:
            for worker in workers:
                worker.stop()
            # Flow-run processes start a session of their own: whatever outlived its worker.
            row["left_running_after_workers"] = _kill_marked(WORKERS_MARKER, marker)
            shutil.rmtree(destination, ignore_errors=True)
        return row

    def _figures(self, parent: dict[str, Any], clips: int, destination: Path) -> dict[str, Any]:
        tag = f"scenario-batch-{parent['id'][:8]}"
        children = self.api.call(
            "POST", "/flow_runs/filter", {"flow_runs": {"tags": {"all_": [tag]}}, "limit": 200}
        )
        per_worker: dict[str, int] = {}
        budgets: set[str] = set()
        child_rows = []
        for child in children:
            worker = (child.get("labels") or {}).get("prefect.worker.name") or "?"
            videos = len((child.get("parameters") or {}).get("videos") or [])
            per_worker[worker] = per_worker.get(worker, 0) + videos
            # What the child ran with: its parameters over the deployment's (the parent had no budget).
            budgets.add(str((child.get("parameters") or {}).get("budget_creative_units")))
            child_rows.append(
                {
                    "name": child["name"],
                    "state": child["state_type"],
                    "worker": worker,
                    "clips": videos,
                    "pickup_seconds": _seconds_between(child["created"], child.get("start_time")),
                    "run_seconds": _seconds_between(child.get("start_time"), child.get("end_time")),
                }
            )
        stats = self.emu.stats()
        statuses: dict[str, int] = {}
        with contextlib.suppress(Exception):
            artifacts = self.api.call(
                "POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [parent["id"]]}}}
            )
            table = next(a for a in artifacts if a.get("key") == TABLE_ARTIFACT)["data"]
            for item in json.loads(table) if isinstance(table, str) else table:
                statuses[str(item.get("status"))] = statuses.get(str(item.get("status")), 0) + 1
        stored = sum(1 for p in destination.rglob("*") if p.is_file() and not p.name.startswith("."))
        return {
            "flow_run_id": parent["id"],
            "state": parent["state_type"],
            "message": ((parent.get("state") or {}).get("message") or "")[:300],
            "wall_seconds": _seconds_between(parent["created"], parent.get("end_time")),
            "parent_pickup_seconds": _seconds_between(parent["created"], parent.get("start_time")),
            "parent_worker": (parent.get("labels") or {}).get("prefect.worker.name"),
            "children": len(children),
            "children_by_state": {
                s: sum(1 for c in child_rows if c["state"] == s) for s in {c["state"] for c in child_rows}
            },
            "child_pickup_seconds_median": median(c["pickup_seconds"] for c in child_rows),
            "child_run_seconds_median": median(c["run_seconds"] for c in child_rows),
            "clips_per_worker": dict(sorted(per_worker.items())),
            "children_budget_creative_units": sorted(budgets),
            "children_detail": child_rows,
            "jobs_created": stats["jobs_created"],
            "jobs_created_ok": stats["jobs_created"] == clips,
            "max_jobs_in_flight": stats["max_jobs_in_flight"],
            "clip_statuses": statuses,
            "outputs_stored": stored,
        }


def _workers(
    server: Service,
    emu: Emulator,
    clips: list[str],
    *,
    workdir: Path,
    log_dir: Path,
    marker: str,
    timeout: float,
    worker_counts: tuple[int, ...] = WORKER_COUNTS,
) -> dict[str, Any]:
    # Children enough that W workers of WORKER_LIMIT flow runs (one taken by the parent) all get some.
    per_child = math.ceil(len(clips) / (max(WORKER_COUNTS) * WORKER_LIMIT - 1))
    fleet = _Fleet(server, emu, workdir, log_dir, marker)
    sdk_rows: list[dict[str, Any]] = []
    batches: list[dict[str, Any]] = []
    try:
        fleet.deploy()
        print(f"   deployed ({fleet.setup_seconds})", flush=True)
        emu.configure(concurrency_ceiling=CEILING)
        for count in worker_counts:
            began = time.monotonic()
            sdk = run_side(
                "sdk",
                emulator=emu,
                prefect=server,
                clips=clips,
                max_layers=MAX_LAYERS,
                concurrency=CEILING,
                log_dir=log_dir,
            )
            sdk["process_seconds"] = round(time.monotonic() - began, 1)
            sdk.pop("prefect_server_cpu_seconds", None)
            sdk_rows.append(sdk)
            print(
                f"   sdk: wall {sdk['wall_seconds']:.1f} s, cpu {sdk['cpu_seconds']:.1f} s, "
                f"errors {sdk['errors']}, jobs {sdk['jobs_created']}",
                flush=True,
            )
            try:
                row = fleet.batch(count, clips, per_child, timeout)
            except Exception as exc:  # one broken count must not lose the others' figures
                row = {"workers": count, "error": f"{type(exc).__name__}: {exc}"[:2000]}
            row["sdk_wall_seconds_beside"] = sdk["wall_seconds"]
            batches.append(row)
            print(
                f"   {count} worker(s): {row.get('state', row.get('error'))}, "
                f"wall {row.get('wall_seconds')} s, jobs {row.get('jobs_created')}, "
                f"clips per worker {row.get('clips_per_worker')}",
                flush=True,
            )
    finally:
        with contextlib.suppress(Exception):
            emu.configure(concurrency_ceiling=None)
        fleet.api.close()
    sdk_summary = summarize(sdk_rows, ("wall_seconds", "cpu_seconds", "peak_rss_bytes", "process_seconds"))
    sdk_wall = (sdk_summary.get("wall_seconds") or {}).get("median")
    for row in batches:
        row["wall_ratio"] = ratio(row.get("wall_seconds"), sdk_wall)
        row["wall_ratio_paired"] = ratio(row.get("wall_seconds"), row.get("sdk_wall_seconds_beside"))
        row["cpu_ratio"] = ratio(
            row.get("workers_cpu_seconds"), (sdk_summary.get("cpu_seconds") or {}).get("median")
        )
    return {
        "clips": len(clips),
        "job_seconds": JOB_SECONDS,
        "max_layers": MAX_LAYERS,
        "ceiling": CEILING,
        "clips_per_flow_run": per_child,
        "worker_limit": WORKER_LIMIT,
        "worker_counts": list(worker_counts),
        "deployment": DEPLOYMENT,
        "setup": fleet.setup_seconds,
        "sdk": sdk_summary,
        "sdk_runs": [
            {
                k: row.get(k)
                for k in ("wall_seconds", "cpu_seconds", "process_seconds", "errors", "jobs_created", "log")
            }
            for row in sdk_rows
        ],
        "batches": batches,
        "jobs_created_ok": all(row.get("jobs_created_ok") for row in batches)
        and all(row.get("jobs_created") == len(clips) for row in sdk_rows),
    }


# -- the section ----------------------------------------------------------------------------------


@dataclass
class Marked:
    """What :func:`marked_section` gives its block: the marker, a work folder, the postmaster to check."""

    marker: str
    workdir: Path
    postmaster: int | None = None


@contextlib.contextmanager
def marked_section(section: dict[str, Any], prefix: str) -> Iterator[Marked]:
    """A section whose processes all carry a marker: at its end, any still alive is reported under
    ``section["left_running"]`` and killed (the PostgreSQL server too, by ``postmaster``'s PID, since
    it may run without the marker), and the work folder is removed.

    Every process started in the block carries the marker (children inherit the environment); the
    block must start a Prefect server of its own, not reuse one (``BENCH_PREFECT_API_URL`` is unset).
    """
    marked = Marked(uuid.uuid4().hex, Path(tempfile.mkdtemp(prefix=prefix)))
    try:
        with _environment(**{MARKER: marked.marker, "BENCH_PREFECT_API_URL": None}):
            yield marked
    finally:
        # Servers, PostgreSQL and the emulator are stopped: nothing with the marker may be left.
        time.sleep(1.0)
        section["left_running"] = _kill_marked(MARKER, marked.marker)
        from prefect_scenario.postgres import pid_alive

        if marked.postmaster is not None and pid_alive(marked.postmaster):
            section["left_running"].append(_describe(marked.postmaster))
            with contextlib.suppress(ProcessLookupError):
                os.kill(marked.postmaster, signal.SIGKILL)
        shutil.rmtree(marked.workdir, ignore_errors=True)
    if section["left_running"]:
        print(f"   processes left running (killed): {section['left_running']}", flush=True)


def run(
    *,
    log_dir: Path,
    quick: bool = False,
    runs: int | None = None,
    jobs: int | None = None,
    clips: int | None = None,
) -> dict[str, Any]:
    """Run the fleet benchmark (its own servers); returns its section of the report."""
    runs = runs or (1 if quick else 3)
    jobs = jobs or (6 if quick else 50)
    concurrency = 3 if quick else 10
    batch_clips = clips or (6 if quick else 30)
    timeout = 600.0 if quick else 900.0
    section: dict[str, Any] = {
        "description": "the overhead workload on SQLite and on PostgreSQL side by side; a fan-out batch "
        "over 1, 2 and 3 process workers; each against the bare SDK script",
        "target_wall_ratio": TARGET_WALL_RATIO,
    }
    with marked_section(section, "bench-fleet-") as marked, contextlib.ExitStack() as stack:
        workdir, marker = marked.workdir, marked.marker
        made = make_clips(
            workdir / "clips", max(jobs, batch_clips), seconds=2.0, width=160, height=120, fps=12
        )
        servers: dict[str, Service] = {}
        for database in DATABASES:
            print(f"   starting a Prefect server on {database}...", flush=True)
            servers[database] = stack.enter_context(
                prefect_server(log_dir=log_dir / f"fleet-{database}", database=database)
            )
        section["servers"] = {
            name: {"url": s.url, "startup_seconds": s.extra.get("startup_seconds")}
            for name, s in servers.items()
        }
        marked.postmaster = _postmaster(servers["postgresql"])
        emu = stack.enter_context(
            emulator(log_dir=log_dir / "fleet-emulator", job_seconds=JOB_SECONDS, fake_model="copy")
        )
        began = time.monotonic()
        try:
            section["databases"] = _databases(
                servers,
                emu,
                made[:jobs],
                runs=runs,
                concurrency=concurrency,
                log_dir=log_dir,
                # The traced runs are diagnostics: not in a smoke run.
                trace=not quick,
            )
        except Exception as exc:
            section["databases"] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            print(f"   databases FAILED: {section['databases']['error']}", flush=True)
        section["databases"]["seconds"] = round(time.monotonic() - began, 1)
        began = time.monotonic()
        try:
            section["workers"] = _workers(
                servers["postgresql"],
                emu,
                made[:batch_clips],
                workdir=workdir,
                log_dir=log_dir,
                marker=marker,
                timeout=timeout,
                # A smoke run: one batch, over the most workers (the spread is what to check).
                worker_counts=(max(WORKER_COUNTS),) if quick else WORKER_COUNTS,
            )
        except Exception as exc:
            section["workers"] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            print(f"   workers FAILED: {section['workers']['error']}", flush=True)
        section["workers"]["seconds"] = round(time.monotonic() - began, 1)
    return section
