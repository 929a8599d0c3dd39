"""The example app's `web.fetch_url`, run by a real worker, goes through the SSRF guard: it refuses
the loopback servers (and the Redis port) that a plain client reaches, re-checks every redirect and
ignores proxies from the environment."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import conveyor.examples as examples
from conveyor import Conveyor, JobFailedError, Task
from conveyor.handlers.ssrf import AllowList, SsrfGuard
from conveyor.testing import free_port
from tests.conftest import running
from tests.handlers.servers import Receiver


@pytest.fixture
async def fetch(redis_url: str) -> AsyncIterator[tuple[Conveyor, Task[Any]]]:
    """The example task on an app of its own (unique key prefix), as `conveyor up` declares it."""
    app = Conveyor(redis_url, prefix=f"fx{uuid.uuid4().hex[:10]}")
    task: Task[Any] = app.task(examples.fetch_url, queue="web", attempts=3, timeout=60)
    yield app, task
    await app.queue("web").obliterate(force=True)
    await app.close()


async def test_fetch_url_refuses_local_targets(
    fetch: tuple[Conveyor, Task[Any]], local_servers: tuple[Receiver, Receiver], redis_url: str
) -> None:
    app, task = fetch
    v4, v6 = local_servers
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    targets = [
        f"http://127.0.0.1:{v4.port}/",
        f"http://localhost:{v4.port}/",
        f"http://[::ffff:127.0.0.1]:{v4.port}/",
        f"http://[::1]:{v6.port}/",
        f"http://127.0.0.1:{redis_port}/",
        f"http://[2002:7f00:1::]:{v4.port}/",
        "http://169.254.169.254/latest/meta-data/",
    ]
    async with httpx.AsyncClient(trust_env=False, timeout=5) as plain:
        assert (await plain.get(targets[0])).status_code == 404, "reachable without the guard"
    hits_before = len(v4.hits) + len(v6.hits)
    jobs = [await task.enqueue({"url": url}) for url in targets]
    async with running(app.worker("web", lease_ms=5000)):
        for job, url in zip(jobs, targets, strict=True):
            with pytest.raises(JobFailedError, match="refusing"):
                await job.result(timeout=20)
            assert (await job.record()).attempts_made == 1, f"{url}: refused at once, not retried"
    assert len(v4.hits) + len(v6.hits) == hits_before, "no request reached a local server"


async def test_fetch_url_rechecks_redirects_and_ignores_proxies(
    fetch: tuple[Conveyor, Task[Any]], local_servers: tuple[Receiver, Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 127.0.0.1 allow-listed, a page there is fetched directly although every proxy variable
    points at a closed port, and a redirect from it to [::1] (not allowed) is refused."""
    app, task = fetch
    v4, v6 = local_servers
    monkeypatch.setattr(examples.handlers, "guard", SsrfGuard(AllowList.parse("127.0.0.1")))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    v4.files["/page"] = (b"<html><title>Local page</title></html>", "text/html")
    v4.answer("/jump", (302, {"Location": f"http://[::1]:{v6.port}/secret"}, b""))
    page = await task.enqueue({"url": f"{v4.url}/page"})
    jump = await task.enqueue({"url": f"{v4.url}/jump"})
    async with running(app.worker("web", lease_ms=5000)):
        summary = await page.result(timeout=20)
        with pytest.raises(JobFailedError, match=r"refusing '::1'"):
            await jump.result(timeout=20)
    assert summary.status == 200 and summary.title == "Local page"
    assert v6.hits == [], "the redirect target was never contacted"
    assert ("GET", "/jump") in v4.hits
