"""What a generation costs on the emulator, in creative units (CU).

The real prices are not published per second; these formulas are the emulator's own, chosen to
behave like the API's (the cost follows the source clip, ``video`` being ``costImpact: true``, and
more layers cost more) while staying easy to predict in tests:

* Runway Aleph 2: ``10 CU x ceil(clip seconds)`` (a 4 s clip costs 40 CU).
* Video to Layers: ``ceil(clip seconds) x (2 + maxLayers)`` (a 4 s clip at the default 6 layers
  costs 32 CU; at 2 layers, 16 CU).

No discount is ever applied, and the whole cost is reported under ``custom-generation``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prefect_scenario.emulator.service.records import CheckedBody
from prefect_scenario.models import ALEPH_MODEL_ID, LAYERS_DEFAULT_LAYERS, CostEstimate

ALEPH_CU_PER_SECOND = 10
LAYERS_BASE_CU_PER_SECOND = 2


@dataclass(frozen=True)
class Price:
    """The cost of one generation."""

    cost: float
    discount: float = 0.0

    def estimate(self) -> CostEstimate:
        """The 269 body of a dry run."""
        return CostEstimate(
            creative_units_cost=self.cost,
            creative_units_discount=self.discount,
            cost_details={"custom-generation": self.cost},
        )


def price(checked: CheckedBody) -> Price:
    """The price of a validated generation body."""
    # Rounded to a tenth first, so a 4.04 s encode of a "4 s" clip is billed as 4 s.
    seconds = max(1, math.ceil(round(checked.video_seconds, 1)))
    if checked.model_id == ALEPH_MODEL_ID:
        return Price(cost=float(ALEPH_CU_PER_SECOND * seconds))
    layers = int(checked.body.get("maxLayers") or LAYERS_DEFAULT_LAYERS)
    return Price(cost=float(seconds * (LAYERS_BASE_CU_PER_SECOND + layers)))
