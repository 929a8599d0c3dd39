"""The Django example of docs/integrations.md against a real server: views enqueue synchronously
(in the web server's threads, no event loop), a real worker runs the jobs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from types import ModuleType

import pytest

from conveyor import JobState
from conveyor.testing import drain

django = pytest.importorskip("django")


@pytest.fixture
async def site(redis_url: str) -> AsyncIterator[ModuleType]:
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            ROOT_URLCONF="tests.integrations.django_site", ALLOWED_HOSTS=["testserver"], DEBUG=False,
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
            INSTALLED_APPS=[], MIDDLEWARE=[], USE_TZ=True,
        )
        django.setup()
    from tests.integrations import django_site

    async with django_site.app.bound(redis_url, prefix=f"dj{uuid.uuid4().hex[:12]}"):  # this test only
        yield django_site


async def test_views_enqueue_synchronously_and_a_worker_runs_the_jobs(site: ModuleType) -> None:
    from django.test import Client

    client = Client()
    first = await asyncio.to_thread(client.post, "/signup", {"email": "ada@example.com"})
    assert first.status_code == 202 and first.json()["created"] is True
    again = await asyncio.to_thread(client.post, "/signup", {"email": "ada@example.com"})
    assert again.json() == {"job": first.json()["job"], "created": False}  # idempotent per address
    bad = await asyncio.to_thread(client.post, "/signup", {})
    assert bad.status_code == 400 and "send_welcome" in bad.json()["error"]
    committed = await asyncio.to_thread(client.post, "/signup-after-commit", {"email": "bob@example.com"})
    assert committed.status_code == 202

    queue = site.app.queue("emails")
    stats = await drain(queue, site.app.handlers("emails"))
    assert stats.succeeded == 2
    record = await queue.job(first.json()["job"]).record()
    assert record.state is JobState.COMPLETED and record.result == "welcome sent to ada@example.com"
    assert record.max_attempts == 5
