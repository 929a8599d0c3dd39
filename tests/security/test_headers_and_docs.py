"""Every response of the real API process carries the security headers (JSON, docs, dashboard, and
404/405/401/403/413/422/500 errors), and /docs and /redoc load only files the package installed."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import pytest

from conveyor.api.docs import DOCS_CONTENT_SECURITY_POLICY
from conveyor.api.security import API_CONTENT_SECURITY_POLICY, SECURITY_HEADERS
from tests.api.conftest import api_settings
from tests.api.live import LiveApi, live_api
from tests.api.sample_app import build_app


@pytest.fixture
async def api(redis_url: str, qname: str) -> AsyncIterator[LiveApi]:
    app = build_app(redis_url, qname, prefix=f"sh{uuid.uuid4().hex[:10]}")
    settings = api_settings(redis_url, api_max_body_bytes=2048)
    async with live_api(app, settings) as live:

        async def explode() -> None:
            raise RuntimeError("an unexpected failure inside a route")

        live.asgi.add_api_route("/api/test-explode", explode, include_in_schema=False)
        yield live
    await app.queue(qname).obliterate(force=True)
    await app.close()


async def test_every_response_carries_the_security_headers(api: LiveApi, qname: str) -> None:
    jobs = f"/api/queues/{qname}/jobs"
    calls = [
        ("GET", "/api/health", {}, None, 200),
        ("GET", "/openapi.json", {}, None, 200),
        ("GET", "/docs", {}, None, 200),
        ("GET", "/docs/init.js", {}, None, 200),
        ("GET", "/docs/assets/swagger-ui-bundle.js", {}, None, 200),
        ("GET", "/docs/assets/missing.js", {}, None, 404),
        ("GET", "/redoc", {}, None, 200),
        ("GET", "/dashboard/", {}, None, 200),
        ("GET", "/no/such/route", {}, None, 404),
        ("GET", f"/api/jobs/{qname}/no-such-job", api.auth("read"), None, 404),
        ("DELETE", "/api/health", {}, None, 405),
        ("POST", jobs, {}, {"name": "echo", "data": {"text": "x"}}, 401),
        ("POST", jobs, api.auth("read"), {"name": "echo", "data": {"text": "x"}}, 403),
        ("POST", jobs, api.auth("enqueue"), {"name": "echo", "data": {"text": 5}}, 422),
        ("GET", f"{jobs}?limit=0", api.auth("read"), None, 422),
        ("POST", jobs, api.auth("enqueue"), {"name": "echo", "data": {"text": "x" * 5000}}, 413),
        ("POST", jobs, api.auth("enqueue"), {"name": "echo", "data": {"text": "ok"}}, 202),
        ("GET", "/api/test-explode", {}, None, 500),
    ]
    for method, path, headers, body, status in calls:
        r = await api.http.request(method, path, headers=headers, json=body)
        assert r.status_code == status, (method, path, r.status_code, r.text[:200])
        missing = [name for name in SECURITY_HEADERS if name not in r.headers]
        assert not missing, (method, path, status, missing)
        assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["X-Frame-Options"] == "DENY"
        csp = r.headers["Content-Security-Policy"]
        if path in ("/docs", "/redoc", "/docs/init.js"):
            assert csp == DOCS_CONTENT_SECURITY_POLICY
        elif path.startswith("/dashboard"):
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        else:
            assert csp == API_CONTENT_SECURITY_POLICY, (method, path)


async def test_docs_load_only_installed_files(api: LiveApi) -> None:
    for page, needed in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        r = await api.http.get(page)
        assert r.status_code == 200 and needed in r.text
        links = re.findall(r'(?:src|href|spec-url|data-openapi-url)="([^"]+)"', r.text)
        assert links and all(link.startswith("/") and not link.startswith("//") for link in links), links
        assert "<script>" not in r.text, "no inline script: the page works under script-src 'self'"
        for link in links:
            asset = await api.http.get(link)
            assert asset.status_code == 200 and asset.content, link
        assert "'unsafe-inline'" not in r.headers["Content-Security-Policy"].split("script-src")[1].split(";")[0]
    bundle = await api.http.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith(("text/javascript", "application/javascript"))
