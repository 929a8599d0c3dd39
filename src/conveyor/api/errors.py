"""One error body for every failure, and the handlers that map exceptions to HTTP statuses.

Bodies carry a code and a message written by us; they never include request input, secrets or the
API's own stack traces (unexpected exceptions become a bare 500).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from conveyor.api.responses import JSONBody
from conveyor.errors import (
    ConnectionFailedError,
    IdempotencyConflictError,
    InvalidJobError,
    InvalidStateError,
    JobNotFoundError,
    PayloadTooLargeError,
    PayloadValidationError,
    UnknownTaskError,
)

logger = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An HTTP error with a stable code; raised by routes and dependencies."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.details = details
        self.headers = headers


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONBody:
    body: dict[str, Any] = {"code": code or _CODES.get(status, "error"), "message": message}
    if details is not None:
        body["details"] = details
    return JSONBody({"error": body}, status_code=status, headers=headers)


def _from_conveyor(exc: Exception) -> ApiError:
    """Library exceptions → statuses (the table the API documentation describes)."""
    if isinstance(exc, JobNotFoundError | UnknownTaskError):
        return ApiError(404, str(exc))
    if isinstance(exc, InvalidStateError):
        return ApiError(409, str(exc), code="invalid_state")
    if isinstance(exc, IdempotencyConflictError):
        return ApiError(
            409,
            "the idempotency key or job id was already used with a different body",
            code="idempotency_conflict",
        )
    if isinstance(exc, PayloadTooLargeError):
        return ApiError(413, str(exc))
    if isinstance(exc, PayloadValidationError):
        return ApiError(422, f"data does not match the payload type of task {exc.task!r}", details=exc.errors)
    if isinstance(exc, InvalidJobError):
        return ApiError(422, str(exc), code="invalid_job")
    return ApiError(503, "Redis is unreachable")


def _sanitize(errors: Any) -> list[dict[str, Any]]:
    return [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]


async def _api_error(request: Request, exc: Exception) -> JSONBody:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, code=exc.code, details=exc.details, headers=exc.headers)


async def _conveyor_error(request: Request, exc: Exception) -> JSONBody:
    return await _api_error(request, _from_conveyor(exc))


async def _redis_down(request: Request, exc: Exception) -> JSONBody:
    logger.warning("Redis unreachable while serving %s %s", request.method, request.url.path)
    return error_response(503, "Redis is unreachable")


async def _validation(request: Request, exc: Exception) -> JSONBody:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "request parameters are invalid", details=_sanitize(exc.errors()))


async def _http(request: Request, exc: Exception) -> JSONBody:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    headers = dict(exc.headers) if exc.headers else None
    if status == 405:
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    generic = _CODES.get(status, "error").replace("_", " ")
    # Routes raise HTTPException with messages they wrote; Starlette's own are just the status phrase.
    message = exc.detail if isinstance(exc.detail, str) and status < 500 and exc.detail else generic
    return error_response(status, message, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Methods of every route matching the path (Starlette lists only the first route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods - {"HEAD"}
    return sorted(methods)


async def _unexpected(request: Request, exc: Exception) -> JSONBody:
    logger.exception("unhandled error serving %s %s", request.method, request.url.path)
    return error_response(500, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    for cls in (
        JobNotFoundError,
        UnknownTaskError,
        InvalidStateError,
        IdempotencyConflictError,
        InvalidJobError,
        ConnectionFailedError,
    ):
        app.add_exception_handler(cls, _conveyor_error)
    app.add_exception_handler(RedisConnectionError, _redis_down)
    app.add_exception_handler(RedisTimeoutError, _redis_down)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
