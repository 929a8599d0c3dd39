"""Prompt-level de-duplication against the real local OpenAI-compatible server, counting its calls:
identical requests in flight share one call (within a process and across generators that share only
Redis), a killed leader's followers take over after its lease, and reuse of completed results is off
by default and works with a TTL."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor
from conveyor.handlers import install
from conveyor.handlers.ai import GenerateRequest, Generator, build_generator
from conveyor.redis.connection import connect
from conveyor.settings import Settings
from tests.conftest import running, wait_for
from tests.handlers.conftest import provider
from tests.handlers.servers import ChatServer

ROOT = Path(__file__).resolve().parents[2]


class Gens:
    """Generators of one test; their Redis connections carry this test's name (see waiting)."""

    def __init__(self, app: Conveyor, chat: ChatServer) -> None:
        self.app, self.chat = app, chat
        self.name = f"dedupe-{uuid.uuid4().hex[:8]}"
        self.client = connect(str(app.redis_url), client_name=self.name)

    def __call__(self, **settings: Any) -> Generator:
        generator = build_generator(self.app, Settings(**settings), [provider(self.chat, "ok")])
        assert generator.dedupe is not None
        generator.dedupe._client = lambda: self.client
        return generator

    async def waiting(self) -> bool:
        """A follower of this test blocks in Redis (BLPOP) for its leader's result."""
        clients = await self.app.client.client_list()
        return any(c.get("cmd") == "blpop" and c.get("name") == self.name for c in clients)


@pytest.fixture
async def gen(app: Conveyor, chat: ChatServer) -> AsyncIterator[Gens]:
    gens = Gens(app, chat)
    yield gens
    await gens.client.aclose()


async def test_identical_requests_in_flight_share_one_provider_call(
    app: Conveyor, chat: ChatServer, gen: Gens
) -> None:
    chat.hold_after = 0  # the leader's answer waits until the followers wait
    generators = [gen(), gen()]  # two "processes": they share only Redis
    request = GenerateRequest(prompt="explain photosynthesis", temperature=0.2)
    leader = asyncio.create_task(generators[0].run(request))
    await wait_for(lambda: len(chat.calls) == 1, what="the leader's call reached the provider")
    followers = [asyncio.create_task(g.run(request)) for g in generators for _ in range(3)]
    await wait_for(gen.waiting, what="a follower waiting in Redis")
    other = asyncio.create_task(generators[1].run(GenerateRequest(prompt="explain photosynthesis", temperature=0.3)))
    await wait_for(lambda: len(chat.calls) == 2, what="a request with other parameters gets its own call")
    chat.release.set()
    first = await leader
    shared = await asyncio.gather(*followers)
    assert (await other).text == first.text == "echo: explain photosynthesis"
    assert len(chat.calls) == 2  # 8 requests: 7 identical share one call, 1 differs
    assert not first.deduplicated and first.usage.total_tokens == 16
    assert all(r.deduplicated and r.text == first.text and r.usage.total_tokens == 0 for r in shared)
    assert generators[0].dedupe is not None and generators[1].dedupe is not None
    assert generators[0].dedupe.calls == 1 and generators[1].dedupe.calls == 1  # the leader's and `other`


async def test_completed_results_are_reused_only_with_a_ttl(app: Conveyor, chat: ChatServer, gen: Gens) -> None:
    request = GenerateRequest(prompt="again")
    plain = gen()
    assert not (await plain.run(request)).deduplicated and not (await plain.run(request)).deduplicated
    assert len(chat.calls) == 2  # off by default: each completed request calls again
    reusing = gen(ai_reuse_ttl_s=60)
    first, second = await reusing.run(request), await reusing.run(request)
    assert not first.deduplicated and second.deduplicated and second.text == first.text
    assert len(chat.calls) == 3
    assert not (await reusing.run(GenerateRequest(prompt="again", dedupe=False))).deduplicated
    assert len(chat.calls) == 4


