"""Prefect flows of prefect-scenario, one module per flow family.

* ``video-to-layers`` (:func:`video_to_layers`): split a clip into transparent layers.
* ``aleph-edit`` (:func:`aleph_edit`): rewrite the look of a clip from a prompt (Runway Aleph 2).

Both return a :class:`ScenarioRunResult`; ``result.to_manifest()`` is what the CLI writes as
``manifest.json``.
"""

from prefect_scenario.flows.aleph import aleph_edit
from prefect_scenario.flows.layers import video_to_layers
from prefect_scenario.flows.result import PhaseTimings, ScenarioRunResult

__all__ = ["PhaseTimings", "ScenarioRunResult", "aleph_edit", "video_to_layers"]
