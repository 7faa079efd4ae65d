"""``/models``: model descriptors (inputs, limits)."""

from __future__ import annotations

from prefect_scenario.models import ModelEnvelope, ModelInfo

from ._http import HttpCore, parse


class ModelsAPI:
    """Scenario models: ``client.models``."""

    def __init__(self, http: HttpCore) -> None:
        self._http = http

    async def get(self, model_id: str) -> ModelInfo:
        """The model's descriptor, with its ``inputs`` and their limits."""
        response = await self._http.send_api("GET", "models", model_id)
        return parse(ModelEnvelope, response).model
