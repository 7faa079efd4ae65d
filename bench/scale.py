"""Scale: 1,000 jobs in flight from one flow run.

``video_to_layers_batch`` over 1,000 distinct tiny clips, emulator job time 60 s, the emulator's
concurrency ceiling off and the flow's global concurrency limit off (``concurrency_limit_name=None``,
the documented setting when the team has no ceiling: every job may be in flight at once; the cost of
the limit itself is measured by the overhead benchmark). Reported for the flow process: errors,
wall time, CPU seconds, peak RSS, and the load it puts on the Scenario API (requests in all, per
second on average, and per 2-second sample). The baseline is the bare SDK script on the same clips in
the same session, polling every 5 s (Scenario's docs suggest "every 3-5 s").

A flow run has a deadline (``--scale-deadline``, 8 min by default): one that has not finished by
then is stopped and reported as not completing, with what it had done and ``py-spy dump``s of its
threads.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench._batch import make_clips, run_side
from bench._common import ratio
from bench._services import Service, emulator

JOB_SECONDS = 60.0
MAX_LAYERS = 2
SDK_POLL_SECONDS = 5.0
DEADLINE_SECONDS = 480.0  # completion is the target; the deadline only bounds the bench
KEEP = (
    "timed_out",
    "errors",
    "first_errors",
    "succeeded",
    "outputs",
    "state",
    "message",
    "wall_seconds",
    "cpu_seconds",
    "peak_rss_bytes",
    "rss_before_bytes",
    "api_requests",
    "api_requests_by_route",
    "api_requests_per_second",
    "requests_per_second_median",
    "requests_per_second_peak",
    "series",
    "jobs_created",
    "max_jobs_in_flight",
    "job_polls",
    "job_polls_per_job",
    "emulator_cpu_seconds",
    "prefect_server_cpu_seconds",
    "dump_summaries",
    "log",
)


def _line(name: str, row: dict[str, Any]) -> str:
    end = "STOPPED at the deadline" if row.get("timed_out") else f"errors {row.get('errors')}"
    return (
        f"   {name}: wall {row['wall_seconds']:.1f} s, cpu {row.get('cpu_seconds') or 0:.1f} s, {end}, "
        f"jobs created {row.get('jobs_created')}, outputs {row.get('outputs')}"
    )


def run(
    *,
    prefect: Service,
    log_dir: Path,
    quick: bool = False,
    jobs: int | None = None,
    deadline: float | None = None,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the scale benchmark (one run per variant: it is the longest); returns its report section."""
    jobs = jobs or (20 if quick else 1000)
    job_seconds = 10.0 if quick else JOB_SECONDS
    deadline = deadline or (180.0 if quick else DEADLINE_SECONDS)
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    section: dict[str, Any] = {
        "description": "one batch flow run with every job in flight at once",
        "jobs": jobs,
        "job_seconds": job_seconds,
        "max_layers": MAX_LAYERS,
        "sdk_poll_seconds": SDK_POLL_SECONDS,
        "deadline_seconds": deadline,
        "global_concurrency_limit": None,
        "runs": 1,
    }
    try:
        clips = make_clips(workdir / "clips", jobs, seconds=1.0, width=96, height=64, fps=8)
        common: dict[str, Any] = {
            "max_layers": MAX_LAYERS,
            "concurrency": None,
            "log_dir": log_dir,
            "timeout": deadline,
        }
        with emulator(log_dir=log_dir, job_seconds=job_seconds, fake_model="copy") as emu:
            # Warm-up (not measured): the fake model's one real run.
            run_side("sdk", emulator=emu, prefect=prefect, clips=clips[:1], **common)
            # Always sampled (py-spy --nonblocking, 50 Hz, from outside the process): this run is the
            # one that shows where a large batch spends its time.
            profile = str((profile_dir or log_dir) / "scale-flow.txt")
            flow = run_side(
                "flow",
                emulator=emu,
                prefect=prefect,
                clips=clips,
                sample=True,
                profile=profile,
                dumps_at=(deadline / 3, 2 * deadline / 3),
                **common,
            )
            section["flow"] = {key: flow.get(key) for key in KEEP}
            print(_line("flow", flow), flush=True)
            if Path(profile).exists():
                from bench.profiling import summarize as summarize_profile

                section["profile"] = summarize_profile(Path(profile))
            sdk = run_side(
                "sdk",
                emulator=emu,
                prefect=prefect,
                clips=clips,
                sample=True,
                poll_seconds=SDK_POLL_SECONDS,
                **common,
            )
            section["sdk"] = {key: sdk.get(key) for key in KEEP}
            print(_line("sdk", sdk), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    flow_row = section["flow"]
    base = section["sdk"]
    section["ratios"] = {
        key: ratio(flow_row.get(field), base.get(field))
        for key, field in (
            ("wall", "wall_seconds"),
            ("cpu", "cpu_seconds"),
            ("peak_rss", "peak_rss_bytes"),
            ("api_requests", "api_requests"),
            ("api_requests_per_second", "api_requests_per_second"),
        )
    }
    completed = (
        not flow_row.get("timed_out") and flow_row.get("errors") == 0 and flow_row.get("succeeded") == jobs
    )
    section["targets"] = {
        "no_errors": {
            "target": f"{jobs} jobs in flight from one flow run complete without errors "
            f"(within {deadline:g} s)",
            "errors": flow_row.get("errors"),
            "timed_out": bool(flow_row.get("timed_out")),
            "max_jobs_in_flight": flow_row.get("max_jobs_in_flight"),
            "met": completed,
        }
    }
    return section
