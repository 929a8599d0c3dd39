"""Synchronous enqueue (Django, Flask, scripts): the same options, stored jobs and errors as async
enqueue, on redis-py's sync client, against a standalone server and a Cluster."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from conveyor import (
    ConnectionFailedError,
    Conveyor,
    IdempotencyConflictError,
    InvalidJobError,
    InvalidOptionError,
    JobSpec,
    JobState,
    PayloadTooLargeError,
    PayloadValidationError,
    Queue,
)
from conveyor.redis.connection import connect_sync
from conveyor.sync import SyncQueue
from conveyor.testing import free_port
from tests.conftest import counts_of, running


@pytest.fixture
def sync_queue(backend_url: str, qname: str) -> Iterator[SyncQueue]:
    with SyncQueue(qname, redis=backend_url) as q:
        yield q


def test_add_stores_the_same_job_as_async_add(sync_queue: SyncQueue, backend_url: str, qname: str) -> None:
    options = dict(attempts=3, timeout=5, priority=7, backoff=2.0, group="tenant-1", result_ttl=60)
    made = sync_queue.add("email", {"to": "a@example.com"}, **options)
    assert made.created and made.queue == qname
    sync_rec = sync_queue.get_job(made.id)

    async def async_twin() -> tuple[str, dict[str, object], int, int]:
        q = Queue(qname, redis=backend_url)
        try:
            job = await q.add("email", {"to": "a@example.com"}, **options)  # type: ignore[arg-type]
            rec = await job.record()
            return job.id, rec.options, rec.priority, rec.max_attempts
        finally:
            await q.close()

    twin_id, twin_options, twin_priority, twin_attempts = asyncio.run(async_twin())
    assert sync_rec is not None and sync_rec.state is JobState.WAITING
    assert sync_rec.data == {"to": "a@example.com"}
    assert (sync_rec.options, sync_rec.priority, sync_rec.max_attempts) == (twin_options, twin_priority, twin_attempts)
    assert int(twin_id) > int(made.id)  # one id counter for both paths


def test_delay_idempotency_and_bulk(sync_queue: SyncQueue) -> None:
    delayed = sync_queue.add("x", delay=60)
    rec = sync_queue.get_job(delayed.id)
    assert rec is not None and rec.state is JobState.DELAYED
    first = sync_queue.add("charge", {"amount": 10}, idempotency_key="order-1")
    again = sync_queue.add("charge", {"amount": 10}, idempotency_key="order-1")
    assert again.id == first.id and first.created and not again.created
    with pytest.raises(IdempotencyConflictError):
        sync_queue.add("charge", {"amount": 99}, idempotency_key="order-1")
    made = sync_queue.add_bulk([{"name": "b", "data": i} for i in range(2500)])  # three chunks
    assert len({m.id for m in made}) == 2500
    assert sync_queue.get_job("no-such-job") is None


def test_bad_input_raises_the_async_errors_and_writes_nothing(sync_queue: SyncQueue, backend_url: str) -> None:
    with pytest.raises(InvalidOptionError):
        sync_queue.add("x", priority=5000)
    with pytest.raises(InvalidOptionError):
        sync_queue.add("x", not_an_option=1)
    with pytest.raises(InvalidJobError):
        sync_queue.add("", 1)
    with pytest.raises(PayloadTooLargeError):
        sync_queue.add("x", "a" * (600 * 1024))
    with pytest.raises(InvalidOptionError):  # one bad spec: nothing of the batch is written
        sync_queue.add_bulk([{"name": "ok", "data": 1}, {"name": "bad", "options": {"attempts": 0}}])
    with pytest.raises(IdempotencyConflictError):
        sync_queue.add_bulk([JobSpec("a", 1), JobSpec("a", 1), {"name": "k", "data": 1, "options": {"job_id": "j1"}},
                             {"name": "k", "data": 2, "options": {"job_id": "j1"}}])

    async def counts() -> dict[str, int]:
        q = Queue(sync_queue.name, redis=backend_url)
        try:
            return await counts_of(q)
        finally:
            await q.close()

    assert sum(asyncio.run(counts()).values()) == 0


def test_unreachable_server_is_a_connection_error() -> None:
    with SyncQueue("down", redis=f"redis://127.0.0.1:{free_port()}/0") as q, pytest.raises(ConnectionFailedError):
        q.add("x", 1)


class Signup(BaseModel):
    email: str


def make_app(url: str, queue: str) -> tuple[Conveyor, object]:
    app = Conveyor(url)

    @app.task(queue=queue, attempts=2)
    async def welcome(ctx: object, signup: Signup) -> str:
        return f"hello {signup.email}"

    return app, welcome


def test_task_enqueue_sync_validates_the_payload_from_threads_without_a_loop(backend_url: str, qname: str) -> None:
    app, welcome = make_app(backend_url, qname)
    with pytest.raises(PayloadValidationError):
        welcome.enqueue_sync({"email": 3})  # type: ignore[attr-defined]
    with pytest.raises(InvalidOptionError):
        welcome.enqueue_sync({"email": "a@b.c"}, retries=3)  # type: ignore[attr-defined]
    ids: list[str] = []

    def view(i: int) -> None:  # as a threaded web server would call it
        ids.append(welcome.enqueue_sync({"email": f"u{i}@example.com"}).id)  # type: ignore[attr-defined]

    threads = [threading.Thread(target=view, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(set(ids)) == 8
    rec = app.sync_queue(qname).get_job(ids[0])
    assert rec is not None and rec.max_attempts == 2 and rec.name == "welcome"
    app.close_sync()


async def test_jobs_enqueued_synchronously_run_on_a_worker(backend_url: str, qname: str) -> None:
    app, welcome = make_app(backend_url, qname)
    made = await asyncio.to_thread(welcome.enqueue_sync, {"email": "x@example.com"})  # type: ignore[attr-defined]
    async with running(app.worker(qname)):
        record = await app.queue(qname).job(made.id).wait(timeout=30)
    assert record.state is JobState.COMPLETED and record.result == "hello x@example.com"
    await app.close()


def test_connect_sync_takes_the_same_url_forms(backend_url: str) -> None:
    client = connect_sync(backend_url)
    try:
        assert client.ping()
    finally:
        client.close()
    with pytest.raises(Exception, match="unsupported Redis URL scheme"):
        connect_sync("http://127.0.0.1:1/")
