"""The fake models: real video work on the real file, so their outputs can be looked at.

* :mod:`.registry` — :data:`FAKE_MODELS` (model id → fake), the :class:`WorkOrder` a fake gets and
  the :class:`FakeOutput` files it returns;
* :mod:`.layers` — "Video to Layers": a median background and motion-tracked objects, each a VP9
  WebM with alpha;
* :mod:`.masks` — the run-length masks and the object tracker the layer extractor works with;
* :mod:`.restyle` — "Runway Aleph 2": a deterministic colour restyle driven by the prompt and the
  seed, pulled toward reference images.

They read and write media with :mod:`prefect_scenario.video`'s public primitives
(:mod:`prefect_scenario.video.media_io`) and never see the state. They are the emulator's only:
the product compares and previews layers with :mod:`prefect_scenario.video`, whatever made them.
"""

from __future__ import annotations

from prefect_scenario.emulator.service.fakes.layers import LayerFile, extract_layers
from prefect_scenario.emulator.service.fakes.registry import (
    FAKE_MODELS,
    FakeOutput,
    WorkOrder,
    referenced_images,
    run_aleph,
    run_video_layers,
    style_references,
)
from prefect_scenario.emulator.service.fakes.restyle import StyleReference, restyle_video

__all__ = [
    "FAKE_MODELS",
    "FakeOutput",
    "LayerFile",
    "StyleReference",
    "WorkOrder",
    "extract_layers",
    "referenced_images",
    "restyle_video",
    "run_aleph",
    "run_video_layers",
    "style_references",
]
