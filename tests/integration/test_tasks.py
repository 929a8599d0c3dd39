"""Typed tasks on the app object, and middleware hooks around enqueue and runs."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from conveyor import (
    ConfigurationError,
    Conveyor,
    InvalidOptionError,
    JobContext,
    JobOutcome,
    JobSpec,
    Middleware,
    PayloadValidationError,
)
from tests.conftest import counts_of, running


class Flashcards(BaseModel):
    topic: str
    count: int = 3


class Deck(BaseModel):
    cards: list[str]


def make_app(url: str, middleware: tuple[Middleware, ...] = ()) -> Conveyor:
    app = Conveyor(url, middleware=middleware)

    @app.task(queue="ai-test", attempts=2, timeout=10, concurrency=4)
    async def flashcards(ctx: JobContext, payload: Flashcards) -> Deck:
        return Deck(cards=[f"{payload.topic} #{i}" for i in range(payload.count)])

    @app.task(queue="ai-test", name="count-words")
    def count_words(ctx: JobContext, payload: str) -> int:
        return len(payload.split())

    return app


async def test_typed_task_round_trip(redis_url: str) -> None:
    app = make_app(redis_url)
    flashcards = app.get_task("ai-test", "flashcards")
    assert flashcards is not None
    try:
        async with running(app.worker("ai-test")) as worker:
            assert worker.concurrency == 4
            job = await flashcards.enqueue(Flashcards(topic="cells", count=2))
            deck = await job.result(timeout=30)
            assert isinstance(deck, Deck) and deck.cards == ["cells #0", "cells #1"]
            job2 = await flashcards.enqueue({"topic": "atoms"})  # plain dicts are validated too
            assert len((await job2.result(timeout=30)).cards) == 3
            words = await app.get_task("ai-test", "count-words").enqueue("one two three")  # type: ignore[union-attr]
            assert await words.result(timeout=30) == 3
        rec = await job.record()
        assert rec.max_attempts == 2 and rec.options["timeout"] == 10
    finally:
        await app.queue("ai-test").obliterate(force=True)
        await app.close()


async def test_payload_is_validated_before_anything_is_written(redis_url: str) -> None:
    app = make_app(redis_url)
    try:
        task = app.get_task("ai-test", "flashcards")
        with pytest.raises(PayloadValidationError) as info:
            await task.enqueue({"topic": "x", "count": "many"})  # type: ignore[union-attr]
        assert info.value.errors[0]["loc"] == ["count"]
        with pytest.raises(InvalidOptionError):
            await task.enqueue({"topic": "x"}, priorty=1)  # type: ignore[union-attr]
        assert sum((await counts_of(app.queue("ai-test"))).values()) == 0
        assert task.payload_schema()["properties"]["topic"]["type"] == "string"  # type: ignore[union-attr]
    finally:
        await app.close()


def test_bad_declarations_are_rejected() -> None:
    app = Conveyor("redis://127.0.0.1:1/0")

    @app.task(queue="q", concurrency=2)
    async def a(ctx: JobContext) -> None:
        return None

    with pytest.raises(ConfigurationError):
        @app.task(queue="q", name="a")
        async def again(ctx: JobContext) -> None:
            return None

    with pytest.raises(ConfigurationError):
        @app.task(queue="q", concurrency=3)
        async def b(ctx: JobContext) -> None:
            return None

    with pytest.raises(ConfigurationError):
        @app.task(queue="q", priorty=1)
        async def c(ctx: JobContext) -> None:
            return None


class Recorder(Middleware):
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def before_enqueue(self, queue: str, spec: JobSpec) -> None:
        self.calls.append(f"before_enqueue:{spec.name}")

    async def after_enqueue(self, queue: str, spec: JobSpec, job: Any) -> None:
        self.calls.append(f"after_enqueue:{job.id}")

    async def before_job(self, ctx: JobContext) -> None:
        ctx.state["seen"] = True
        self.calls.append(f"before_job:{ctx.job_id}")

    async def after_job(self, ctx: JobContext, outcome: JobOutcome) -> None:
        self.calls.append(f"after_job:{ctx.job_id}:{outcome.kind.name}:{ctx.state.get('seen')}")


class Broken(Middleware):
    async def before_enqueue(self, queue: str, spec: JobSpec) -> None:
        raise RuntimeError("broken hook")

    async def before_job(self, ctx: JobContext) -> None:
        raise RuntimeError("broken hook")


async def test_middleware_hooks_run_and_a_failing_hook_breaks_nothing(redis_url: str, caplog) -> None:
    recorder = Recorder()
    app = make_app(redis_url, middleware=(Broken(), recorder))
    try:
        async with running(app.worker("ai-test")):
            job = await app.get_task("ai-test", "flashcards").enqueue({"topic": "t"})  # type: ignore[union-attr]
            await job.result(timeout=30)
            await _settled(recorder, job.id)
        calls = recorder.calls
        sent, enqueued, ran = "before_enqueue:flashcards", f"after_enqueue:{job.id}", f"before_job:{job.id}"
        ended = f"after_job:{job.id}:COMPLETED:True"
        assert sorted(calls) == sorted([sent, enqueued, ran, ended])
        # Each side's hooks in order, and the job runs after it was sent; the producer's after_enqueue
        # and the worker's before_job (one process here) may come in either order: the worker can
        # take the job up before the producer's coroutine resumes with the add's reply.
        assert calls.index(sent) < calls.index(enqueued)
        assert calls.index(sent) < calls.index(ran) < calls.index(ended)
        assert "broken hook" in caplog.text
    finally:
        await app.queue("ai-test").obliterate(force=True)
        await app.close()


async def _settled(recorder: Recorder, job_id: str) -> None:
    from tests.conftest import wait_for

    await wait_for(lambda: any(c.startswith(f"after_job:{job_id}") for c in recorder.calls))
