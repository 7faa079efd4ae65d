"""Smoke test of ``bench/``: every module imports, and the polling benchmark runs in simulated time.

Not a benchmark and no timing assertion: the figures themselves come from ``make bench``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

# ``bench`` is a directory of the repository, not part of the installed package: make it importable
# however pytest is started (``make test`` runs the pytest script, which does not add the cwd).
REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BENCH_MODULES = [
    "bench",
    "bench.__main__",
    "bench._batch",
    "bench._common",
    "bench.crash",
    "bench.fleet",
    "bench._emulator",
    "bench._services",
    "bench._whatif",
    "bench._worker",
    "bench.memory",
    "bench.overhead",
    "bench.polling",
    "bench.profiling",
    "bench.report",
    "bench.scale",
    "bench.slots",
    "bench.suspend",
    "bench.watcher",
]


@pytest.mark.parametrize("name", BENCH_MODULES)
def test_bench_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_polling_benchmark_runs_the_production_policy_in_simulated_time() -> None:
    from bench import polling, report

    section = polling.run(runs=2)

    table = section["table"]
    assert set(table) == {"adaptive", "fixed 0.5 s", "fixed 6 s", "fixed 10 s"}
    for row in table.values():
        assert set(row) == {"30", "120", "360"}
        for cell in row.values():
            assert cell["runs"] == 2
            assert cell["requests_median"] >= 1
            # The end is seen at or after it happens, never before.
            assert cell["lateness_seconds_max"] >= 0
    # A fixed 0.5 s poller makes about one request per half second of a 6-minute job.
    assert table["fixed 0.5 s"]["360"]["requests_median"] > 500
    assert isinstance(section["targets"]["requests_6_min"]["met"], bool)
    markdown = report.render({"machine": {}, "benchmarks": {"polling": section}})
    assert "## Polling" in markdown
    assert "fixed 6 s (Runway)" in markdown


def test_a_fixed_interval_policy_always_sleeps_its_interval() -> None:
    from bench.polling import fixed_policy
    from prefect_scenario.models import Job

    job = Job.model_validate(
        {"jobId": "job_1", "jobType": "custom", "status": "queued", "createdAt": "x", "updatedAt": "x"}
    )
    policy = fixed_policy(6.0)
    assert {policy.next_delay(elapsed, job) for elapsed in (0.0, 10.0, 300.0)} == {6.0}


def test_profile_and_dump_summaries_read_py_spy_output(tmp_path: Path) -> None:
    from bench._common import summarize_dump
    from bench.profiling import summarize

    collapsed = tmp_path / "profile.txt"
    collapsed.write_text(
        "main (bench/_worker.py:10);create_default_context (ssl.py:770) 30\n"
        "main (bench/_worker.py:10);select (selectors.py:468) 10\n"
    )
    summary = summarize(collapsed)
    assert summary["samples"] == 40
    assert summary["self"][0]["function"].startswith("create_default_context")
    dump = (
        'Thread 1 (idle): "MainThread"\n    select (selectors.py:468)\n'
        'Thread 2 (idle): "asyncio_0"\n    _patch_labels_sync (prefect_scenario/tasks/_runtime.py:86)\n'
    )
    threads = summarize_dump(dump)
    assert threads["threads"] == 2
    assert threads["default_executor_threads_by_frame"] == {
        "_patch_labels_sync (prefect_scenario/tasks/_runtime.py:86)": 1
    }


def test_the_cli_lists_the_benchmarks_and_runs_crash_and_suspend_only_when_named() -> None:
    from bench.__main__ import BENCHMARKS, ONLY_WHEN_NAMED, OWN_SERVERS, _parser

    assert BENCHMARKS == ("polling", "overhead", "memory", "scale", "watcher", "fleet", "suspend", "crash")
    assert {"crash", "suspend"} == ONLY_WHEN_NAMED
    assert {"fleet", "suspend"} == OWN_SERVERS
    args = _parser().parse_args(["polling", "--quick"])
    assert args.benchmarks == ["polling"]
    assert args.quick
    assert _parser().parse_args([]).benchmarks == []
    args = _parser().parse_args(["suspend", "--suspend-clips", "50", "200", "--suspend-interval", "5"])
    assert args.suspend_clips == [50, 200]
    assert args.suspend_interval == 5.0


def test_the_suspend_report_renders_measured_and_skipped_rows() -> None:
    from bench.report import render
    from bench.suspend import SKIPPED, _compare

    def measured(mode: str, clips: int, process_seconds: float) -> dict[str, object]:
        return {
            "mode": mode,
            "clips": clips,
            "state": "COMPLETED",
            "wall_seconds": 30.0,
            "jobs_created": clips,
            "max_jobs_in_flight": 3,
            "duplicate_jobs": 0,
            "clips_with_outputs": clips,
            "outputs_stored": 3 * clips,
            "all_outputs_stored": True,
            "suspends": 0,
            "resumes": 0,
            "api_requests": 19 * clips,
            "api_requests_per_job": 19.0,
            "api_requests_by_route": {"GET /v1/jobs/{jobId}": 10 * clips},
            "processes": {"process_seconds": process_seconds, "flow_processes_started": 1},
            "per_clip": {"wall_seconds": 30.0 / clips, "process_seconds": process_seconds / clips},
        }

    rows = [
        measured("inline", 6, 24.0),
        {"mode": "suspend", "clips": 6, "skipped": SKIPPED},
        {"mode": "suspend", "clips": 12, "skipped": SKIPPED},
        measured("inline", 12, 48.0),
    ]
    section = {
        "sizes": [6, 12],
        "job_seconds": 5.0,
        "ceiling": 3,
        "sweep_seconds": 2.0,
        "max_layers": 3,
        "database": "sqlite",
        "sample_seconds": 0.5,
        "rows": rows,
        "comparison": _compare(rows[::3], (6, 12)),
        "left_running": [],
    }
    assert section["comparison"]["large_over_small"]["inline"]["process_seconds"] == 1.0
    markdown = render({"machine": {}, "benchmarks": {"suspend": section}})
    assert "## Suspend" in markdown
    assert f"| suspend, 12 | skipped: {SKIPPED} |" in markdown
    assert (
        "| flow-run process-seconds held | 4.000 | 4.000 | – | – | ×1.00 | – | 4.000 / – | – | – |"
        in markdown
    )
    # Smaller batches first, inline before suspend, whatever order they ran in.
    assert markdown.index("| inline, 12 |") < markdown.index("| suspend, 12 |")
    assert "suspend on sqlite" in markdown


def test_whatif_accepts_only_the_trace_option() -> None:
    from bench import _whatif

    # The bench-only fixes are in the product now: their old names are refused, before any patching.
    for name in ("labels", "ssl", "stream_parts", "dev_labels_async"):
        with pytest.raises(ValueError, match="known: trace"):
            _whatif.apply([name])


def test_the_report_renders_the_traced_run_and_copes_without_it() -> None:
    from bench.report import _trace

    assert _trace(None) == []
    lines = _trace(
        {
            "label": "traced run (diagnostic, same product, timings of awaits)",
            "wall_seconds": 80.2,
            "cpu_seconds": 14.0,
            "errors": 0,
            "timings": {
                "job_slot acquire": {"calls": 50, "median": 1.2, "max": 9.0, "sum": 70.1},
                "prefect GET /flow_runs/{id}": {"calls": 120, "median": 0.02, "max": 0.3, "sum": 4.0},
                "client.jobs.wait": {"calls": 50, "median": 3.0, "max": 4.0, "sum": 150.0},
            },
            "prefect_requests": {"GET /flow_runs/{id}": 120, "POST /task_runs/": 200},
            "events": {"prefect.task-run.Running": 200, "prefect.flow-run.Running": 1},
        }
    )
    text = "\n".join(lines)
    assert "| job_slot acquire | 50 | 1.200 | 9.000 | 70.1 |" in text
    assert "| upload_video call | – | – | – | – |" in text
    assert "prefect `GET /flow_runs/{id}` | 120 |" in text
    assert "client.jobs.wait" not in text
    assert "320 in all" in text
    assert "201 in all" in text
