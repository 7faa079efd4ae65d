"""What every benchmark shares: process measurements, statistics, machine facts, worker processes.

Measurements are taken by the measured process itself (``getrusage`` for CPU, ``/proc/self/status``
for memory): each measurement runs in a fresh worker process (``python -m bench._worker``), so no
run inherits the allocator state, caches or threads of another.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MiB = 1024 * 1024
# py-spy's sampling rate: enough samples for a few-minute run, and half the default's own CPU.
PROFILE_HZ = 50
GiB = 1024 * MiB


# -- measuring the current process ------------------------------------------------------------


def cpu_seconds() -> float:
    """CPU time (user + system) of this process, every thread included, children excluded."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _status_kib(field: str, pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def rss_bytes() -> int:
    """Resident set size now."""
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size since start (or since :func:`reset_peak_rss`)."""
    return _status_kib("VmHWM") * 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) to the current RSS; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


@dataclass
class Section:
    """Wall time, CPU time and peak RSS of a stretch of code in this process."""

    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    rss_before_bytes: int = 0
    peak_rss_bytes: int = 0
    peak_reset: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "wall_seconds": round(self.wall_seconds, 4),
            "cpu_seconds": round(self.cpu_seconds, 4),
            "rss_before_bytes": self.rss_before_bytes,
            "peak_rss_bytes": self.peak_rss_bytes,
            "growth_bytes": self.peak_rss_bytes - self.rss_before_bytes,
            "peak_reset": self.peak_reset,
        }


class measure:
    """``with measure() as m: ...`` fills ``m`` (a :class:`Section`) when the block ends."""

    def __init__(self, reset_peak: bool = True) -> None:
        self.section = Section()
        self._reset_peak = reset_peak

    def __enter__(self) -> Section:
        import gc

        gc.collect()
        self.section.peak_reset = reset_peak_rss() if self._reset_peak else False
        self.section.rss_before_bytes = rss_bytes()
        self._cpu = cpu_seconds()
        self._wall = time.perf_counter()
        return self.section

    def __exit__(self, *exc: object) -> None:
        self.section.wall_seconds = time.perf_counter() - self._wall
        self.section.cpu_seconds = cpu_seconds() - self._cpu
        self.section.peak_rss_bytes = peak_rss_bytes()


def process_tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its live descendants, read from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces.
        fields = raw[raw.rindex(")") + 2 :].split()
        child = int(entry.name)
        stats[child] = fields
        children.setdefault(int(fields[1]), []).append(child)
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        fields = stats.get(current)
        if fields is not None:
            # utime, stime are fields 14 and 15 of stat (indices 11, 12 after the name).
            total += (int(fields[11]) + int(fields[12])) / tick
        todo.extend(children.get(current, []))
    return total


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (other work on the machine skews timings)."""
    return [round(value, 2) for value in os.getloadavg()]


# -- statistics -------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float | None:
    """The median, or None for no values."""
    items = [value for value in values if value is not None]
    return statistics.median(items) if items else None


def ratio(value: float | None, baseline: float | None) -> float | None:
    """``value / baseline`` rounded to 3 places; None when either is missing or the baseline is 0."""
    if value is None or baseline in (None, 0):
        return None
    assert baseline is not None
    return round(value / baseline, 3)


def summarize(runs: Sequence[Mapping[str, Any]], keys: Iterable[str]) -> dict[str, Any]:
    """Median, min and max of each key over the runs."""
    summary: dict[str, Any] = {}
    for key in keys:
        values = [run[key] for run in runs if run.get(key) is not None]
        if values:
            summary[key] = {
                "median": round(statistics.median(values), 4),
                "min": round(min(values), 4),
                "max": round(max(values), 4),
                "runs": len(values),
            }
    return summary


# -- machine and versions ---------------------------------------------------------------------


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> dict[str, Any]:
    """Where and with what the figures were measured."""
    memory_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "nproc": os.cpu_count(),
        "ram_gib": round(memory_kib / MiB, 1),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {
            name: _version(name)
            for name in (
                "prefect",
                "prefect-aws",
                "httpx",
                "scenario-sdk",
                "pydantic",
                "uvicorn",
                "fastapi",
                "moto",
                "boto3",
                "av",
            )
        },
        "prefect_scenario_commit": _git_commit(),
        "load_average_at_start": load_average(),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "")


# -- worker processes -------------------------------------------------------------------------


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a bench child process: the repo importable, no telemetry."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.setdefault("DO_NOT_TRACK", "1")
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


class WorkerFailed(RuntimeError):
    """A worker process ended without a result."""


class WorkerTimedOut(WorkerFailed):
    """A worker ran past its deadline and was stopped (its process group killed)."""

    def __init__(
        self,
        message: str,
        *,
        seconds: float,
        dumps: list[str],
        log: Path,
        cpu_seconds: float,
        peak_rss: int | None,
    ) -> None:
        super().__init__(message)
        self.seconds = seconds
        self.dumps = dumps
        self.log = log
        self.cpu_seconds = cpu_seconds
        self.peak_rss = peak_rss


