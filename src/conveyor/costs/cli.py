"""`conveyor costs`: tokens and cost per tenant, task and day; budgets, prices and settings."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import typer

from conveyor.costs.ledger import CostLedger
from conveyor.costs.model import Budget, Price
from conveyor.errors import ConfigurationError
from conveyor.ops.common import JsonOpt, PrefixOpt, RedisOpt, Target, age, fail, print_json, run, table

costs_app = typer.Typer(help="Tokens and cost per tenant (group), task and day; budgets and prices.",
                        invoke_without_command=True)
GroupArg = Annotated[str, typer.Argument(help="Tenant (the jobs' group).")]


def _date(value: str | None, name: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        fail(f"--{name} must be a date (YYYY-MM-DD), got {value!r}")


@costs_app.callback()
def costs(
    ctx: typer.Context,
    group: Annotated[str | None, typer.Option("--group", "-g", help="Only this tenant.")] = None,
    task: Annotated[str | None, typer.Option("--task", "-t", help="Only this task.")] = None,
    since: Annotated[str | None, typer.Option(help="First day (YYYY-MM-DD, UTC); default 6 days ago.")] = None,
    until: Annotated[str | None, typer.Option(help="Last day (YYYY-MM-DD, UTC); default today.")] = None,
    as_json: JsonOpt = False,
    redis_url: RedisOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Tokens and cost per day, tenant and task (without a subcommand)."""
    if ctx.invoked_subcommand is not None:
        return
    first, last = _date(since, "since"), _date(until, "until")

    async def go(t: Target) -> dict[str, Any]:
        return await CostLedger(t.client, t.prefix).usage(group=group, task=task, since=first, until=last)

    report = run(redis_url, prefix, go)
    if as_json:
        print_json(report)
        return
    cur = report["currency"]
    rows = [(r["day"], r["group"], r["task"], r["runs"], r["tokens_in"], r["tokens_out"], _estimated(r),
             f"{r['cost']:.6f}") for r in report["rows"]]
    totals = report["totals"]
    rows.append(("total", "", "", totals["runs"], totals["tokens_in"], totals["tokens_out"], _estimated(totals),
                 f"{totals['cost']:.6f}"))
    typer.echo(f"{report['since']} .. {report['until']}  ({cur})")
    typer.echo(table(["day", "group", "task", "runs", "tokens in", "tokens out", "estimated", f"cost {cur}"], rows))
    if totals.get("runs_estimated"):
        typer.echo("estimated: tokens (in + out) of those counts that are an estimate, not a provider's report")


def _estimated(row: dict[str, Any]) -> str:
    """The estimated part of a row's tokens, and of how many runs ('' when none)."""
    runs = int(row.get("runs_estimated") or 0)
    if not runs:
        return ""
    return f"{row.get('tokens_estimated', 0)} ({runs} run{'' if runs == 1 else 's'})"


@costs_app.command("budgets")
def budgets(as_json: JsonOpt = False, redis_url: RedisOpt = None, prefix: PrefixOpt = None) -> None:
    """Every tenant budget with this period's spend."""
    rows = run(redis_url, prefix, lambda t: CostLedger(t.client, t.prefix).budgets())
    if as_json:
        print_json({"budgets": rows})
        return
    typer.echo(table(["group", "period", "spent", "soft", "hard", "on hard", "status", "resets in"],
                     [(b["group"], b["period"], f"{b['spent']:.6f}", b["soft"], b["hard"], b["on_hard"], b["status"],
                       age(b["resets_in_ms"])) for b in rows]))


@costs_app.command("set-budget")
def set_budget(
    group: GroupArg,
    hard: Annotated[str | None, typer.Option(help="Hard limit, currency units per period.")] = None,
    soft: Annotated[str | None, typer.Option(help="Soft limit (an event and an alert).")] = None,
    period: Annotated[str, typer.Option(help="day or month (UTC).")] = "day",
    on_hard: Annotated[str, typer.Option("--on-hard", help="wait (until the next period) or fail.")] = "wait",
    estimate: Annotated[str, typer.Option(help="What one run is expected to cost (reserved while it runs).")] = "0",
    as_json: JsonOpt = False,
    redis_url: RedisOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Set a tenant's budget (replaces the one it had)."""
    try:
        budget = Budget(period=period, soft=soft, hard=hard, on_hard=on_hard, estimate=estimate)  # type: ignore[arg-type]
    except ConfigurationError as exc:
        fail(str(exc))

    async def go(t: Target) -> dict[str, Any]:
        ledger = CostLedger(t.client, t.prefix)
        await ledger.set_budget(group, budget)
        return await ledger.budget(group)

    state = run(redis_url, prefix, go)
    if as_json:
        print_json(state)
    else:
        typer.echo(f"budget of {group}: {state['period']}, soft {state['soft']}, hard {state['hard']} "
                   f"({state['on_hard']}), spent {state['spent']:.6f} {state['currency']}")


@costs_app.command("clear-budget")
def clear_budget(group: GroupArg, redis_url: RedisOpt = None, prefix: PrefixOpt = None) -> None:
    """Remove a tenant's budget."""
    run(redis_url, prefix, lambda t: CostLedger(t.client, t.prefix).clear_budget(group))
    typer.echo(f"budget of {group} removed")


@costs_app.command("set-price")
def set_price(
    model: Annotated[str, typer.Argument(help="Model name as the handlers report it; '*' for the default.")],
    input_per_million: Annotated[str, typer.Option("--input", help="Currency units per million input tokens.")],
    output_per_million: Annotated[str, typer.Option("--output", help="Currency units per million output tokens.")],
    redis_url: RedisOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Price a model (applies to runs recorded from now on)."""
    try:
        price = Price(model, input_per_million, output_per_million)
    except ConfigurationError as exc:
        fail(str(exc))
    run(redis_url, prefix, lambda t: CostLedger(t.client, t.prefix).set_price(price))
    typer.echo(f"price of {model}: {input_per_million} in, {output_per_million} out per million tokens")


@costs_app.command("settings")
def settings(
    currency: Annotated[str | None, typer.Option(help="Set the currency (ISO 4217, a label).")] = None,
    retention_days: Annotated[int | None, typer.Option("--retention-days", help="Set the days kept.")] = None,
    as_json: JsonOpt = False,
    redis_url: RedisOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Show (or change) the currency, retention and prices."""

    async def go(t: Target) -> dict[str, Any]:
        ledger = CostLedger(t.client, t.prefix)
        if currency is not None:
            await ledger.set_currency(currency)
        if retention_days is not None:
            await ledger.set_retention(retention_days)
        return await ledger.settings()

    state = run(redis_url, prefix, go)
    if as_json:
        print_json(state)
        return
    typer.echo(f"currency {state['currency']}, retention {state['retention_days']} days")
    typer.echo(table(["model", "input / 1M", "output / 1M"],
                     [(m, p["input_per_million"], p["output_per_million"]) for m, p in state["prices"].items()]))
