"""Interactive API docs served from installed files: Swagger UI at /docs and ReDoc at /redoc.

The JavaScript and CSS come from the `fastapi-offline` package (Swagger UI 5, which renders OpenAPI
3.1, and ReDoc 2), so the pages work with no network access and load nothing from another origin.
The pages carry no inline script: Swagger UI is started by a script file of ours, ReDoc by its own
`<redoc>` element, and a Content-Security-Policy allows scripts from this origin only (it also
blocks the Redocly logo ReDoc links from its CDN: nothing leaves this origin).
"""

from __future__ import annotations

import html
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

ASSETS_PATH = "/docs/assets"
VENDOR_DIR = Path(fastapi_offline.__file__).parent / "static"
SWAGGER_INIT = (Path(__file__).parent / "docs_static" / "swagger-init.js").read_text()

# Swagger UI and ReDoc set element styles and ReDoc searches in a worker started from a blob: URL;
# scripts still come only from this origin.
DOCS_CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "worker-src 'self' blob:",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
_HEADERS = {"Content-Security-Policy": DOCS_CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"}


# Page templates; {root} is the ASGI root path, {assets} where the installed files are served.
_SWAGGER_HEAD = (
    '<link rel="stylesheet" href="{assets}/swagger-ui.css">\n<link rel="icon" href="{assets}/favicon.png">\n'
)
_SWAGGER_BODY = (
    '<div id="swagger-ui" data-openapi-url="{root}{openapi}"></div>\n'
    '<script src="{assets}/swagger-ui-bundle.js"></script>\n<script src="{root}/docs/init.js"></script>\n'
)
_REDOC_HEAD = '<link rel="icon" href="{assets}/favicon.png">\n'
_REDOC_BODY = '<redoc spec-url="{root}{openapi}"></redoc>\n<script src="{assets}/redoc.standalone.js"></script>\n'


def _page(request: Request, title: str, head: str, body: str, openapi: str) -> HTMLResponse:
    root = html.escape(request.scope.get("root_path", ""))
    values = {"root": root, "assets": root + ASSETS_PATH, "openapi": html.escape(openapi)}
    return HTMLResponse(
        f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n{head.format(**values)}</head>\n<body>\n{body.format(**values)}"
        "</body>\n</html>\n",
        headers=_HEADERS,
    )


def install_docs(app: FastAPI) -> None:
    """Add /docs, /redoc and their assets (create the app with docs_url=None, redoc_url=None)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=VENDOR_DIR), name="docs-assets")
    openapi = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return _page(request, f"{app.title} - Swagger UI", _SWAGGER_HEAD, _SWAGGER_BODY, openapi)

    @app.get("/docs/init.js", include_in_schema=False)
    async def swagger_init() -> Response:
        return Response(SWAGGER_INIT, media_type="text/javascript; charset=utf-8", headers=_HEADERS)

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return _page(request, f"{app.title} - ReDoc", _REDOC_HEAD, _REDOC_BODY, openapi)
