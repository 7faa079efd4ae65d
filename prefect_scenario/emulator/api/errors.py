"""Error answers in the API's shape: ``{"reason", "traceId", "details"?}`` with a JSON content type.

Routes raise :class:`ApiError`; the handlers installed by :func:`install_error_handlers` also turn
FastAPI's own validation errors and unknown routes into the same shape, so a client never has to
parse two kinds of error body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from prefect_scenario.emulator.service.ids import new_trace_id
from prefect_scenario.models import ApiErrorBody

RecordT = TypeVar("RecordT")


class ApiError(Exception):
    """An error answer.

    Args:
        status_code: the HTTP status.
        reason: the human message (what is wrong, and which field).
        details: extra machine-readable facts (``field``, ``actionName``, ...).
        headers: extra response headers (``Retry-After``, ...).
    """

    def __init__(
        self,
        status_code: int,
        reason: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason
        self.details = details
        self.headers = headers or {}


def bad_request(reason: str, *, field: str | None = None, **details: Any) -> ApiError:
    """A 400 naming the field at fault."""
    if field is not None:
        details = {"field": field, **details}
    return ApiError(400, reason, details=details or None)


def not_found(reason: str) -> ApiError:
    """A 404."""
    return ApiError(404, reason)


def record_or_404(records: Mapping[str, RecordT], record_id: str, kind: str) -> RecordT:
    """The record named ``record_id``, or the API's 404 ("Job job_… not found")."""
    record = records.get(record_id)
    if record is None:
        raise not_found(f"{kind} {record_id} not found")
    return record


def error_response(
    status_code: int,
    reason: str,
    *,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The JSON answer of an error."""
    body = ApiErrorBody(reason=reason, trace_id=new_trace_id(), details=details)
    return JSONResponse(body.to_wire(), status_code=status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Make every error of ``app`` answer in the API's error shape."""

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status_code, exc.reason, details=exc.details, headers=exc.headers)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {}
        location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
        field = ".".join(location) or None
        message = str(first.get("msg", "invalid request"))
        reason = f"Invalid {field}: {message}" if field else f"Invalid request: {message}"
        return error_response(400, reason, details={"field": field} if field else None)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        reason = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        if exc.status_code == 404 and reason == "Not Found":
            reason = f"Route {request.method} {request.url.path} not found"
        if exc.status_code == 405:
            reason = f"Method {request.method} not allowed on {request.url.path}"
        return error_response(exc.status_code, reason, headers=dict(exc.headers or {}))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
