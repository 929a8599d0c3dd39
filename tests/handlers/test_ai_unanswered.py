"""A provider call cut short before any text came back (the job cancelled, the call timed out) has
still been billed the prompt: the run is charged the prompt's estimate, against the real local
OpenAI-compatible server holding its answer."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import Conveyor, JobState
from conveyor.costs import Budget, CostLedger, Price
from conveyor.handlers import install
from conveyor.handlers.ai.providers import Provider
from conveyor.settings import Settings
from tests.conftest import running, wait_for
from tests.handlers.servers import ChatServer

PROMPT = "y" * 100  # 25 tokens at one per 4 characters


async def _setup(app: Conveyor, chat: ChatServer, *, stream: bool, timeout_s: float, **options: Any) -> Any:
    """A generate job of tenant acme (with a budget, so its run holds a reservation) whose provider
    holds its answer: a stream sends nothing before `release`, a whole answer waits for it too."""
    ledger = CostLedger(app.client, app.prefix)
    await ledger.set_price(Price("*", 1, 0))
    await ledger.set_budget("acme", Budget(period="month", hard=1000, estimate=5))
    chat.hold_after = 0
    held = Provider("held", chat.base_url("ok"), "test-model", "test-key", timeout_s, stream=stream)
    handlers = install(app, ai=True, settings=Settings(), ai_providers=[held])
    assert handlers.ai is not None
    return await handlers.ai.generate.enqueue({"prompt": PROMPT}, group="acme", **options)


async def _recorded(ledger: CostLedger) -> bool:
    try:
        report = await ledger.usage(group="acme")
    except LookupError:
        return False
    return int(report["totals"]["runs"]) >= 1


async def _state_is(app: Conveyor, job_id: str, state: JobState) -> bool:
    return await app.queue("ai").get_state(job_id) == state


async def _check_charged_once(ledger: CostLedger) -> None:
    """The prompt's estimate recorded for one run, and the run's reservation given back."""
    totals = (await ledger.usage(group="acme"))["totals"]
    assert totals["tokens_in"] == 25 and totals["tokens_out"] == 0 and totals["runs"] == 1
    assert totals["tokens_estimated"] == 25 and totals["runs_estimated"] == 1  # marked as an estimate
    budget = await ledger.budget("acme")
    assert budget["reserved_nano"] == 0 and budget["running_reservations"] == 0
    assert budget["spent_nano"] == 25 * 1000  # 25 tokens at 1 per million


@pytest.mark.parametrize("stream", [True, False], ids=["stream-before-any-text", "whole-answer"])
async def test_a_call_cancelled_before_any_text_is_charged_the_prompt(
    app: Conveyor, chat: ChatServer, stream: bool
) -> None:
    """Before, a job cancelled while its provider had sent no text yet (a stream) or still worked on
    its whole answer was charged nothing."""
    job = await _setup(app, chat, stream=stream, timeout_s=120.0)
    ledger = CostLedger(app.client, app.prefix)
    async with running(app.worker("ai", lease_ms=3000, costs=True)):
        await wait_for(lambda: len(chat.calls) == 1, what="the provider asked")
        await job.cancel()
        await wait_for(lambda: _state_is(app, job.id, JobState.CANCELLED), what="the job cancelled")
        await wait_for(lambda: _recorded(ledger), what="the run recorded in the cost ledger")
    await _check_charged_once(ledger)


async def test_a_whole_answer_timed_out_is_charged_the_prompt(app: Conveyor, chat: ChatServer) -> None:
    """A non-streaming call that passes the provider's timeout (the job then fails: one attempt) is
    charged the prompt's estimate. Before, it was charged nothing."""
    job = await _setup(app, chat, stream=False, timeout_s=1.0, attempts=1)
    ledger = CostLedger(app.client, app.prefix)
    async with running(app.worker("ai", lease_ms=3000, costs=True)):
        await wait_for(lambda: _state_is(app, job.id, JobState.FAILED), what="the job failed")
        await wait_for(lambda: _recorded(ledger), what="the run recorded in the cost ledger")
    await _check_charged_once(ledger)
    record = await app.queue("ai").get_job(job.id)
    assert record is not None and record.error is not None and "timeout" in str(record.error)
