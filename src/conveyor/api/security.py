"""Security headers on every response of the API process: JSON, errors (404, 405, 422, 500...), the
API docs and the dashboard.

`install_security_headers(app)` puts the middleware outside Starlette's own error middleware, so even
an unhandled error's 500 carries the headers. A route (or mounted app) that sets one of these headers
itself keeps its value: the dashboard and the docs pages send their own Content-Security-Policy.
Responses uvicorn writes itself (a malformed request line, for instance) never reach the app.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.api.errors import error_response

# JSON is never a document: nothing may run, load, or frame it.
API_CONTENT_SECURITY_POLICY = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

SECURITY_HEADERS = {
    "Content-Security-Policy": API_CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_ENCODED = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in SECURITY_HEADERS.items()]


class SecurityHeaders:
    """ASGI middleware: adds each of SECURITY_HEADERS that the response does not set itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(pair for pair in _ENCODED if pair[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_security_headers(app: FastAPI) -> None:
    """Wrap the app's whole middleware stack (error handling included) in SecurityHeaders."""
    build = app.build_middleware_stack

    def build_secured() -> ASGIApp:
        return SecurityHeaders(build())

    app.build_middleware_stack = build_secured  # type: ignore[method-assign]


_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class CrossSiteWrites:
    """ASGI middleware for an API without keys (`CONVEYOR_API_AUTH=0`): refuses (403) a write that a
    browser says comes from another site's page. Without keys nothing else stops such a request: a
    page on any site a user of this machine opens can send a "simple" cross-site POST (a form, or
    fetch with `text/plain`, which needs no CORS preflight) to an API on loopback, enqueueing jobs or
    pausing queues; CORS only keeps the page from reading the answer. A write is refused when its
    `Origin` is neither the API's own host nor one of `CONVEYOR_API_CORS_ORIGINS`, or when it has no
    `Origin` but `Sec-Fetch-Site: cross-site`; `Sec-Fetch-Site: same-origin` (the API's own pages, also
    behind a proxy that rewrites `Host`) is let through. Clients that are not browsers send neither."""

    def __init__(self, app: ASGIApp, allowed_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = frozenset(o.rstrip("/") for o in allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in _WRITES and self._cross_site(scope):
            message = "a write sent by another site's page is refused (this API runs without keys)"
            await error_response(403, message)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _cross_site(self, scope: Scope) -> bool:
        origin = fetch_site = host = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value.decode("latin-1").strip()
            elif name == b"sec-fetch-site":
                fetch_site = value.decode("latin-1").strip().lower()
            elif name == b"host":
                host = value.decode("latin-1").strip().lower()
        if fetch_site == "same-origin":
            return False  # the browser's word: the API's own pages (the dashboard), also behind a proxy
        if origin is None:
            return fetch_site == "cross-site"
        if origin.rstrip("/") in self.allowed:
            return False
        try:
            netloc = urlsplit(origin).netloc.lower()
        except ValueError:
            return True
        return not netloc or netloc != host  # `null` (a sandboxed page, a file) has no host
