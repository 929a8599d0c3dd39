"""The cost ledger against real servers (standalone and Cluster): pricing, per-tenant/task/day
totals, duplicate and bad reports, budgets with reservations, events and retention."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from conveyor.costs import Budget, CostLedger, Price, UnknownTenantError
from conveyor.costs.ledger import RunUsage, day_number
from conveyor.errors import ConfigurationError, UsageReportError
from conveyor.limits.named import Usage
from conveyor.redis.connection import RedisClient


@pytest.fixture
def ledger(client: RedisClient) -> CostLedger:
    return CostLedger(client, prefix=f"cvt{uuid.uuid4().hex[:10]}")  # a ledger of its own per test


async def test_usage_is_priced_per_model_and_summed_per_tenant_task_and_day(ledger: CostLedger) -> None:
    await ledger.set_currency("EUR")
    await ledger.set_price(Price("gpt-4o-mini", "0.15", "0.60"))
    await ledger.set_price(Price("*", 1, 2))
    cost = await ledger.record("run-1", "acme", "ai.generate", Usage.of(1_000_000, 500_000, "gpt-4o-mini"))
    assert cost == 450_000_000  # 0.15 + 0.30 EUR in nano-units
    await ledger.record("run-2", "acme", "ai.generate", Usage.of(2000, 1000, "gpt-4o-mini"))
    mixed = Usage.of(1000, 0, "gpt-4o-mini").plus(Usage.of(0, 1000, "other-model"))
    await ledger.record("run-3", "acme", "summarise", mixed)
    await ledger.record("run-4", "globex", "summarise", Usage.of(10, 20))
    await ledger.record("run-5", None, "summarise", Usage.of(1_000_000, 0))

    report = await ledger.usage()
    assert report["currency"] == "EUR"
    rows = {(r["group"], r["task"]): r for r in report["rows"]}
    assert rows["acme", "ai.generate"] == {
        "day": report["until"], "group": "acme", "task": "ai.generate", "tokens_in": 1_002_000,
        "tokens_out": 501_000, "cost": 0.4509, "cost_nano": 450_900_000, "runs": 2,
        "tokens_estimated": 0, "runs_estimated": 0}
    assert rows["acme", "summarise"]["cost_nano"] == 150_000 + 2_000_000  # 1k in at 0.15/M, 1k out at 2/M
    assert rows["globex", "summarise"]["cost_nano"] == 10 * 1000 + 20 * 2000
    assert rows[None, "summarise"]["cost_nano"] == 1_000_000_000
    assert report["totals"]["runs"] == 5
    assert report["totals"]["cost_nano"] == sum(r["cost_nano"] for r in report["rows"])
    groups = {g["group"]: g for g in report["groups"]}
    assert groups["acme"]["cost_nano"] == 450_900_000 + 2_150_000

    only = await ledger.usage(group="acme", task="summarise")
    assert [(r["group"], r["task"]) for r in only["rows"]] == [("acme", "summarise")]
    yesterday = dt.date.fromisoformat(report["until"]) - dt.timedelta(days=1)
    assert (await ledger.usage(since=yesterday, until=yesterday))["rows"] == []
    assert set(await ledger.tenants()) == {"", "acme", "globex"}


async def test_usage_reported_twice_or_bad_is_refused_and_changes_nothing(ledger: CostLedger) -> None:
    await ledger.set_price(Price("*", 1, 1))
    await ledger.record("run-1", "acme", "t", Usage.of(100, 100, "m"))
    with pytest.raises(UsageReportError, match="already recorded"):
        await ledger.record("run-1", "acme", "t", Usage.of(100, 100, "m"))
    results = await ledger.record_runs([RunUsage("run-2", "acme", "t", Usage.of(1, 1)),
                                        RunUsage("run-1", "acme", "t", Usage.of(5, 5))])
    assert [code for code, _ in results] == [0, -4]
    report = await ledger.usage(group="acme")
    assert report["totals"]["tokens_in"] == 101 and report["totals"]["runs"] == 2
    for bad in (lambda: Usage(-1, 0), lambda: Usage(0, 10**10), lambda: Usage.of(1, 1, "bad\nmodel"),
                lambda: Usage(5, 5, (("m", 1, 1),))):
        with pytest.raises(UsageReportError):
            bad()
    with pytest.raises(ConfigurationError):
        await ledger.record("run-3", "bad tenant!", "t", Usage.of(1, 1))


async def test_bad_settings_are_refused_before_anything_is_written(ledger: CostLedger) -> None:
    for bad in (lambda: Price("m", -1, 0), lambda: Price("m", 0, 10**6), lambda: Price("m", "NaN", 0),
                lambda: Price("m", float("inf"), 0), lambda: Price("", 1, 1),
                lambda: Budget(soft=None, hard=None), lambda: Budget(soft=5, hard=1),
                lambda: Budget(hard=-1), lambda: Budget(hard=10**10), lambda: Budget(period="week", hard=1),  # type: ignore[arg-type]
                lambda: Budget(hard=1, on_hard="ignore"), lambda: Budget(hard=1, estimate="x")):  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            bad()
    for call in (ledger.set_currency("usd"), ledger.set_currency("EURO"), ledger.set_retention(0),
                 ledger.set_retention(10_000), ledger.set_budget("", Budget(hard=1))):
        with pytest.raises(ConfigurationError):
            await call
    assert await ledger.settings() == {"currency": "USD", "retention_days": 90, "prices": {}}
    assert await ledger.budget_tenants() == []


async def test_unknown_tenant_is_a_clear_error(ledger: CostLedger) -> None:
    with pytest.raises(UnknownTenantError):
        await ledger.usage(group="nobody")
    with pytest.raises(UnknownTenantError):
        await ledger.clear_budget("nobody")
    with pytest.raises(UnknownTenantError):
        await ledger.budget("nobody")
    await ledger.set_budget("newco", Budget(hard=1))  # a budget may come before the first use
    assert (await ledger.usage(group="newco"))["rows"] == []


async def test_hard_budget_admits_while_spent_plus_reserved_fits(ledger: CostLedger) -> None:
    await ledger.set_price(Price("*", 1, 0))  # 1 per million tokens in: 1,000 tokens = 0.001
    await ledger.set_budget("acme", Budget(hard="0.003", soft="0.002", estimate="0.001"))
    assert await ledger.admit("a", "acme", 60_000) is None
    assert await ledger.admit("a", "acme", 60_000) is None  # a resend reserves nothing more
    assert await ledger.admit("b", "acme", 60_000) is None
    assert await ledger.admit("c", "acme", 60_000) is None
    refused = await ledger.admit("d", "acme", 60_000)  # 0 spent + 3 x 0.001 reserved: full, not over
    assert refused is not None and refused.busy and refused.reserved_nano == 3_000_000
    assert refused.on_hard == "wait" and refused.period == "day" and 0 < refused.wait_ms <= 2000
    assert "held by its running runs" in refused.message
    assert await ledger.events() == []  # not over the budget: no budget_hard
    state = await ledger.budget("acme")
    assert state["reserved_nano"] == 3_000_000 and state["running_reservations"] == 3
    assert state["status"] == "ok" and state["remaining"] == 0
    await ledger.record_runs([RunUsage("a", "acme", "t", Usage.of(1000, 0)),
                              RunUsage("b", "acme", "t", Usage.of(1000, 0)),
                              RunUsage("c", "acme", "t", None)])  # c reported nothing: freed, not counted
    state = await ledger.budget("acme")
    assert state["spent_nano"] == 2_000_000 and state["reserved_nano"] == 0 and state["status"] == "soft"
    assert await ledger.admit("d", "acme", 60_000) is None
    busy = await ledger.admit("e", "acme", 60_000)  # 2 spent + 1 reserved
    assert busy is not None and busy.busy
    await ledger.record("d", "acme", "t", Usage.of(1500, 0))  # over the estimate: 3.5 spent
    assert (await ledger.budget("acme"))["status"] == "hard"
    over = await ledger.admit("e", "acme", 60_000)
    assert over is not None and not over.busy and over.wait_ms > 2000 and "over its hard budget" in over.message
    events = await ledger.events()
    assert [e["type"] for e in reversed(events)] == ["budget_hard", "budget_soft"] or \
        [e["type"] for e in reversed(events)] == ["budget_soft", "budget_hard"]
    assert {e["type"] for e in events} == {"budget_soft", "budget_hard"} and len(events) == 2
    assert await ledger.admit("f", "acme", 60_000) is not None
    assert len(await ledger.events()) == 2  # once per period


async def test_expired_reservations_come_back(ledger: CostLedger) -> None:
    await ledger.set_budget("acme", Budget(hard=1, estimate=1))
    assert await ledger.admit("a", "acme", 50) is None
    assert await ledger.admit("b", "acme", 60_000) is not None
    import asyncio

    deadline = asyncio.get_running_loop().time() + 30
    while await ledger.admit("b", "acme", 60_000) is not None:  # a's reservation lapses after 50 ms
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)


async def test_month_budget_period_and_fail_mode_come_back_in_state(ledger: CostLedger) -> None:
    await ledger.set_budget("acme", Budget(period="month", hard=Decimal("0"), on_hard="fail"))
    refused = await ledger.admit("a", "acme", 1000)
    assert refused is not None and refused.on_hard == "fail" and refused.period == "month"
    today = await ledger.today()
    assert refused.period_id == f"{today.year}{today.month:02d}"
    first_next = dt.date(today.year + today.month // 12, today.month % 12 + 1, 1)
    state = await ledger.budget("acme")
    start_next_ms = day_number(first_next) * 86_400_000
    assert state["period_start_ms"] == day_number(today.replace(day=1)) * 86_400_000
    assert abs(state["resets_in_ms"] - refused.wait_ms) < 60_000
    assert 0 < state["resets_in_ms"] <= start_next_ms - state["period_start_ms"]
    await ledger.clear_budget("acme")
    assert await ledger.admit("a", "acme", 1000) is None


async def test_day_buckets_expire_after_the_retention(ledger: CostLedger, client: RedisClient) -> None:
    await ledger.set_retention(3)
    await ledger.record("r", "acme", "t", Usage.of(1, 1))
    today = await ledger.today()
    ttl = await client.pttl(ledger.keys.day(day_number(today), "acme"))
    assert 3 * 86_400_000 < ttl <= 4 * 86_400_000
    assert 0 < await client.pttl(ledger.keys.runs(day_number(today))) <= 2 * 86_400_000


async def test_a_run_priced_over_the_bound_is_refused_alone(ledger: CostLedger) -> None:
    """Records go in batches (a worker sends every run a trip ended together). A run whose usage at
    the prices set costs over 1,000,000 currency units is refused by itself: its reservation is
    given back and nothing of it is counted, and the other runs of the batch are recorded. Before,
    the whole batch was refused, so every other run's usage was dropped and their reservations held
    until they lapsed."""
    await ledger.set_price(Price("*", 10_000, 10_000))
    await ledger.set_budget("acme", Budget(hard=100, estimate=1))
    await ledger.set_budget("globex", Budget(hard=100, estimate=1))
    for run, tenant in (("huge", "acme"), ("fine", "globex"), ("fine-2", "acme")):
        assert await ledger.admit(run, tenant, 60_000) is None
    assert (await ledger.budget("acme"))["reserved_nano"] == 2 * 10**9
    replies = await ledger.record_runs([
        RunUsage("fine", "globex", "t", Usage.of(1000, 0)),
        RunUsage("huge", "acme", "t", Usage.of(10**9, 10**9)),  # 20,000,000 currency units
        RunUsage("fine-2", "acme", "t", Usage.of(1000, 0)),
    ])
    assert replies == [(0, 10**10), (-6, 0), (0, 10**10)]
    acme, globex = await ledger.budget("acme"), await ledger.budget("globex")
    assert acme["spent_nano"] == 10**10 and acme["reserved_nano"] == 0
    assert globex["spent_nano"] == 10**10 and globex["reserved_nano"] == 0
    with pytest.raises(UsageReportError, match="costs more than 1,000,000"):
        await ledger.record("huge-again", "acme", "t", Usage.of(10**9, 10**9))
    assert (await ledger.usage(group="acme"))["totals"]["runs"] == 1


async def test_every_running_runs_reservation_is_extended(ledger: CostLedger) -> None:
    """A worker runs up to 10,000 jobs at once and its heartbeat extends all their reservations in one
    call of `extend`. Before, `extend` sent only the first 1,000 pairs: the other runs' reservations
    lapsed while they still ran, and the budget admitted runs in their place."""
    await ledger.set_budget("acme", Budget(hard=10_000, estimate="0.001"))
    runs = [("acme", f"run-{i}") for i in range(1500)]
    for tenant, run in runs:
        assert await ledger.admit(run, tenant, 120_000) is None
    assert await ledger.extend(runs, 600_000) == 1500
    expiries = await ledger.client.zrange(f"{ledger.prefix}:{{costs}}:rx:acme", 0, -1, withscores=True)
    now_ms = (await ledger.client.time())[0] * 1000
    assert len(expiries) == 1500 and all(score > now_ms + 300_000 for _, score in expiries)
