"""One error type with a status code, and the handlers that turn errors into
`{"error": ..., "detail": ...}` responses. Expected conditions are 4xx, never 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class NexusError(Exception):
    """Base of every error a client is meant to see."""

    status_code = 400
    error = "bad_request"

    def __init__(self, detail: Any, *, error: str | None = None, status_code: int | None = None):
        super().__init__(detail if isinstance(detail, str) else repr(detail))
        self.detail = detail
        if error is not None:
            self.error = error
        if status_code is not None:
            self.status_code = status_code


class BadRequest(NexusError):
    status_code = 400
    error = "bad_request"


class Unauthorized(NexusError):
    status_code = 401
    error = "unauthorized"


class Forbidden(NexusError):
    status_code = 403
    error = "forbidden"


class NotFound(NexusError):
    status_code = 404
    error = "not_found"


class Conflict(NexusError):
    status_code = 409
    error = "conflict"


class Unprocessable(NexusError):
    status_code = 422
    error = "validation_error"


class TooManyRequests(NexusError):
    """A quota is used up: the request may succeed once the tenant's work finishes."""

    status_code = 429
    error = "quota_exceeded"


class Unavailable(NexusError):
    status_code = 503
    error = "unavailable"


def error_body(error: str, detail: Any) -> dict[str, Any]:
    return {"error": error, "detail": detail}


def describe_validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Name each failing field by its dotted path, without echoing whole request bodies."""
    described = []
    for err in errors:
        location = [str(part) for part in err.get("loc", ()) if part not in ("body",)]
        described.append(
            {"field": ".".join(location) or "body", "message": err.get("msg", "invalid value")}
        )
    return described


def summarize_validation_errors(errors: list[dict[str, Any]], limit: int = 5) -> str:
    """`field: message; ...` for the first `limit` errors: a one-line reason for a log or a
    failed workflow."""
    described = describe_validation_errors(errors[:limit])
    return "; ".join(f"{d['field']}: {d['message']}" for d in described)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NexusError)
    async def _nexus_error(_: Request, exc: NexusError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse(
            error_body(exc.error, exc.detail), status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            error_body("validation_error", describe_validation_errors(list(exc.errors()))),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(
            exc.status_code, "http_error"
        )
        return JSONResponse(
            error_body(error, exc.detail), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=exc)
        return JSONResponse(error_body("internal_error", "unexpected server error"), 500)
