"""Screenshots of what a Prefect user sees of prefect-scenario, in a real browser.

A documented manual check (issue 14), not a test: it needs Debian's Chromium
(``apt-get install chromium``) and Playwright (``pip install playwright``; the Python package
drives the system's Chromium, nothing is downloaded). Run from the repository's root:

    .venv/bin/python docs/screenshots/take_screenshots.py

It starts, in a scratch folder, the Scenario emulator and a real ``prefect server start`` (UI
included), registers the blocks, saves a credentials block pointing at the emulator, creates a
deployment of ``video-to-layers`` and one of ``aleph-edit``, starts moto's S3 server with a saved
``S3Bucket`` block, runs the layers flow once on a sample clip with its outputs in that bucket, and
writes PNGs of the block's create form, both Run forms, and the run's summary and outputs
artifacts (their locations are presigned links) beside this file. Everything it started is
stopped at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1440, "height": 1800}
# Without these, Chromium keeps calling out to Google's hosts, which this machine cannot reach.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(api_url: str, server: subprocess.Popen[bytes], seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"prefect server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("prefect server did not answer /health in time")


async def _prepare(scratch: Path, moto_url: str) -> dict[str, str]:
    """Blocks, deployments and one finished flow run; returns the ids the pages need.

    The run reads its clip from the local disk and stores its layers in a bucket on moto's S3
    server, named in the flow's arguments as a user names a saved block in the Run form.
    """
    import boto3
    from prefect.client.orchestration import get_client
    from prefect_aws import AwsCredentials, S3Bucket
    from pydantic import SecretStr

    from prefect_scenario import ScenarioCredentials
    from prefect_scenario.flows import aleph_edit, video_to_layers
    from prefect_scenario.video.samples import make_sample_clip

    await ScenarioCredentials(
        api_key=SecretStr("screenshot-key"),
        api_secret=SecretStr("screenshot-secret"),
        base_url=os.environ["SCENARIO_BASE_URL"],
    ).save("emulator", overwrite=True)
    deployment = await video_to_layers.to_deployment(name="layers")
    deployment_id = await deployment.apply()
    aleph_deployment_id = await (await aleph_edit.to_deployment(name="aleph")).apply()
    keys = {"aws_access_key_id": "screenshot-key-id", "aws_secret_access_key": "screenshot-secret"}
    boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", **keys).create_bucket(Bucket="renders")
    aws = AwsCredentials(region_name="us-east-1", aws_client_parameters={"endpoint_url": moto_url}, **keys)
    await S3Bucket(bucket_name="renders", credentials=aws).save("renders", overwrite=True)
    clip = scratch / "dancers.mp4"
    make_sample_clip(clip, seconds=3.0, moving_objects=2)
    await video_to_layers(
        str(clip),
        "each moving object apart from the background",
        max_layers=3,
        credentials="emulator",
        destination="layers",
        destination_storage="s3-bucket/renders",
    )
    async with get_client() as client:
        artifacts = await client.read_artifacts()
    summary = next(a for a in artifacts if (a.key or "").endswith("-summary"))
    outputs = next(a for a in artifacts if (a.key or "").endswith("-outputs"))
    return {
        "deployment": str(deployment_id),
        "aleph_deployment": str(aleph_deployment_id),
        "artifact": str(summary.id),
        "outputs_artifact": str(outputs.id),
    }


async def _runs_submitted_from_the_form(deployment_id: str) -> list[dict[str, object]]:
    """The parameters of the runs the Run form created (the server validated them)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    async with get_client() as client:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[UUID(deployment_id)]))
        )
    return [run.parameters for run in runs]


def _shot_after(page: Any, url_pattern: str, name: str) -> Path:
    """A screenshot of the page the browser lands on after a submit (``url_pattern``)."""
    page.wait_for_url(url_pattern, timeout=15_000)
    page.wait_for_timeout(2000)  # the UI renders after its API calls settle
    target = HERE / name
    page.screenshot(path=str(target), full_page=True)
    return target


def _shoot(ui_url: str, ids: dict[str, str]) -> list[Path]:
    from playwright.sync_api import sync_playwright

    pages = {
        "block-form.png": f"{ui_url}/blocks/catalog/scenario-credentials/create",
        "run-form-layers.png": f"{ui_url}/deployments/deployment/{ids['deployment']}/run",
        "run-form-aleph.png": f"{ui_url}/deployments/deployment/{ids['aleph_deployment']}/run",
        "layers-summary-artifact.png": f"{ui_url}/artifacts/artifact/{ids['artifact']}",
        "layers-outputs-artifact.png": f"{ui_url}/artifacts/artifact/{ids['outputs_artifact']}",
    }
    written: list[Path] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        for name, url in pages.items():
            page.goto(url, wait_until="networkidle")
            page.wait_for_timeout(1500)  # the UI renders after its API calls settle
            target = HERE / name
            page.screenshot(path=str(target), full_page=True)
            written.append(target)
        # The form used as a user would: key and secret only, then Create; the block's page follows.
        page.goto(pages["block-form.png"], wait_until="networkidle")
        page.locator("input").first.fill("from-the-form")  # the block's name
        fields = page.locator("textarea")  # the UI draws the block's fields as text areas, in order
        fields.nth(0).fill("form-key")
        fields.nth(1).fill("form-secret")
        page.get_by_role("button", name="Create").click()
        written.append(_shot_after(page, "**/blocks/block/**", "block-created.png"))
        # The Run form used as a user would: the two required fields typed, every optional one left
        # empty, Submit; the deployment's Runs tab follows, with the new run in it (the server took
        # the parameters as they were; nothing runs it: no worker here).
        page.goto(pages["run-form-layers.png"], wait_until="networkidle")
        page.wait_for_timeout(1500)
        form = page.locator("textarea")
        form.nth(0).fill("/data/incoming/take-42.mp4")  # video
        form.nth(1).fill("each dancer apart from the stage")  # separation_instruction
        page.get_by_role("button", name="Submit").click()
        written.append(_shot_after(page, "**tab=Runs**", "run-form-submitted.png"))
        browser.close()
    return written


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="prefect-scenario-shots-"))
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    os.environ.update(
        {
            "PREFECT_HOME": str(scratch / "prefect-home"),
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    moto_port = _free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_healthy(api_url, server)
        subprocess.run(
            [sys.executable, "-m", "prefect", "block", "register", "-m", "prefect_scenario"], check=True
        )
        from prefect_scenario.testing import emulate_scenario

        with emulate_scenario(job_seconds=1.0):
            ids = asyncio.run(_prepare(scratch, f"http://127.0.0.1:{moto_port}"))
        for path in _shoot(f"http://127.0.0.1:{port}", ids):
            print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
        submitted = asyncio.run(_runs_submitted_from_the_form(ids["deployment"]))
        print(f"runs created from the layers Run form: {submitted}")
        if len(submitted) != 1:
            raise SystemExit("the Run form did not create exactly one flow run")
    finally:
        for process in (server, moto):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
