"""One error body for every failure, and the handlers that map exceptions to HTTP statuses.

Bodies carry a code and a message written by us; they never include request input, secrets or the
API's own stack traces (unexpected exceptions become a bare 500).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.api.responses import JSONBody
from conveyor.errors import (
    ConnectionFailedError,
    IdempotencyConflictError,
    InvalidJobError,
    InvalidStateError,
    JobNotFoundError,
    PayloadTooLargeError,
    PayloadValidationError,
    SpoiledKeyError,
    UnknownTaskError,
)
from conveyor.redis.faults import fault_summary, is_fault

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
    body: dict[str, Any] = {"code": code or _CODES.get(status, "error"), "message": _clip(message)}
    if details is not None:
        body["details"] = [_clip_detail(d) for d in details[:_MAX_DETAILS]]
    return JSONBody({"error": body}, status_code=status, headers=headers)


_MAX_MESSAGE = 300
_MAX_DETAILS = 100


def _clip(text: str, limit: int = _MAX_MESSAGE) -> str:
    """Messages may quote input; a long one is cut so an error never echoes a whole oversized value."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clip_detail(detail: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in detail.items():
        if isinstance(value, str):
            value = _clip(value)
        elif isinstance(value, list) and name == "loc":
            value = [_clip(str(p), 100) for p in value[:20]]
        elif isinstance(value, list | dict):
            value = _clip(str(value))
        out[name] = value
    return out


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
    if isinstance(exc, SpoiledKeyError):  # data in Redis, not the request, is at fault: the key to repair
        logger.warning("%s", exc)  # (before InvalidJobError: a spoiled job record is one too)
        return ApiError(500, str(exc), code="spoiled_key")
    if isinstance(exc, PayloadValidationError):
        return ApiError(422, f"data does not match the payload type of task {exc.task!r}", details=exc.errors)
    if isinstance(exc, InvalidJobError):
        return ApiError(422, str(exc), code="invalid_job")
    return ApiError(503, fault_summary(exc))


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
    summary = fault_summary(exc)
    logger.warning("%s while serving %s %s", summary, request.method, request.url.path)
    return error_response(503, summary)


async def _validation(request: Request, exc: Exception) -> JSONBody:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        # A body FastAPI parses that is not JSON: the 400 of the table, as routes parsing their own say.
        return error_response(400, "the body is not valid JSON")
    return error_response(422, "request parameters are invalid", details=_sanitize(errors))


async def _http(request: Request, exc: Exception) -> JSONBody:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    headers = dict(exc.headers) if exc.headers else None
    if status == 405:
        headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
    generic = _CODES.get(status, "error").replace("_", " ")
    # Routes raise HTTPException with messages they wrote; Starlette's own are just the status phrase.
    message = exc.detail if isinstance(exc.detail, str) and status < 500 and exc.detail else generic
    return error_response(status, message, headers=headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
_PARAM = re.compile(r"\\\{[^}]+\\\}")


def allowed_methods(request: Request) -> list[str]:
    """The methods of the resource at this path, as the OpenAPI document lists them (Starlette lists
    only the first route's). Job ids may contain '/', so a path can fit several templates
    (`/jobs/{queue}/{job_id}/wait` and `/jobs/{queue}/{job_id}`): the most specific one (the most
    literal text) is the resource. Paths outside the document are probed against the routes. HEAD is
    listed wherever GET is: it is served there (api/head.py)."""
    path = request.scope.get("path", "")
    best, allowed = -1, set()
    for pattern, literal, methods in _templates(request.app):
        if pattern.fullmatch(path):
            if literal > best:
                best, allowed = literal, set(methods)
            elif literal == best:
                allowed |= methods
    if best < 0:
        for method in _METHODS:
            scope = {**request.scope, "method": method}
            if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
                allowed.add(method)
    if "GET" in allowed:
        allowed.add("HEAD")
    return [m for m in _METHODS if m in allowed]


def prepare_allowed_methods(app: Any) -> None:
    """Build the path templates (from the OpenAPI document) ahead of the first request that needs them."""
    _templates(app)


def _templates(app: Any) -> list[tuple[re.Pattern[str], int, set[str]]]:
    cached: list[tuple[re.Pattern[str], int, set[str]]] | None = getattr(app.state, "allow_templates", None)
    if cached is None:
        cached = []
        for template, operations in app.openapi().get("paths", {}).items():
            methods = {m.upper() for m in operations if m.upper() in _METHODS}
            pattern = re.compile(_PARAM.sub(".+", re.escape(template)))
            literal = len(re.sub(r"\{[^}]+\}", "", template))
            cached.append((pattern, literal, methods))
        app.state.allow_templates = cached
    return cached


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The client left (or was cut off by a read deadline) while its body was read: nobody to answer.
    return Response(status_code=499)


class UnhandledErrors:
    """ASGI middleware inside Starlette's error middleware: an unexpected exception is logged here,
    once, and answered with a bare 500 (no trace, no input); a Redis fault (redis/faults.py: a `BUSY`
    or `LOADING` reply, a closed transport) is the documented 503 saying why, logged without a trace.
    Nothing is re-raised, so neither Starlette nor the server logs it a second time. After a response
    has started (a stream), the connection is just closed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if is_fault(exc):  # a Redis reply or error no route turned into ConnectionFailedError
                summary = fault_summary(exc)
                logger.warning("%s while serving %s %s", summary, scope.get("method"), scope.get("path"))
                if not started:
                    await error_response(503, summary)(scope, receive, send)
                return
            logger.exception("unhandled error serving %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await error_response(500, "internal error")(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    for cls in (
        JobNotFoundError,
        UnknownTaskError,
        InvalidStateError,
        IdempotencyConflictError,
        InvalidJobError,
        ConnectionFailedError,
        SpoiledKeyError,
    ):
        app.add_exception_handler(cls, _conveyor_error)
    app.add_exception_handler(RedisConnectionError, _redis_down)
    app.add_exception_handler(RedisTimeoutError, _redis_down)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_middleware(UnhandledErrors)  # innermost middleware: exceptions no handler above took
