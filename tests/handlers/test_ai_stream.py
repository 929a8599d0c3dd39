"""The AI handlers stream the provider's tokens into the job's output, against the real local
OpenAI-compatible server (which streams as OpenAI does and can hold a stream half-way)."""

from __future__ import annotations

import json
from typing import Any

from conveyor import Conveyor, JobState
from conveyor.costs import CostLedger
from conveyor.handlers import install
from conveyor.handlers.ai.providers import Provider
from conveyor.settings import Settings
from tests.conftest import running, wait_for
from tests.handlers.conftest import provider
from tests.handlers.servers import ChatServer

CARDS = {"cards": [{"front": f"Question {i}?", "back": f"Answer {i}"} for i in range(6)]}


async def test_flashcards_appear_in_the_output_while_the_answer_streams(app: Conveyor, chat: ChatServer) -> None:
    chat.replies["flashcards"] = CARDS
    chat.hold_after = 4  # 4 chunks of 8 characters, then the stream waits for `release`
    handlers = install(app, ai=True, settings=Settings(), ai_providers=[provider(chat, "ok")])
    assert handlers.ai is not None
    job = await handlers.ai.flashcards.enqueue({"content": "six facts", "count": 6})
    queue = app.queue("ai")
    full = json.dumps(CARDS)
    async with running(app.worker("ai", lease_ms=5000)):

        async def partial() -> bool:
            out = await queue.get_output(job.id)
            return out is not None and len(out.text) >= 32

        await wait_for(partial, what="the first streamed chunks in the job's output")
        out = await queue.get_output(job.id)
        assert out is not None and out.text == full[:32]  # the held half is not there yet
        assert await queue.get_state(job.id) == JobState.ACTIVE
        chat.release.set()
        result = await job.result(timeout=30)
    assert len(result.cards) == 6 and result.usage.total_tokens == 16  # usage from the stream's last chunk
    out = await queue.get_output(job.id)
    assert out is not None and out.text == full and not out.truncated
    sent = chat.calls[0][1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


async def test_a_provider_that_does_not_stream_is_asked_whole(app: Conveyor, chat: ChatServer) -> None:
    """A provider with `stream: false` is asked for a whole answer, which is published to the job's
    output in one piece when it arrives. Before, nothing was ever published: someone following the
    job's output saw no answer at all."""
    plain = Provider("plain", chat.base_url("ok"), "test-model", "test-key", 30.0, stream=False)
    chat.hold_after = 0  # the whole answer waits for `release`
    handlers = install(app, ai=True, settings=Settings(), ai_providers=[plain])
    assert handlers.ai is not None
    job = await handlers.ai.generate.enqueue({"prompt": "hello"})
    queue = app.queue("ai")
    async with running(app.worker("ai", lease_ms=5000)):
        await wait_for(lambda: len(chat.calls) == 1, what="the provider asked")
        out = await queue.get_output(job.id)
        assert out is not None and out.text == "", "nothing is published before the answer arrives"
        chat.release.set()
        result = await job.result(timeout=30)
    assert result.text == "echo: hello" and result.usage.total_tokens == 16
    assert "stream" not in chat.calls[0][1]
    out = await queue.get_output(job.id)
    assert out is not None and out.text == "echo: hello" and out.attempt == 1 and not out.truncated


async def test_a_fallback_after_a_streamed_bad_answer_is_marked_in_the_output(
    app: Conveyor, chat: ChatServer
) -> None:
    chat.replies["flashcards"] = CARDS
    handlers = install(
        app, ai=True, settings=Settings(), ai_providers=[provider(chat, "garbage"), provider(chat, "ok")]
    )
    assert handlers.ai is not None
    job = await handlers.ai.flashcards.enqueue({"content": "six facts", "count": 6})
    async with running(app.worker("ai", lease_ms=5000)):
        result: Any = await job.result(timeout=30)
    assert result.provider == "ok"
    out = await app.queue("ai").get_output(job.id)
    assert out is not None
    assert out.text == '{"unexpected": true}' + "\n\n[garbage: invalid_output; trying ok]\n\n" + json.dumps(CARDS)


async def test_a_stream_cut_mid_answer_is_charged_an_estimate(app: Conveyor, chat: ChatServer) -> None:
    """A provider whose stream drops mid-answer sends no usage chunk, yet billed the prompt and the
    partial answer: the tenant is charged an estimate (a token per 4 characters of the prompt and of
    the text received), marked `estimated` in the result's usage. Before, those tokens were never
    charged to the tenant's costs or budget."""
    chat.cut_after = 5  # 5 chunks of 8 characters, then the connection drops
    handlers = install(app, ai=True, settings=Settings(), ai_providers=[provider(chat, "cut"), provider(chat, "ok")])
    assert handlers.ai is not None
    job = await handlers.ai.generate.enqueue({"prompt": "y" * 100}, group="acme")
    ledger = CostLedger(app.client, app.prefix)
    async with running(app.worker("ai", lease_ms=5000, costs=True)):
        result = await job.result(timeout=30)
        await wait_for(lambda: _recorded(ledger), what="the run recorded in the cost ledger")
    assert [(a.provider, a.outcome) for a in result.attempts] == [("cut", "error"), ("ok", "ok")]
    # cut: 100 characters of prompt -> 25 tokens, 40 characters received -> 10; ok: 11 + 5 as reported
    assert result.usage.model_dump() == {
        "prompt_tokens": 36, "completion_tokens": 15, "total_tokens": 51, "estimated": True
    }
    totals = (await ledger.usage(group="acme"))["totals"]
    assert totals["tokens_in"] == 36 and totals["tokens_out"] == 15 and totals["runs"] == 1
    # The ledger tells the cut provider's estimate (25 + 10) from the reported 11 + 5.
    assert totals["tokens_estimated"] == 35 and totals["runs_estimated"] == 1
    out = await app.queue("ai").get_output(job.id)
    assert out is not None and out.text.startswith("echo: " + "y" * 34 + "\n\n[cut: error; trying ok]")


async def _recorded(ledger: CostLedger) -> bool:
    try:
        report = await ledger.usage(group="acme")
    except LookupError:
        return False
    return int(report["totals"]["runs"]) >= 1


async def _stream_held_mid_answer(app: Conveyor, chat: ChatServer, **options: Any) -> Any:
    """A generate job for tenant acme whose provider streams 5 chunks of 8 characters, then holds
    (no finish, no usage chunk) until the server closes."""
    chat.hold_after = 5
    handlers = install(app, ai=True, settings=Settings(), ai_providers=[provider(chat, "ok", timeout_s=120.0)])
    assert handlers.ai is not None
    return await handlers.ai.generate.enqueue({"prompt": "y" * 100}, group="acme", **options)


async def _partial(app: Conveyor, job_id: str, chars: int = 40) -> bool:
    out = await app.queue("ai").get_output(job_id)
    return out is not None and len(out.text) >= chars


async def test_a_stream_cancelled_mid_answer_is_charged_an_estimate(app: Conveyor, chat: ChatServer) -> None:
    """A job cancelled while its provider streams has been billed the prompt and the partial answer:
    the run ends cancelled and the tenant is charged the estimate (a token per 4 characters of the
    prompt and of the text received). Before, a cancelled run was charged nothing."""
    job = await _stream_held_mid_answer(app, chat)
    ledger = CostLedger(app.client, app.prefix)
    queue = app.queue("ai")
    async with running(app.worker("ai", lease_ms=3000, costs=True)):
        await wait_for(lambda: _partial(app, job.id), what="the partial answer in the job's output")
        await job.cancel()
        await wait_for(lambda: _state_is(app, job.id, JobState.CANCELLED), what="the job cancelled")
        await wait_for(lambda: _recorded(ledger), what="the run recorded in the cost ledger")
    # 100 characters of prompt -> 25 tokens, 40 characters received -> 10
    totals = (await ledger.usage(group="acme"))["totals"]
    assert totals["tokens_in"] == 25 and totals["tokens_out"] == 10 and totals["runs"] == 1
    assert await queue.get_state(job.id) == JobState.CANCELLED


async def test_a_stream_cancelled_after_its_usage_chunk_is_charged_that_usage(
    app: Conveyor, chat: ChatServer
) -> None:
    """A job cancelled after its provider sent the usage chunk (the stream not yet closed) is charged
    the usage the provider reported, not an estimate. Before, it was charged nothing."""
    chat.hold_before_done = True
    handlers = install(app, ai=True, settings=Settings(), ai_providers=[provider(chat, "ok", timeout_s=120.0)])
    assert handlers.ai is not None
    job = await handlers.ai.generate.enqueue({"prompt": "y" * 100}, group="acme")
    ledger = CostLedger(app.client, app.prefix)
    async with running(app.worker("ai", lease_ms=3000, costs=True)):
        await wait_for(lambda: chat.held_before_done == 1, what="the usage chunk sent")
        await wait_for(lambda: _partial(app, job.id, len("echo: ") + 100), what="the whole answer in the output")
        await job.cancel()
        await wait_for(lambda: _state_is(app, job.id, JobState.CANCELLED), what="the job cancelled")
        await wait_for(lambda: _recorded(ledger), what="the run recorded in the cost ledger")
    totals = (await ledger.usage(group="acme"))["totals"]
    assert totals["tokens_in"] == 11 and totals["tokens_out"] == 5 and totals["runs"] == 1  # as reported
    assert totals["tokens_estimated"] == 0 and totals["runs_estimated"] == 0


async def test_a_stream_timed_out_mid_answer_is_charged_an_estimate(app: Conveyor, chat: ChatServer) -> None:
    """A job whose timeout runs out while its provider streams is charged the partial answer's
    estimate, as a failed stream is, and still fails as timed out. Before, it was charged nothing."""
    job = await _stream_held_mid_answer(app, chat, timeout=5, attempts=1)
    ledger = CostLedger(app.client, app.prefix)
    async with running(app.worker("ai", lease_ms=3000, costs=True)):
        await wait_for(lambda: _partial(app, job.id), what="the partial answer in the job's output")
        await wait_for(lambda: _state_is(app, job.id, JobState.FAILED), what="the job timed out")
        await wait_for(lambda: _recorded(ledger), what="the run recorded in the cost ledger")
    totals = (await ledger.usage(group="acme"))["totals"]
    assert totals["tokens_in"] == 25 and totals["tokens_out"] == 10 and totals["runs"] == 1
    record = await app.queue("ai").get_job(job.id)
    assert record is not None and record.error is not None and record.error["type"] == "JobTimeoutError"


async def _state_is(app: Conveyor, job_id: str, state: JobState) -> bool:
    return await app.queue("ai").get_state(job_id) == state