async def test_a_killed_leader_does_not_block_its_followers(
    app: Conveyor, chat: ChatServer, gen: Gens, redis_url: str
) -> None:
    chat.hold_after = 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    leader = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.handlers.dedupe_leader", redis_url, app.prefix, chat.base_url("ok"),
        cwd=ROOT, env=env,
    )
    try:
        await wait_for(lambda: len(chat.calls) == 1, what="the leader process called the provider")
        chat.hold_after = None  # the provider answers the next call at once (the leader's stays held)
        follower = asyncio.create_task(gen().run(GenerateRequest(prompt="shared")))
        await wait_for(gen.waiting, what="the follower waiting for the leader's 5 s lease")
        leader.send_signal(signal.SIGKILL)
        await asyncio.wait_for(leader.wait(), 30)
        result = await asyncio.wait_for(follower, 60)
    finally:
        if leader.returncode is None:
            leader.kill()
            await leader.wait()
        chat.release.set()
    assert result.text == "echo: shared" and not result.deduplicated  # it led the call after the lease expired
    assert len(chat.calls) == 2


async def test_jobs_through_a_worker_share_a_call_and_report_cost_once(app: Conveyor, chat: ChatServer) -> None:
    chat.hold_after = 0
    handlers = install(app, ai=True, settings=Settings(), ai_providers=[provider(chat, "ok")])
    assert handlers.ai is not None
    jobs = [await handlers.ai.generate.enqueue({"prompt": "same"}) for _ in range(3)]
    async with running(app.worker("ai", lease_ms=5000, concurrency=3)):
        await wait_for(lambda: len(chat.calls) == 1, what="one provider call")

        async def all_active() -> bool:
            return all([(await j.record()).state.value == "active" for j in jobs])

        await wait_for(all_active, what="the three jobs running together")
        chat.release.set()
        results = [await j.result(timeout=30) for j in jobs]
    assert len(chat.calls) == 1
    assert sorted(r.deduplicated for r in results) == [False, True, True]
    assert sum(r.usage.total_tokens for r in results) == 16
    for job in jobs:
        out = await app.queue("ai").get_output(job.id)
        assert out is not None and out.text == "echo: same"  # followers get the shared answer as their output


async def test_jobs_of_different_groups_do_not_share(app: Conveyor, chat: ChatServer) -> None:
    chat.hold_after = 0
    handlers = install(app, ai=True, settings=Settings(), ai_providers=[provider(chat, "ok")])
    assert handlers.ai is not None
    jobs = [await handlers.ai.generate.enqueue({"prompt": "same"}, group=g) for g in ("tenant-a", "tenant-b")]
    async with running(app.worker("ai", lease_ms=5000, concurrency=2)):
        await wait_for(lambda: len(chat.calls) == 2, what="one call per tenant")
        chat.release.set()
        results = [await j.result(timeout=30) for j in jobs]
    assert [r.deduplicated for r in results] == [False, False]


@pytest.mark.parametrize("stored", ["garbage", '{"text": 5}', '{"text": "old", "provider": "x"}'])
async def test_a_stored_result_that_cannot_be_read_is_replaced_by_a_call(
    app: Conveyor, chat: ChatServer, gen: Gens, stored: str
) -> None:
    """A reused (or shared) result that is not a result of this version (edited by hand, or stored
    by a release whose result had other fields) is dropped and the request calls its provider, whose
    answer is stored in its place. Before, every identical request failed on it for as long as it was
    kept (up to 30 days with reuse)."""
    request = GenerateRequest(prompt="spoiled")
    reusing = gen(ai_reuse_ttl_s=600)
    first = await reusing.run(request)
    [done] = [k async for k in app.client.scan_iter(match=f"{app.prefix}:{{aid:*}}:done")]
    await app.client.set(done, stored, px=600_000)
    again = await reusing.run(request)
    assert not again.deduplicated and again.text == first.text == "echo: spoiled"
    assert len(chat.calls) == 2
    third = await reusing.run(request)  # answered from the result stored in its place
    assert third.deduplicated and third.text == first.text and len(chat.calls) == 2
