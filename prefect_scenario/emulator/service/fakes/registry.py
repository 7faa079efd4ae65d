"""Which fake runs each model, and what passes between the service and a fake.

:data:`FAKE_MODELS` maps a model id to its fake; a fake takes a :class:`WorkOrder` and returns
:class:`FakeOutput` files, which the runner files as the job's output assets.

* Video to Layers runs :func:`~prefect_scenario.emulator.service.fakes.layers.extract_layers`: one
  VP9-with-alpha WebM (``video/webm``) per layer, back to front by ``outputIndex`` (0 is the
  background). The background counts toward ``maxLayers``: ``maxLayers: 1`` gives the whole clip as
  one opaque layer, ``maxLayers: 4`` at most the background and three object layers. (The API's
  docs leave open whether the background counts; the emulator takes the strict reading, so a
  client never gets more outputs than it asked for.)
* Runway Aleph 2 runs :func:`~prefect_scenario.emulator.service.fakes.restyle.restyle_video`: one
  H.264 MP4 (``video/mp4``) with the source's motion, its look changed by the prompt, the seed (0
  when absent) and the reference images: a keyframe at ``seconds``, or at ``at x clip duration``; a
  prompt image at ``timestampSeconds`` (``positionType: "timestamp"``) or at ``positionPercentage x
  duration``.

Both run in the state's worker threads; they only see plain paths and values (a
:class:`WorkOrder`), never the state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect_scenario.emulator.service.fakes.layers import extract_layers
from prefect_scenario.emulator.service.fakes.restyle import StyleReference, restyle_video
from prefect_scenario.emulator.service.records import CheckedBody
from prefect_scenario.models import ALEPH_MODEL_ID, LAYERS_DEFAULT_LAYERS, VIDEO_LAYERS_MODEL_ID


@dataclass(frozen=True)
class WorkOrder:
    """Everything a fake model needs: the checked request and its files, resolved under the state's lock."""

    request: CheckedBody
    video_path: Path
    out_dir: Path
    image_paths: dict[str, Path] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        return self.request.model_id

    @property
    def body(self) -> dict[str, Any]:
        return self.request.body


@dataclass(frozen=True)
class FakeOutput:
    """One file a fake model produced."""

    path: Path
    mime_type: str
    output_index: int


def run_video_layers(order: WorkOrder) -> list[FakeOutput]:
    """Split the clip into layers; the background counts toward ``maxLayers``."""
    max_layers = int(order.body.get("maxLayers") or LAYERS_DEFAULT_LAYERS)
    layers = extract_layers(
        order.video_path,
        order.out_dir,
        max_layers=max_layers,
        instruction=str(order.body.get("separationInstruction", "")),
    )
    ordered = sorted(layers, key=lambda layer: layer.index)
    return [
        FakeOutput(path=layer.path, mime_type="video/webm", output_index=layer.index) for layer in ordered
    ]


def style_references(order: WorkOrder) -> list[StyleReference]:
    """The reference images of an Aleph body, each pinned to a time in seconds."""
    duration = order.request.video_seconds
    references: list[StyleReference] = []
    for keyframe in order.body.get("keyframes") or []:
        seconds = keyframe.get("seconds")
        at = float(seconds) if seconds is not None else float(keyframe.get("at") or 0.0) * duration
        references.append(StyleReference(image=order.image_paths[keyframe["uri"]], seconds=at))
    for image in order.body.get("promptImage") or []:
        if image.get("positionType", "position") == "timestamp":
            at = float(image.get("timestampSeconds") or 0.0)
        else:
            at = float(image.get("positionPercentage") or 0.0) * duration
        references.append(StyleReference(image=order.image_paths[image["uri"]], seconds=at))
    return references


def run_aleph(order: WorkOrder) -> list[FakeOutput]:
    """Restyle the clip from the prompt, the seed and the reference images."""
    out = order.out_dir / "aleph.mp4"
    order.out_dir.mkdir(parents=True, exist_ok=True)
    restyle_video(
        order.video_path,
        out,
        prompt=str(order.body.get("prompt", "")),
        seed=int(order.body.get("seed") or 0),
        references=style_references(order),
    )
    return [FakeOutput(path=out, mime_type="video/mp4", output_index=0)]


FAKE_MODELS: dict[str, Callable[[WorkOrder], list[FakeOutput]]] = {
    VIDEO_LAYERS_MODEL_ID: run_video_layers,
    ALEPH_MODEL_ID: run_aleph,
}


def referenced_images(body: dict[str, Any]) -> list[str]:
    """The image asset ids an Aleph body references (keyframes and prompt images)."""
    items = list(body.get("keyframes") or []) + list(body.get("promptImage") or [])
    return [str(item["uri"]) for item in items if isinstance(item, dict) and "uri" in item]
