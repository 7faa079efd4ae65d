"""``GET /v1/models/{modelId}`` for the two models the emulator serves."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse

from prefect_scenario.emulator.api.auth import require_auth
from prefect_scenario.emulator.api.errors import not_found
from prefect_scenario.emulator.service import catalog

router = APIRouter(dependencies=[Depends(require_auth)])


@router.get("/models/{modelId}")
async def get_model(model_id: Annotated[str, Path(alias="modelId")]) -> JSONResponse:
    """The model and its input descriptors."""
    model = catalog.model_wire(model_id)
    if model is None:
        raise not_found(f"Model {model_id} not found")
    return JSONResponse({"model": model})
