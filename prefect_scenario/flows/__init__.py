"""Prefect flows of prefect-scenario, one module per flow family.

* ``video-to-layers`` (:func:`video_to_layers`): split a clip into transparent layers.
* ``aleph-edit`` (:func:`aleph_edit`): rewrite the look of a clip from a prompt (Runway Aleph 2).
* ``video-to-layers-batch`` / ``aleph-edit-batch`` (:mod:`prefect_scenario.flows.batch`): either model
  over many clips, under a global concurrency limit and a budget.

Both return a :class:`ScenarioRunResult`; ``result.to_manifest()`` is what the CLI writes as
``manifest.json``.
"""

from prefect_scenario.flows.aleph import aleph_edit
from prefect_scenario.flows.batch import BatchResult, ClipResult, aleph_edit_batch, video_to_layers_batch
from prefect_scenario.flows.layers import video_to_layers
from prefect_scenario.flows.result import PhaseTimings, ScenarioRunResult

__all__ = [
    "BatchResult",
    "ClipResult",
    "PhaseTimings",
    "ScenarioRunResult",
    "aleph_edit",
    "aleph_edit_batch",
    "video_to_layers",
    "video_to_layers_batch",
]
