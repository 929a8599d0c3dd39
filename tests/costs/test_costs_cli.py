"""`conveyor costs` (usage), `costs budgets|set-budget|clear-budget|set-price|settings` as an
operator runs them (a subprocess against a real server): output, --json, one-line errors."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from conveyor.costs import CostLedger
from conveyor.limits.named import Usage
from conveyor.redis.connection import RedisClient
from tests.cli.run import as_json, error_line, ok


async def _json(*args: str, url: str, prefix: str) -> Any:
    return await asyncio.to_thread(as_json, *args, "--prefix", prefix, redis_url=url)


async def _text(*args: str, url: str, prefix: str) -> str:
    return await asyncio.to_thread(ok, *args, "--prefix", prefix, redis_url=url)


async def test_costs_cli_shows_usage_and_manages_budgets(plain_client: RedisClient, redis_url: str) -> None:
    prefix = f"cli{uuid.uuid4().hex[:10]}"
    settings = await _json("costs", "settings", "--currency", "EUR", url=redis_url, prefix=prefix)
    assert settings["currency"] == "EUR"
    assert "gpt-x" in await _text("costs", "set-price", "gpt-x", "--input", "1", "--output", "4",
                                  url=redis_url, prefix=prefix)
    ledger = CostLedger(plain_client, prefix)
    await ledger.record("r1", "acme", "ai.generate", Usage.of(1000, 1000, "gpt-x"))
    await ledger.record("r2", "globex", "ai.generate", Usage.of(10, 0, "gpt-x"))

    report = await _json("costs", "--group", "acme", url=redis_url, prefix=prefix)
    assert [(r["group"], r["task"], r["cost_nano"]) for r in report["rows"]] == [("acme", "ai.generate", 5_000_000)]
    table = await _text("costs", url=redis_url, prefix=prefix)
    assert "acme" in table and "globex" in table and "cost EUR" in table and "0.005000" in table

    state = await _json("costs", "set-budget", "acme", "--hard", "0.004", "--soft", "0.001", "--on-hard", "fail",
                        url=redis_url, prefix=prefix)
    assert state["status"] == "hard" and state["on_hard"] == "fail" and state["spent_nano"] == 5_000_000
    listed = await _json("costs", "budgets", url=redis_url, prefix=prefix)
    assert [b["group"] for b in listed["budgets"]] == ["acme"]
    assert "acme" in await _text("costs", "budgets", url=redis_url, prefix=prefix)
    assert "removed" in await _text("costs", "clear-budget", "acme", url=redis_url, prefix=prefix)

    for args, words in ((("costs", "--group", "nobody"), "nobody"),
                        (("costs", "--since", "last-week"), "--since"),
                        (("costs", "set-budget", "acme", "--hard", "-3"), "hard"),
                        (("costs", "set-budget", "acme", "--hard", "1", "--soft", "2"), "soft"),
                        (("costs", "set-price", "m", "--input", "-1", "--output", "0"), "input_per_million"),
                        (("costs", "clear-budget", "acme"), "no budget"),
                        (("costs", "settings", "--currency", "euro"), "currency")):
        line = await asyncio.to_thread(error_line, *args, "--prefix", prefix, redis_url=redis_url)
        assert words in line, (args, line)