def _python_pid(pid: int) -> int:
    """The measured Python process: ``pid`` itself, or its child when ``pid`` is py-spy."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return pid
    if name != "py-spy":
        return pid
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            if int(raw[raw.rindex(")") + 2 :].split()[1]) == pid:
                return int(entry.name)
    return pid


def py_spy() -> Path | None:
    """The py-spy executable of this environment (``pip install py-spy``), if installed."""
    spy = Path(sys.executable).with_name("py-spy")
    return spy if spy.exists() else None


def py_spy_dump(pid: int) -> str:
    """``py-spy dump`` of a running process (its threads' stacks, idle ones included)."""
    spy = py_spy()
    if spy is None:
        return "py-spy is not installed: no dump"
    try:
        done = subprocess.run(
            [str(spy), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"py-spy dump failed: {exc}"
    return done.stdout + done.stderr


def run_worker(
    name: str,
    args: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 900,
    log_dir: Path | None = None,
    profile: str | None = None,
    dumps_at: Sequence[float] = (),
) -> dict[str, Any]:
    """Run ``bench._worker <name>`` in a fresh process and return the JSON it wrote.

    Args:
        name: the worker function (see :mod:`bench._worker`).
        args: its arguments (JSON-serialisable).
        env: extra environment variables.
        timeout: seconds before the worker (its whole process group) is killed.
        log_dir: where the worker's stdout/stderr go (a temp dir when None).
        profile: a path: run the worker under ``py-spy record`` writing collapsed stacks there.
        dumps_at: seconds after the start at which to take a ``py-spy dump`` of the worker.

    Raises:
        WorkerTimedOut: the deadline passed (carries the dumps taken).
        WorkerFailed: the worker failed.
    """
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="bench-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".json", dir=log_dir)[1])
    command = [sys.executable, "-m", "bench._worker", name, json.dumps(dict(args)), str(out)]
    spy = py_spy()
    if profile and spy is not None:
        command = [
            str(spy),
            "record",
            "--format",
            "raw",
            "--rate",
            str(PROFILE_HZ),
            "--nonblocking",
            "-o",
            profile,
            "--",
            *command,
        ]
    log = log_dir / f"{out.stem}.log"
    dumps: list[str] = []
    started = time.monotonic()
    with log.open("w") as handle:
        # A session of its own: on timeout the whole group (py-spy and the worker) is stopped.
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=child_env(env),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        pending = sorted(dumps_at) if spy is not None else []
        while True:
            elapsed = time.monotonic() - started
            wait = min([timeout - elapsed, *(at - elapsed for at in pending[:1])])
            try:
                process.wait(timeout=max(wait, 0.05))
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - started
                if pending and elapsed >= pending[0]:
                    pending.pop(0)
                    dumps.append(py_spy_dump(_python_pid(process.pid)))
                if elapsed >= timeout:
                    python = _python_pid(process.pid)
                    dumps.append(py_spy_dump(python))
                    # The worker's own CPU (not py-spy's, when it is recorded under py-spy).
                    cpu = process_tree_cpu_seconds(python)
                    try:
                        peak: int | None = _status_kib("VmHWM", python) * 1024
                    except (OSError, RuntimeError):
                        peak = None
                    # The worker first: py-spy, seeing its target gone, writes its profile and exits.
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(python, signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(timeout=60)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    raise WorkerTimedOut(
                        f"worker {name} stopped at its {timeout:g} s deadline; log: {log}",
                        seconds=elapsed,
                        dumps=dumps,
                        log=log,
                        cpu_seconds=cpu,
                        peak_rss=peak,
                    ) from None
    text = out.read_text() if out.exists() else ""
    if process.returncode != 0 or not text.strip():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise WorkerFailed(f"worker {name} failed (exit {process.returncode}); log {log}:\n{tail}")
    result: dict[str, Any] = json.loads(text)
    result.setdefault("log", str(log))
    if dumps:
        result["dumps"] = dumps
    return result


def summarize_dump(text: str) -> dict[str, Any]:
    """What the threads of a ``py-spy dump`` were doing: each thread's innermost frame, counted."""
    import re
    from collections import Counter

    threads = re.split(r"\nThread ", "\n" + text)[1:]
    executor: Counter[str] = Counter()
    names: Counter[str] = Counter()
    for thread in threads:
        header, _, body = thread.partition("\n")
        match = re.search(r'"([^"]*)"', header)
        name = match.group(1) if match else "?"
        frame = body.strip().splitlines()[0].strip() if body.strip() else "?"
        names[re.sub(r"[-_][0-9a-f-]{8,}$|_\d+$", "", name)] += 1
        if name.startswith("asyncio_"):
            executor[frame] += 1
    return {
        "threads": len(threads),
        "threads_by_name": dict(names.most_common(12)),
        "default_executor_threads_by_frame": dict(executor.most_common(6)),
    }


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(path.suffix + ".tmp")
    staging.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    staging.replace(path)


def human_bytes(value: float | None) -> str:
    """Bytes in MiB/GiB, the way the tables show them."""
    if value is None:
        return "–"
    if abs(value) >= GiB:
        return f"{value / GiB:.2f} GiB"
    return f"{value / MiB:.1f} MiB"
