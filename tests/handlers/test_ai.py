"""AI generation against a real OpenAI-compatible HTTP server: fallback, 429 backpressure, circuit
breaking shared through Redis, timeouts and structured output, through the official SDK."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from conveyor import Conveyor, JobFailedError, JobState, Middleware, RateLimited, Retry, Unrecoverable
from conveyor.handlers import install
from conveyor.handlers.ai import GenerateRequest, Generator, build_generator
from conveyor.settings import Settings
from tests.conftest import running, wait_for
from tests.handlers.conftest import provider
from tests.handlers.servers import ChatServer


class CostSpy(Middleware):
    def __init__(self) -> None:
        self.costs: list[int | None] = []

    async def after_job(self, ctx: Any, outcome: Any) -> None:
        self.costs.append(ctx.cost_used)


def gen_for(
    app: Conveyor,
    chat: ChatServer,
    *modes: str,
    failures: int = 5,
    cooldown_s: float = 30.0,
    timeout_s: float = 5.0,
) -> Generator:
    settings = Settings(ai_breaker_failures=failures, ai_breaker_cooldown_s=cooldown_s)
    return build_generator(app, settings, [provider(chat, m, timeout_s=timeout_s) for m in modes])


PROMPT = GenerateRequest(prompt="hello")


async def test_generate_through_a_worker_records_usage_cost_and_progress(app: Conveyor, chat: ChatServer) -> None:
    handlers = install(app, ai=True, settings=Settings(), ai_providers=[provider(chat, "ok")])
    assert handlers.ai is not None
    spy = CostSpy()
    job = await handlers.ai.generate.enqueue({"prompt": "hello", "system": "be brief"})
    async with running(app.worker("ai", middleware=[spy], lease_ms=5000)):
        result = await job.result(timeout=30)
    assert result.text == "echo: hello"
    assert result.provider == "ok" and result.model == "test-model"
    assert result.usage.total_tokens == 16
    assert spy.costs == [16]
    assert (await job.record()).progress == {"stage": "generating", "provider": "ok"}
    sent = chat.calls[0][1]
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"},
    ]


async def test_no_provider_fails_at_once_with_a_clear_message(app: Conveyor) -> None:
    handlers = install(app, ai=True, settings=Settings(), ai_providers=[])
    assert handlers.ai is not None
    job = await handlers.ai.generate.enqueue({"prompt": "hi"})
    async with running(app.worker("ai", lease_ms=5000)):
        with pytest.raises(JobFailedError, match="CONVEYOR_AI_PROVIDERS"):
            await job.result(timeout=30)
    rec = await job.record()
    assert rec.attempts_made == 1 and rec.max_attempts == 3


async def test_500_falls_back_to_the_next_provider_and_counts_a_failure(app: Conveyor, chat: ChatServer) -> None:
    gen = gen_for(app, chat, "fail", "ok")
    result = await gen.run(PROMPT)
    assert result.provider == "ok"
    assert [a.outcome for a in result.attempts] == ["error", "ok"]
    assert (await gen.breaker.state("fail"))["failures"] == "1"
    assert chat.count("fail") == 1 and chat.count("ok") == 1


async def test_a_slow_provider_times_out_and_the_next_answers(app: Conveyor, chat: ChatServer) -> None:
    chat.slow_s = 3.0
    gen = gen_for(app, chat, "slow", "ok", timeout_s=0.4)
    result = await gen.run(PROMPT)
    assert result.provider == "ok"
    assert result.attempts[0].outcome == "timeout"


async def test_a_429_holds_the_provider_and_the_job_waits_without_an_attempt(app: Conveyor, chat: ChatServer) -> None:
    gen = gen_for(app, chat, "limited")
    with pytest.raises(RateLimited) as info:
        await gen.run(PROMPT)
    assert 5.0 <= info.value.retry_after <= 7.0
    with pytest.raises(RateLimited):
        await gen.run(PROMPT)
    assert chat.count("limited") == 1, "a held provider is not called again before its Retry-After"

    handlers = install(app, ai=True, settings=Settings(), ai_providers=[provider(chat, "limited", name="other")])
    assert handlers.ai is not None
    job = await handlers.ai.generate.enqueue({"prompt": "x"}, attempts=1)
    async with running(app.worker("ai", lease_ms=5000)):
        await wait_for(lambda: _is(job, JobState.DELAYED), what="job waits for the Retry-After")
    rec = await job.record()
    assert rec.state is JobState.DELAYED and rec.error is None


async def test_a_503_with_retry_after_holds_the_provider_without_opening_its_circuit(
    app: Conveyor, chat: ChatServer
) -> None:
    """A provider answering 503 with Retry-After says "come back later", as a 429 does: it is held for
    that long (fleet-wide) and the job waits without an attempt, and no breaker failure is counted.
    Before, the 503 counted as a failure (one was enough to open this circuit for 30 s) and its
    Retry-After was ignored."""
    gen = gen_for(app, chat, "busy", failures=1, cooldown_s=30)
    with pytest.raises(RateLimited) as info:
        await gen.run(PROMPT)
    assert 5.0 <= info.value.retry_after <= 7.0
    state = await gen.breaker.state("busy")
    assert "failures" not in state and "open_until" not in state and "hold_until" in state
    with pytest.raises(RateLimited):
        await gen.run(PROMPT)
    assert chat.count("busy") == 1, "a held provider is not called again before its Retry-After"

    await gen.breaker.record_success("busy")  # the hold is cleared: the provider is asked again
    chat.retry_after = "99999"  # bounded like every other Retry-After: at most an hour
    with pytest.raises(RateLimited) as info:
        await gen.run(PROMPT)
    assert chat.count("busy") == 2 and 3000 < info.value.retry_after <= 3600
    assert "failures" not in await gen.breaker.state("busy")


async def test_a_503_without_retry_after_is_a_failure(app: Conveyor, chat: ChatServer) -> None:
    chat.retry_after = ""
    gen = gen_for(app, chat, "busy", "ok", failures=5)
    result = await gen.run(PROMPT)
    assert [a.outcome for a in result.attempts] == ["error", "ok"]
    assert (await gen.breaker.state("busy"))["failures"] == "1"


async def _is(job: Any, state: JobState) -> bool:
    return await job.state() is state


async def test_circuit_opens_is_shared_and_half_opens_after_cooldown(app: Conveyor, chat: ChatServer) -> None:
    # A 5 s cool-down: the circuit-open checks below run well inside it even on a busy machine.
    gen = gen_for(app, chat, "fail", "ok", failures=2, cooldown_s=5.0)
    for _ in range(2):
        assert (await gen.run(PROMPT)).provider == "ok"
    assert chat.count("fail") == 2
    skipped = await gen.run(PROMPT)
    assert skipped.attempts[0].outcome == "circuit_open"
    other_worker = gen_for(app, chat, "fail", "ok", failures=2, cooldown_s=5.0)
    assert (await other_worker.run(PROMPT)).attempts[0].outcome == "circuit_open"
    assert chat.count("fail") == 2, "an open circuit is skipped by every worker"

    await wait_for(lambda: _closed(gen, "fail"), timeout=30, what="cool-down over")
    await gen.run(PROMPT)
    assert chat.count("fail") == 3, "half-open lets a call through"
    state = await gen.breaker.state("fail")
    assert state["trips"] == "2", "one failure while half-open reopens the circuit"
    assert await gen.breaker.open_for("fail") > 0


async def _closed(gen: Generator, name: str) -> bool:
    return await gen.breaker.open_for(name) == 0


async def test_success_closes_the_circuit(app: Conveyor, chat: ChatServer) -> None:
    gen = gen_for(app, chat, "fail", failures=5)
    with pytest.raises(Retry):
        await gen.run(PROMPT)
    assert (await gen.breaker.state("fail"))["failures"] == "1"
    ok = gen_for(app, chat, "ok")
    await ok.breaker.record_failure("ok")
    await ok.run(PROMPT)
    assert await ok.breaker.state("ok") == {}


async def test_only_provider_with_an_open_circuit_makes_the_job_wait(app: Conveyor, chat: ChatServer) -> None:
    gen = gen_for(app, chat, "fail", failures=1, cooldown_s=30)
    with pytest.raises(Retry, match="fail: error 500"):
        await gen.run(PROMPT)
    with pytest.raises(RateLimited) as info:
        await gen.run(PROMPT)
    assert 20 < info.value.retry_after <= 30
    assert chat.count("fail") == 1


SPOILED = ["nan", "inf", "-inf", "1e400", "-5", "2.5", "soon", "1e15"]


@pytest.mark.parametrize("value", SPOILED)
async def test_a_spoiled_breaker_state_reads_as_unset(app: Conveyor, chat: ChatServer, value: str) -> None:
    """Breaker fields edited by hand into something no script writes read as unset: the provider is
    called, its failures open the circuit for the cool-down, and a 429 holds it. Before, `inf` (or
    1e400, or a far-off time) in `open_until` kept the circuit from ever opening while the provider
    failed (the wait read as a huge negative number), `inf` in `hold_until` made every hold a no-op,
    and text or a spoiled `failures` count failed every breaker script with a Redis error."""
    gen = gen_for(app, chat, "fail", "limited", failures=2, cooldown_s=30)
    key = f"{app.prefix}:{{breakers}}:"
    await app.client.hset(key + "fail", mapping={"open_until": value, "failures": value, "trips": value})
    await app.client.hset(key + "limited", "hold_until", value)
    assert await gen.breaker.open_for("fail") == 0 and await gen.breaker.open_for("limited") == 0

    with pytest.raises(Retry):  # fail: a failure; limited: held for its Retry-After
        await gen.run(PROMPT)
    with pytest.raises(Retry):  # fail: its second failure opens the circuit
        await gen.run(PROMPT)
    assert chat.count("fail") == 2 and chat.count("limited") == 1, "the 429 held the provider"
    assert 0 < await gen.breaker.open_for("fail") <= 30
    with pytest.raises(RateLimited) as info:
        await gen.run(PROMPT)
    assert chat.count("fail") == 2 and chat.count("limited") == 1, "an open circuit and a hold are skipped"
    assert 0 < info.value.retry_after <= 30
    assert (await gen.breaker.state("fail"))["trips"] == "1"


async def test_structured_output_is_sent_and_validated_against_the_schema(app: Conveyor, chat: ChatServer) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    chat.replies["person"] = {"name": "Ada", "age": 36}
    gen = gen_for(app, chat, "garbage", "ok")
    result = await gen.run(GenerateRequest(prompt="who?", json_schema=schema, schema_name="person"))
    assert result.data == {"name": "Ada", "age": 36}
    assert [a.outcome for a in result.attempts] == ["invalid_output", "ok"]
    fmt = chat.calls[-1][1]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == schema
    assert result.usage.total_tokens == 32, "tokens of the rejected answer are counted too"


async def test_a_typed_model_validates_the_output(app: Conveyor, chat: ChatServer) -> None:
    class Person(BaseModel):
        name: str
        age: int

    chat.replies["output"] = {"name": "Ada", "age": "not a number"}
    gen = gen_for(app, chat, "ok")
    with pytest.raises(Retry, match="invalid_output"):
        await gen.run(PROMPT, output=Person)
    chat.replies["output"] = {"name": "Ada", "age": 36}
    assert (await gen.run(PROMPT, output=Person)).data == {"name": "Ada", "age": 36}


async def test_bad_input_is_unrecoverable(app: Conveyor, chat: ChatServer) -> None:
    gen = gen_for(app, chat, "ok")
    with pytest.raises(Unrecoverable, match="not a valid JSON Schema"):
        await gen.run(GenerateRequest(prompt="x", json_schema={"type": "nonsense"}))
    with pytest.raises(Unrecoverable, match="unknown AI providers"):
        await gen.run(GenerateRequest(prompt="x", providers=["nope"]))
    gen.max_input_chars = 10
    with pytest.raises(Unrecoverable, match="over the limit"):
        await gen.run(GenerateRequest(prompt="x" * 11))
    assert chat.calls == []


async def test_a_rejected_key_moves_on_to_the_next_provider(app: Conveyor, chat: ChatServer) -> None:
    from conveyor.handlers.ai import Provider, ProviderChain

    gen = gen_for(app, chat, "ok")
    gen.chain = ProviderChain(
        [
            Provider("wrongkey", chat.base_url("ok"), "m", "bad-key"),
            provider(chat, "ok"),
        ]
    )
    result = await gen.run(PROMPT)
    assert [a.outcome for a in result.attempts] == ["rejected", "ok"]


async def test_generate_reports_provider_usage_to_named_limiters(app: Conveyor, chat: ChatServer) -> None:
    """The built-in AI handler corrects the named limiters its queue uses from the provider's usage,
    with nothing in the handler's code."""
    from conveyor.limits import Estimate, Limiter, LimiterUse, RateLimit, SharedLimiter

    name = f"ai:{id(app)}"
    app.limiter(Limiter(name, tokens=RateLimit(100_000, per_s=60), concurrency=2))
    app.declare_queue("ai", limiters=[LimiterUse(name, Estimate(tokens_in=500, tokens_out=500))])
    handlers = install(app, ai=True, settings=Settings(), ai_providers=[provider(chat, "ok")])
    assert handlers.ai is not None
    job = await handlers.ai.generate.enqueue({"prompt": "hello"})
    async with running(app.worker("ai", lease_ms=5000)):
        await job.result(timeout=30)
    lim = SharedLimiter(app.client, name, app.prefix)
    await wait_for(lambda: _released(lim), timeout=30, what="the limiter released")
    state = await lim.state()
    assert state["totals"]["tokens_in"] == 11 and state["totals"]["tokens_out"] == 5
    assert state["totals"]["ok"] == 1
    assert state["levels"]["tokens"]["available"] >= 1  # 1,000 estimated, 16 used: refunded
    await app.client.delete(*lim.keys.all)


async def _released(lim: Any) -> bool:
    return (await lim.state())["concurrency"]["held"] == 0 and (await lim.state())["totals"]["ok"] == 1
