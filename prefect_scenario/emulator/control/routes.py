"""The control plane under ``/_emulator`` (no auth, not part of the API): stats, reset, settings,
clock, faults, and webhook delivery faults (``/_emulator/webhooks/...``). Tests and demos drive
the emulator through it; see the package README.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from prefect_scenario.emulator.api.deps import get_state
from prefect_scenario.emulator.api.errors import bad_request
from prefect_scenario.emulator.api.paths import CONTROL_PREFIX
from prefect_scenario.emulator.service.clock import iso_utc
from prefect_scenario.emulator.service.faults import FaultRule
from prefect_scenario.emulator.service.webhooks.faults import WebhookFaultRule

router = APIRouter(prefix=CONTROL_PREFIX, include_in_schema=False)

_RuleT = TypeVar("_RuleT", FaultRule, WebhookFaultRule)


async def _json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return await request.json()
    except ValueError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}") from exc


async def _rules_from(request: Request, model: type[_RuleT], what: str) -> list[_RuleT]:
    """The rules a POST sends, as ``model``: a JSON list of them, or one rule alone."""
    body = await _json(request)
    items = body if isinstance(body, list) else [body]
    try:
        return [model.model_validate(item) for item in items]
    except ValidationError as exc:
        raise bad_request(f"Invalid {what}: {exc}") from exc


def _faults_view(rules: list[FaultRule] | list[WebhookFaultRule]) -> list[dict[str, Any]]:
    return [rule.model_dump(mode="json", exclude_none=True) for rule in rules]


@router.get("/stats")
async def stats(request: Request) -> JSONResponse:
    """Counters: jobs_created, uploads_created, requests per route template, jobs in flight, ..."""
    return JSONResponse(get_state(request).stats())


@router.post("/reset")
async def reset(request: Request) -> JSONResponse:
    """Forget jobs, assets, uploads, webhooks, counters and faults; rewind the clock. Settings stay."""
    get_state(request).reset()
    return JSONResponse({"reset": True})


@router.get("/config")
async def get_config(request: Request) -> JSONResponse:
    """The current settings (credentials only as whether they are fixed)."""
    return JSONResponse(get_state(request).config.public_view())


@router.post("/config")
async def update_config(request: Request) -> JSONResponse:
    """Change some settings, e.g. ``{"job_seconds": 0.5, "concurrency_ceiling": 2}``."""
    changes = await _json(request)
    if not isinstance(changes, dict):
        raise bad_request("Send a JSON object of settings to change")
    try:
        config = get_state(request).configure(**changes)
    except (ValidationError, ValueError) as exc:
        raise bad_request(f"Invalid settings: {exc}") from exc
    return JSONResponse(config.public_view())


def _clock_view(request: Request) -> dict[str, Any]:
    clock = get_state(request).clock
    return {"now": iso_utc(clock.now()), "offset_seconds": clock.offset_seconds}


@router.get("/clock")
async def get_clock(request: Request) -> JSONResponse:
    """The emulator clock."""
    return JSONResponse(_clock_view(request))


@router.post("/clock")
async def advance_clock(request: Request) -> JSONResponse:
    """``{"advance_seconds": N}``: move the clock forward; jobs and URL expiry follow it."""
    body = await _json(request)
    seconds = body.get("advance_seconds") if isinstance(body, dict) else None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise bad_request('Send {"advance_seconds": N} with N >= 0', field="advance_seconds")
    get_state(request).clock.advance(float(seconds))
    return JSONResponse(_clock_view(request))


@router.get("/faults")
async def list_faults(request: Request) -> JSONResponse:
    """The fault rules still pending, with their remaining counts."""
    return JSONResponse(_faults_view(get_state(request).list_faults()))


@router.post("/faults")
async def add_faults(request: Request) -> JSONResponse:
    """Append fault rules: a JSON list of ``{"route", "kind", "count", ...}`` (or one rule)."""
    rules = await _rules_from(request, FaultRule, "fault rule")
    return JSONResponse(_faults_view(get_state(request).add_faults(rules)))


@router.delete("/faults")
async def clear_faults(request: Request) -> JSONResponse:
    """Drop every pending fault rule."""
    get_state(request).clear_faults()
    return JSONResponse([])


@router.get("/webhooks/faults")
async def list_webhook_faults(request: Request) -> JSONResponse:
    """The delivery fault rules still pending, with their remaining counts."""
    return JSONResponse(_faults_view(get_state(request).webhooks.list_faults()))


@router.post("/webhooks/faults")
async def add_webhook_faults(request: Request) -> JSONResponse:
    """Append delivery fault rules: a JSON list of ``{"kind", "count", "event_type", ...}`` (or one)."""
    rules = await _rules_from(request, WebhookFaultRule, "webhook fault rule")
    if any(rule.id is not None for rule in rules):
        raise bad_request("A webhook fault rule's id is given by the emulator", field="id")
    return JSONResponse(_faults_view(get_state(request).webhooks.add_faults(rules)))


@router.delete("/webhooks/faults")
async def clear_webhook_faults(request: Request) -> JSONResponse:
    """Drop every pending delivery fault rule; deliveries held out of order are released."""
    get_state(request).webhooks.clear_faults()
    return JSONResponse([])


@router.get("/webhooks/deliveries")
async def list_webhook_deliveries(request: Request) -> JSONResponse:
    """Every delivery with the fault it met and the requests really sent (no secrets, no bodies)."""
    return JSONResponse(get_state(request).webhooks.deliveries_view())
