"""Flows on the typed-task layer: chains, fan-out/fan-in, payloads validated before any write."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from conveyor import Conveyor, JobContext, PayloadValidationError
from conveyor.errors import InvalidFlowError
from tests.conftest import running
from tests.flows.conftest import names_in_other_slots


class Page(BaseModel):
    url: str
    words: list[str]


def make_app(url: str, base: str) -> tuple[Conveyor, list[str]]:
    fetch_q, work_q = names_in_other_slots(base, 2)
    app = Conveyor(url)

    @app.task(queue=fetch_q)
    async def fetch(ctx: JobContext, url: str) -> Page:
        return Page(url=url, words=url.split("/"))

    @app.task(queue=work_q)
    async def count(ctx: JobContext, page: Page) -> int:
        return len(page.words)

    @app.task(queue=work_q)
    def double(ctx: JobContext, n: int) -> int:  # a sync step gets the previous result too
        return n * 2

    @app.task(queue=fetch_q)
    async def collect(ctx: JobContext) -> list[Any]:
        return (await ctx.children()).ordered()

    return app, [fetch_q, work_q]


async def test_chain_passes_each_result_to_the_next_step(backend_url: str, qname: str) -> None:
    app, names = make_app(backend_url, qname)
    fetch, count, double = (app.get_task(names[0], "fetch"), app.get_task(names[1], "count"),
                            app.get_task(names[1], "double"))
    assert fetch and count and double
    try:
        job = await app.flow(app.chain(fetch.node("a/b/c"), count.then(), double.then()))
        async with running(app.worker(names[0])), running(app.worker(names[1])):
            assert await job.result(timeout=60) == 6
    finally:
        for n in names:
            await app.queue(n).obliterate(force=True)
        await app.close()


async def test_fan_out_fan_in_results_in_order(backend_url: str, qname: str) -> None:
    app, names = make_app(backend_url, qname)
    fetch, collect = app.get_task(names[0], "fetch"), app.get_task(names[0], "collect")
    assert fetch and collect
    try:
        urls = [f"x/{i}" for i in range(10)]
        job = await app.flow(app.fan_in(collect.node(), [fetch.node(u) for u in urls]))
        async with running(app.worker(names[0])):
            result = await job.result(timeout=60)
        assert [r["url"] for r in result] == urls
    finally:
        for n in names:
            await app.queue(n).obliterate(force=True)
        await app.close()


async def test_bad_payload_or_unknown_task_refused_before_any_write(backend_url: str, qname: str) -> None:
    app, names = make_app(backend_url, qname)
    fetch, collect, count = (app.get_task(names[0], "fetch"), app.get_task(names[0], "collect"),
                             app.get_task(names[1], "count"))
    assert fetch and collect and count
    try:
        with pytest.raises(PayloadValidationError):
            count.node({"url": 3})
        bogus = fetch.node("a").__class__(names[1], "nope", None)
        with pytest.raises(InvalidFlowError) as err:
            await app.flow(collect.node(children=[fetch.node("a"), bogus]))
        assert err.value.path == "root.children[1]" and "nope" in err.value.message
        for n in names:
            assert sum((await app.queue(n).counts()).values()) == 0
    finally:
        await app.close()
