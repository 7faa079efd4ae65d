"""``make demo``: both models on a sample clip, through the CLI, against the embedded emulator.

What it does, in about a minute:

1. serves the Scenario emulator on a free loopback port (3 s jobs);
2. makes a 4 s sample clip with two moving objects, and a reference image;
3. starts Prefect's ephemeral server once, on the SQLite database of ``./.prefect-demo`` (the
   demo's ``PREFECT_HOME``: the run history stays there, and ``prefect server start`` with the
   same home shows it later);
4. runs ``prefect-scenario layers`` and ``prefect-scenario edit`` on the clip, each as its own
   process (exactly what a user types), with the SDK's environment variables pointing at the
   emulator and ``PREFECT_API_URL`` at that server (one server start for both runs, not one each);
5. prints where the outputs, the manifests and the previews are, and how to open the runs in the
   Prefect UI.

Environment overrides (used by the tests): ``PREFECT_SCENARIO_DEMO_OUT`` (default ``out/demo``),
``PREFECT_SCENARIO_DEMO_HOME`` (default ``.prefect-demo``), ``PREFECT_SCENARIO_DEMO_JOB_SECONDS``
(default 3). Exits non-zero when anything fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ENV_OUT = "PREFECT_SCENARIO_DEMO_OUT"
ENV_HOME = "PREFECT_SCENARIO_DEMO_HOME"
ENV_JOB_SECONDS = "PREFECT_SCENARIO_DEMO_JOB_SECONDS"
# A CLI run should take seconds; this only stops a hung run from hanging `make demo` forever.
RUN_TIMEOUT_SECONDS = 300
# Demo credentials: the emulator accepts any key; real ones never belong in a demo.
DEMO_API_KEY = "demo-key"
DEMO_API_SECRET = "demo-secret"


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _prefect_env(home: Path) -> dict[str, str]:
    """Prefect settings of the demo: its own home, no server of the user's, no telemetry."""
    return {
        "PREFECT_HOME": str(home),
        # Two busy cores and a new SQLite database (migrations) can take a while.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }


def _cli_env(base_url: str, home: Path, api_url: str) -> dict[str, str]:
    """The environment of a CLI run: the emulator's URL and demo keys, Prefect on the demo server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SCENARIO_"))}
    env.update(_prefect_env(home))
    env.update(
        {
            "PREFECT_API_URL": api_url,
            "SCENARIO_SDK_API_KEY": DEMO_API_KEY,
            "SCENARIO_SDK_API_SECRET": DEMO_API_SECRET,
            "SCENARIO_BASE_URL": base_url,
        }
    )
    # The CLI runs as `python -m prefect_scenario.cli`: make this very package importable there,
    # installed or not (a checkout run from elsewhere than its root).
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    return env


def _run_cli(args: list[str], env: dict[str, str]) -> None:
    """Run ``python -m prefect_scenario.cli ARGS``, streaming its output; raise when it fails."""
    command = [sys.executable, "-m", "prefect_scenario.cli", *args]
    _say("$ prefect-scenario " + " ".join(_quote(a) for a in args))
    started = time.monotonic()
    completed = subprocess.run(command, env=env, timeout=RUN_TIMEOUT_SECONDS, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"prefect-scenario {args[0]} exited with {completed.returncode}")
    _say(f"done in {time.monotonic() - started:.1f} s")


def _quote(arg: str) -> str:
    return f'"{arg}"' if " " in arg else arg


def _read_manifest(directory: Path) -> dict[str, Any]:
    manifest = directory / "manifest.json"
    if not manifest.is_file():
        raise RuntimeError(f"{manifest} was not written")
    data: dict[str, Any] = json.loads(manifest.read_text())
    for entry in data["outputs"]:
        if not (directory / entry["path"]).is_file():
            raise RuntimeError(f"{manifest} lists {entry['path']}, which is missing")
    return data


def _print_summary(out: Path, home: Path, manifests: dict[str, dict[str, Any]]) -> None:
    print()
    print("Scenario demo finished.")
    for name, manifest in manifests.items():
        directory = out / name
        print(
            f"  {name}: job {manifest['job_id']} ({manifest['model_id']}), "
            f"{len(manifest['outputs'])} output(s), {manifest['creative_units_cost']} creative units"
        )
        for entry in manifest["outputs"]:
            print(f"    {directory / entry['path']}  ({entry['mime_type']}, {entry['size']} bytes)")
        print(f"    manifest: {directory / 'manifest.json'}")
        if manifest.get("preview"):
            print(f"    preview:  {directory / manifest['preview']}")
    print()
    print("Run history (flow runs, task runs, logs, artifacts with the previews, events); the")
    print("'View at' links above pointed at the demo's temporary server, now stopped. Reopen with:")
    print(f"  PREFECT_HOME={home} .venv/bin/prefect server start")
    print("  then open http://127.0.0.1:4200")


def run_demo(out: Path, home: Path, job_seconds: float) -> int:
    """Run the demo; returns the process exit code.

    Prefect's settings are read from the environment on first import, so :func:`main` sets
    ``PREFECT_HOME`` before this runs.
    """
    from prefect.server.api.server import SubprocessASGIServer

    from prefect_scenario import video
    from prefect_scenario.emulator import EmulatorConfig, EmulatorState, serve_in_thread

    started = time.monotonic()
    media = out / "media"
    media.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    clip = media / "clip.mp4"
    reference = media / "reference.png"
    _say(f"making a 4 s sample clip with two moving objects: {clip}")
    video.make_sample_clip(clip, seconds=4.0, moving_objects=2)
    video.make_sample_image(reference, color=(40, 90, 220))

    config = EmulatorConfig(job_seconds=job_seconds, queue_seconds=min(0.5, job_seconds / 4))
    _say(f"starting Prefect's server on {home / 'prefect.db'}")
    server = SubprocessASGIServer()
    with EmulatorState(config) as state, serve_in_thread(state) as emulator, server:
        _say(f"Prefect API at {server.api_url}")
        _say(f"Scenario emulator at {emulator.base_url} ({job_seconds:g} s jobs)")
        env = _cli_env(emulator.base_url, home, server.api_url)
        _run_cli(
            [
                "layers",
                str(clip),
                "--instruction",
                "each moving object apart from the background",
                "--max-layers",
                "3",
                "--out",
                str(out / "layers"),
            ],
            env,
        )
        _run_cli(
            [
                "edit",
                str(clip),
                "--prompt",
                "turn the scene into a blue watercolour painting",
                "--keyframe",
                f"{reference}@1.0",
                "--seed",
                "42",
                "--out",
                str(out / "edit"),
            ],
            env,
        )
    manifests = {name: _read_manifest(out / name) for name in ("layers", "edit")}
    _print_summary(out, home, manifests)
    _say(f"total {time.monotonic() - started:.0f} s")
    return 0


def main() -> int:
    """Entry point of ``python -m prefect_scenario.demo``."""
    out = Path(os.environ.get(ENV_OUT) or "out/demo").expanduser().resolve()
    home = Path(os.environ.get(ENV_HOME) or ".prefect-demo").expanduser().resolve()
    job_seconds = float(os.environ.get(ENV_JOB_SECONDS) or 3.0)
    # Before anything imports Prefect: the demo's runs go to the demo's home, never to a server
    # or profile of the user's.
    for name in ("PREFECT_API_URL", "PREFECT_PROFILE"):
        os.environ.pop(name, None)
    os.environ.update(_prefect_env(home))
    try:
        return run_demo(out, home, job_seconds)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"error: the demo failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
