"""The emulator as the benchmarks run it: ``python -m bench._emulator --port N ...``.

It is the product's emulator (``create_app(state)`` served by uvicorn), with two bench-only
additions that use emulator internals and exist nowhere else:

* ``POST /_bench/assets {"path", "mime_type"}`` registers a local file as an asset (probed for real,
  like an import) so the memory benchmark can download a 1 GiB file without first making the
  emulator generate one.
* ``--fake-model copy``: Video to Layers' fake model runs for real once, then every later job gets a
  copy of those layer files. The real fake model encodes VP9 for each job, which on a 2-core machine
  would compete for CPU with the very process being measured; job timing (``job_seconds``), the API
  and the files served are unchanged.
"""

from __future__ import annotations

import argparse
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from prefect_scenario.emulator import EmulatorConfig, EmulatorState, create_app
from prefect_scenario.emulator.service import fakes as emulator_fakes
from prefect_scenario.emulator.service.media import describe_video
from prefect_scenario.emulator.service.records import AssetRecord
from prefect_scenario.models import VIDEO_LAYERS_MODEL_ID


class CopyingLayersModel:
    """Video to Layers' fake model, run for real on the first job, then copied."""

    def __init__(self, directory: Path) -> None:
        self._lock = threading.Lock()
        self._template: dict[int, list[emulator_fakes.FakeOutput]] = {}
        self._real = emulator_fakes.FAKE_MODELS[VIDEO_LAYERS_MODEL_ID]
        # Outside the emulator's storage: a reset of the emulator must not delete the templates.
        self._directory = directory

    def __call__(self, order: emulator_fakes.WorkOrder) -> list[emulator_fakes.FakeOutput]:
        layers = int(order.body.get("maxLayers") or 6)
        with self._lock:
            template = self._template.get(layers)
            if template is None:
                made = self._real(order)
                keep = self._directory / f"layers-{layers}"
                keep.mkdir(parents=True, exist_ok=True)
                template = []
                for output in made:
                    kept = keep / output.path.name
                    shutil.copyfile(output.path, kept)
                    template.append(
                        emulator_fakes.FakeOutput(
                            path=kept, mime_type=output.mime_type, output_index=output.output_index
                        )
                    )
                self._template[layers] = template
                return made
        order.out_dir.mkdir(parents=True, exist_ok=True)
        outputs = []
        for output in template:
            target = order.out_dir / output.path.name
            shutil.copyfile(output.path, target)
            outputs.append(
                emulator_fakes.FakeOutput(
                    path=target, mime_type=output.mime_type, output_index=output.output_index
                )
            )
        return outputs


def build(args: argparse.Namespace) -> Any:
    config = EmulatorConfig(
        job_seconds=args.job_seconds,
        concurrency_ceiling=args.concurrency_ceiling,
        max_workers=args.max_workers,
        # Long enough that a slow 1 GiB download never sees its URL expire mid-way.
        asset_url_ttl_seconds=3600,
    )
    state = EmulatorState(config, storage_dir=args.storage_dir / "state")
    if args.fake_model == "copy":
        emulator_fakes.FAKE_MODELS[VIDEO_LAYERS_MODEL_ID] = CopyingLayersModel(args.storage_dir / "templates")
    app = create_app(state)

    @app.post("/_bench/assets", include_in_schema=False)
    async def register_asset(request: Request) -> JSONResponse:
        body = await request.json()
        path = Path(body["path"])
        facts = describe_video(path)
        asset = AssetRecord(
            id=f"asset_bench{uuid.uuid4().hex[:20]}",
            path=path,
            mime_type=str(body.get("mime_type") or facts.mime_type),
            kind="video",
            source="uploaded-video",
            properties=facts.properties,
            created_at=state.clock.now(),
            name=path.name,
            output_index=0,
        )
        state.add_asset(asset)
        return JSONResponse({"id": asset.id, "size": facts.properties["size"]})

    return state, app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--job-seconds", type=float, default=2.0)
    parser.add_argument("--concurrency-ceiling", type=int, default=None)
    parser.add_argument("--max-workers", type=int, default=2)
    parser.add_argument("--fake-model", choices=("real", "copy"), default="copy")
    parser.add_argument("--storage-dir", type=Path, required=True)
    args = parser.parse_args()
    import uvicorn

    state, app = build(args)
    with state:
        uvicorn.run(
            app,
            host="127.0.0.1",
            port=args.port,
            http="h11",
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )


if __name__ == "__main__":
    main()
