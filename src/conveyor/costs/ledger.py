"""The cost ledger in Redis: what runs used per tenant, task and day, priced; budgets and admission.

Every key shares the hash tag {costs} (one Cluster slot), so recording a run, checking a budget and
reserving a run's estimate are each one atomic script, fleet-wide: two workers can never both take
the last of a budget. The scripts are in costs/lua (header of each: keys, arguments, codes).
Retention: day buckets expire `retention_days` after their day (default 90), month buckets as long
after their month, the run ids kept against double recording after two days, tenants not seen for
the retention plus a month are forgotten; reservations expire after a lease unless extended.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor import codec
from conveyor.costs.model import (
    DEFAULT_RETENTION_DAYS,
    MAX_AMOUNT,
    MAX_ESTIMATE,
    MAX_PRICE,
    MAX_RETENTION_DAYS,
    NANO,
    Admission,
    Budget,
    OnHard,
    Price,
    UnknownTenantError,
    check_currency,
    check_model,
    check_retention,
    check_tenant,
    from_nano,
    to_nano,
)
from conveyor.errors import ConfigurationError, ScriptInputError, UsageReportError
from conveyor.limits.named import Usage
from conveyor.redis.clock import redis_now_ms
from conveyor.redis.connection import RedisClient
from conveyor.redis.faults import guarded
from conveyor.redis.keys import CostKeys
from conveyor.redis.scripts import Script

logger = logging.getLogger(__name__)

LUA_DIR = Path(__file__).with_name("lua")
_HELPERS = (LUA_DIR / "ledger.lua").read_text()
DAY_MS = 86_400_000
MAX_RANGE_DAYS = 400
MAX_TENANTS = 1000
MAX_CELLS = 40_000  # days x tenants read by one query
MAX_RUNS_PER_CALL = 1000
MAX_EXTEND_PER_CALL = 1000  # reservations one cost-extend-1 call extends
MAX_LIVE_RESERVATIONS = 10_000  # live budget reservations per tenant (costs/lua/ledger.lua)
DEFAULT_CURRENCY = "USD"
_DUPLICATE = -4
OVER_BOUND = -6  # a run whose cost passes the bound (MAX_RUN_COST): refused alone, its reservation given back
MAX_RUN_COST = 1_000_000  # currency units one run may cost (costs/lua/ledger.lua MAX_RUN_NANO)


def _script(filename: str) -> Script:
    base = Script.load(filename, LUA_DIR)
    source = base.source.replace("--@ledger", _HELPERS, 1)
    return Script(base.name, source, hashlib.sha1(source.encode()).hexdigest(), base.num_keys)


_S = {p.name.removesuffix(".lua").rsplit("-", 1)[0]: _script(p.name) for p in sorted(LUA_DIR.glob("cost-*.lua"))}


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _flat(values: Sequence[Any]) -> dict[str, str]:
    items = [_s(v) for v in values]
    return dict(zip(items[0::2], items[1::2], strict=True))


def _check(reply: Any, what: str) -> Any:
    if isinstance(reply, list) and len(reply) == 3 and reply[0] == -6:
        raise ScriptInputError(what, int(reply[1]), _s(reply[2]))
    return reply


FIRST_DAY = dt.date(1970, 1, 1)  # day 0 of the buckets; nothing is counted before it


def day_number(day: dt.date) -> int:
    return (day - FIRST_DAY).days


def day_of(number: int) -> dt.date:
    return FIRST_DAY + dt.timedelta(days=number)


@dataclass(frozen=True, slots=True)
class RunUsage:
    """One run's usage as recorded: run id (the lease token in a worker), tenant ('' = no group)."""

    run_id: str
    tenant: str
    task: str
    usage: Usage | None  # None: the run reported nothing (only its reservation is given back)


class CostLedger:
    """The ledger's Redis side, for workers (record, admit), the API, the CLI and Python callers."""

    def __init__(self, client: RedisClient, prefix: str = "cv") -> None:
        self.client = client
        self.prefix = prefix
        self.keys = CostKeys(prefix)
        self.cfg_key = self.keys.cfg

    # ------------------------------------------------------------------ settings

    async def settings(self) -> dict[str, Any]:
        """Currency, retention and prices (per model, currency units per million tokens)."""
        raw: Any = await guarded(self.client.hgetall(self.cfg_key), "reading cost settings")
        return self._settings({_s(k): _s(v) for k, v in raw.items()})

    @staticmethod
    def _settings(raw: dict[str, str]) -> dict[str, Any]:
        """The settings as the record script reads them: a price or retention edited by hand into
        something it cannot be counts as not set (the price is left out, the retention is the default)."""
        prices: dict[str, dict[str, float]] = {}
        for field, value in raw.items():
            nano = stored_int(value, MAX_PRICE * NANO)
            if field[:3] in ("pi:", "po:") and nano is not None:
                side = "input_per_million" if field[1] == "i" else "output_per_million"
                prices.setdefault(field[3:], {"input_per_million": 0.0, "output_per_million": 0.0})[side] = (
                    from_nano(nano))
        days = stored_int(raw.get("retention_days"), MAX_RETENTION_DAYS)
        return {"currency": raw.get("currency", DEFAULT_CURRENCY),
                "retention_days": days if days else DEFAULT_RETENTION_DAYS,
                "prices": dict(sorted(prices.items()))}

    async def set_currency(self, code: str) -> None:
        """The currency costs are counted in (a label: amounts already recorded are not converted)."""
        await guarded(self.client.hset(self.cfg_key, "currency", check_currency(code)), "setting the currency")

    async def set_retention(self, days: int) -> None:
        """Days a day bucket is kept after its day (applies to buckets written from now on)."""
        await guarded(self.client.hset(self.cfg_key, "retention_days", str(check_retention(days))),
                      "setting the retention")

    async def set_price(self, price: Price) -> None:
        """Price a model ('*': every model without a price of its own). Applies to runs recorded
        from now on; recorded costs keep the price of their time."""
        if not isinstance(price, Price):
            raise ConfigurationError(f"set_price takes a Price, got {price!r}")
        pin, pout = price.nano()
        await guarded(self.client.hset(self.cfg_key, mapping={f"pi:{price.model}": str(pin),
                                                               f"po:{price.model}": str(pout)}), "setting a price")

    async def clear_price(self, model: str) -> bool:
        check_model(model)
        n = await guarded(self.client.hdel(self.cfg_key, f"pi:{model}", f"po:{model}"), "clearing a price")
        return bool(n)

    # ------------------------------------------------------------------ budgets

    async def set_budget(self, tenant: str, budget: Budget) -> None:
        check_tenant(tenant)
        if not isinstance(budget, Budget):
            raise ConfigurationError(f"set_budget takes a Budget, got {budget!r}")
        soft, hard = budget.nano_limits()
        args = ["set", tenant, budget.period[0], "" if soft is None else soft, "" if hard is None else hard,
                budget.on_hard, to_nano(budget.estimate, "estimate", MAX_ESTIMATE),
                codec.dumps(budget.to_json()).decode()]
        _check(await _S["cost-budget"](self.client, [self.cfg_key], args), "budget")

    async def clear_budget(self, tenant: str) -> None:
        check_tenant(tenant)
        reply = await _S["cost-budget"](self.client, [self.cfg_key], ["clear", tenant])
        if int(reply[0]) == -1:
            raise UnknownTenantError(f"tenant {tenant!r} has no budget")

    async def budget_tenants(self) -> list[str]:
        raw = await guarded(self.client.smembers(self.keys.budgets), "listing budgets")
        return sorted(_s(v) for v in raw)

    async def budgets(self, tenants: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Each budget with the current period's spend, what running runs reserved, and status
        ('ok', 'soft' past the soft limit, 'hard' at or past the hard limit)."""
        if tenants is not None:
            names = [check_tenant(t) for t in list(tenants)[:MAX_TENANTS]]
        else:  # names read back from Redis: one written there by hand is skipped, not a failed listing
            names = [t for t in await self.budget_tenants() if _readable_tenant(t)][:MAX_TENANTS]
        reply = _check(await _S["cost-read"](self.client, [self.cfg_key], ["budgets", *names]), "budgets")
        now, settings = int(reply[0]), self._settings(_flat(reply[1]))
        return [self._budget_row(row, now, settings["currency"]) for row in reply[2]]

    async def budget(self, tenant: str) -> dict[str, Any]:
        rows = await self.budgets([tenant])
        if not rows:
            raise UnknownTenantError(f"tenant {tenant!r} has no budget")
        return rows[0]

    @staticmethod
    def _budget_row(row: Sequence[Any], now: int, currency: str) -> dict[str, Any]:
        tenant, fields = _s(row[0]), _flat(row[1])
        spent, held = int(row[2]), int(row[3])
        # A limit edited by hand into something it cannot be is not set (as the scripts read it).
        soft = stored_int(fields.get("soft"), MAX_AMOUNT * NANO)
        hard = stored_int(fields.get("hard"), MAX_AMOUNT * NANO)
        estimate = stored_int(fields.get("est"), MAX_AMOUNT * NANO) or 0
        status = ("hard" if hard is not None and spent >= hard
                  else "soft" if soft is not None and spent >= soft else "ok")
        return {
            "group": tenant, "currency": currency, "config": _config(fields.get("cfg")),
            "period": "month" if fields.get("period") == "m" else "day", "period_id": _s(row[5]),
            "period_start_ms": int(row[6]), "resets_in_ms": int(row[7]) - now,
            "soft": None if soft is None else from_nano(soft), "hard": None if hard is None else from_nano(hard),
            "on_hard": fields.get("mode", "wait"), "estimate": from_nano(estimate),
            "spent": from_nano(spent), "spent_nano": spent, "reserved": from_nano(held), "reserved_nano": held,
            "running_reservations": int(row[4]),
            "remaining": None if hard is None else from_nano(max(0, hard - spent - held)),
            "status": status,
        }

    # ------------------------------------------------------------------ runs

    async def admit(self, run_id: str, tenant: str, ttl_ms: int) -> Admission | None:
        """None when a run of `tenant` may start (its estimate is then reserved for `ttl_ms`); else
        why not: over its hard budget, or (`busy`) held by its running runs' reservations."""
        reply = _check(await _S["cost-admit"](self.client, [self.cfg_key], [run_id, tenant, ttl_ms]), "admit")
        if int(reply[0]) == 0:
            return None
        mode: OnHard = "fail" if _s(reply[4]) == "fail" else "wait"
        busy = int(reply[0]) == 2
        return Admission(tenant, int(reply[1]), int(reply[2]), int(reply[3]), mode,
                         "month" if _s(reply[5]) == "m" else "day", _s(reply[6]),
                         busy=busy, reserved_nano=int(reply[7]) if busy else 0)

    async def extend(self, runs: Sequence[tuple[str, str]], ttl_ms: int) -> int:
        """Keep the reservations of running runs ((tenant, run id) pairs, any number: sent 1,000 a
        call) for another `ttl_ms`; returns how many were extended (those still held)."""
        extended = 0
        for start in range(0, len(runs), MAX_EXTEND_PER_CALL):
            args: list[Any] = [ttl_ms]
            for tenant, run_id in runs[start:start + MAX_EXTEND_PER_CALL]:
                args += [tenant, run_id]
            extended += int(_check(await _S["cost-extend"](self.client, [self.cfg_key], args), "extend"))
        return extended

    async def record_runs(self, runs: Sequence[RunUsage]) -> list[tuple[int, int]]:
        """Record runs (at most 1,000): (code, cost nano) each; code -4: already recorded, OVER_BOUND:
        it costs over MAX_RUN_COST at the prices set (nothing of it counted, its reservation given
        back; the other runs are recorded). Safe to send again after a lost reply: a run id is
        recorded once."""
        args: list[Any] = [len(runs)]
        for run in runs:
            models = [] if run.usage is None else list(run.usage.by_model())
            estimated = 0 if run.usage is None else run.usage.estimated
            args += [run.run_id, run.tenant, run.task, estimated, len(models)]
            for model, tin, tout in models:
                args += [model, tin, tout]
        reply = _check(await _S["cost-record"](self.client, [self.cfg_key], args), "usage record")
        return [(int(reply[i]), int(reply[i + 1])) for i in range(0, len(reply), 2)]

    async def record(self, run_id: str, tenant: str | None, task: str, usage: Usage) -> int:
        """Record one run's usage (a handler outside a worker, an import). Returns its cost in nano-
        units; UsageReportError when this run id was already recorded (nothing changes)."""
        if not isinstance(usage, Usage):
            raise UsageReportError(f"usage must be a Usage, got {usage!r}")
        if tenant is not None:
            check_tenant(tenant)
        if not isinstance(task, str) or not 1 <= len(task) <= 200:
            raise UsageReportError(f"task must be 1-200 characters, got {task!r}")
        if not isinstance(run_id, str) or not 1 <= len(run_id) <= 200:
            raise UsageReportError(f"run id must be 1-200 characters, got {run_id!r}")
        [(code, cost)] = await self.record_runs([RunUsage(run_id, tenant or "", task, usage)])
        if code == _DUPLICATE:
            raise UsageReportError(f"usage of run {run_id!r} was already recorded")
        if code == OVER_BOUND:
            raise UsageReportError(f"run {run_id!r} costs more than {MAX_RUN_COST:,} currency units at the "
                                   "prices set; not recorded")
        return cost

    # ------------------------------------------------------------------ reading

    async def tenants(self) -> list[str]:
        """Tenants with recorded usage (most recent first, at most 1,000) or a budget."""
        raw = await guarded(self.client.zrevrange(self.keys.tenants, 0, MAX_TENANTS - 1), "listing tenants")
        seen = [_s(v) for v in raw]
        return sorted(set(seen) | set(await self.budget_tenants()))

    async def today(self) -> dt.date:
        """Today (UTC) by the clock of the node holding the ledger, the one its scripts date buckets by."""
        now_ms = await guarded(redis_now_ms(self.client, self.cfg_key), "reading the Redis clock")
        return day_of(now_ms // DAY_MS)

    async def usage(self, group: str | None = None, task: str | None = None, since: dt.date | None = None,
                    until: dt.date | None = None) -> dict[str, Any]:
        """Tokens and cost per day, tenant and task, from `since` to `until` (UTC days, inclusive;
        default: the last 7 days up to today), with the part that is an estimate (`tokens_estimated`,
        `runs_estimated`). UnknownTenantError for a group never seen."""
        if until is None:
            until = await self.today()
        if since is None:  # 6 days earlier, from the first day counted on (the date type ends at year 1)
            since = max(FIRST_DAY, until - dt.timedelta(days=6)) if until >= FIRST_DAY else until
        if since < FIRST_DAY or until < FIRST_DAY:
            raise ConfigurationError(f"usage is counted from {FIRST_DAY} on; got {min(since, until)}")
        if since > until:
            raise ConfigurationError(f"since ({since}) is after until ({until})")
        if (until - since).days > MAX_RANGE_DAYS:
            raise ConfigurationError(f"a query covers at most {MAX_RANGE_DAYS} days, got {(until - since).days + 1}")
        if group is not None:
            check_tenant(group)
            known = await guarded(self.client.zscore(self.keys.tenants, group), "looking up a tenant")
            if known is None:
                raise UnknownTenantError(f"no usage was recorded for tenant {group!r} and it has no budget")
            tenants = [group]
        else:
            raw = await guarded(self.client.zrevrange(self.keys.tenants, 0, MAX_TENANTS - 1), "listing tenants")
            tenants = sorted(_s(v) for v in raw)
        days = (until - since).days + 1
        if days * max(1, len(tenants)) > MAX_CELLS:
            raise ConfigurationError(f"{days} days x {len(tenants)} tenants is too much for one query: "
                                     "name a group or shorten the range")
        reply = _check(await _S["cost-read"](self.client, [self.cfg_key],
                                             ["usage", day_number(since), day_number(until), *tenants]), "usage")
        currency = self._settings(_flat(reply[1]))["currency"]
        rows = []
        for day, tenant, fields in reply[2]:
            rows += _bucket_rows(day_of(int(day)).isoformat(), _s(tenant), _flat(fields), task)
        totals = _sum(rows)
        by_group: dict[str | None, list[dict[str, Any]]] = {}
        for row in rows:
            by_group.setdefault(row["group"], []).append(row)
        return {"currency": currency, "since": since.isoformat(), "until": until.isoformat(), "group": group,
                "task": task, "rows": rows, "totals": totals,
                "groups": [{"group": g, **_sum(rs)} for g, rs in sorted(by_group.items(), key=lambda x: x[0] or "")],
                "truncated": group is None and len(tenants) >= MAX_TENANTS}

    async def events(self, count: int = 100) -> list[dict[str, Any]]:
        """The latest budget events (budget_soft, budget_hard), newest first."""
        raw: Any = await guarded(self.client.xrevrange(self.keys.events, count=max(1, min(count, 1000))),
                                 "reading budget events")
        return [{"id": _s(eid), **_flat([x for kv in fields.items() for x in kv])} for eid, fields in raw]


def _config(raw: str | None) -> Any:
    """A budget's configuration as it was given (shown back), or {} when it is not JSON (edited by hand)."""
    try:
        return codec.loads(raw or "{}")
    except ValueError:
        return {}


def stored_int(value: str | None, maximum: int) -> int | None:
    """A whole number in [0, maximum] as the ledger's scripts store it (digits only), or None: the
    scripts' `stored_int` (costs/lua/ledger.lua), so reports read what records count."""
    if value is None or not 0 < len(value) <= 19 or not value.isascii() or not value.isdigit():
        return None
    number = int(value)
    return number if number <= maximum else None


def _count(value: str | None) -> int:
    """A stored total, or 0 when it is not an integer (edited by hand): a report never raises on it."""
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _bucket_rows(day: str, tenant: str, fields: dict[str, str], task: str | None) -> list[dict[str, Any]]:
    tasks = sorted({f[2:] for f in fields if f.startswith("n:") and f != "n:"})
    out = []
    for name in tasks:
        if task is not None and name != task:
            continue
        cost = _count(fields.get(f"c:{name}"))
        out.append({"day": day, "group": tenant or None, "task": name,
                    "tokens_in": _count(fields.get(f"i:{name}")), "tokens_out": _count(fields.get(f"o:{name}")),
                    "cost": from_nano(cost), "cost_nano": cost, "runs": _count(fields.get(f"n:{name}")),
                    # The part of those figures that is an estimate (tokens in + out), and of how many runs.
                    "tokens_estimated": _count(fields.get(f"e:{name}")),
                    "runs_estimated": _count(fields.get(f"en:{name}"))})
    return out


_SUMMED = ("tokens_in", "tokens_out", "runs", "tokens_estimated", "runs_estimated")


def _sum(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    cost = sum(r["cost_nano"] for r in rows)
    totals = {k: sum(r[k] for r in rows) for k in _SUMMED}
    return {"tokens_in": totals["tokens_in"], "tokens_out": totals["tokens_out"], "cost": from_nano(cost),
            "cost_nano": cost, "runs": totals["runs"], "tokens_estimated": totals["tokens_estimated"],
            "runs_estimated": totals["runs_estimated"]}


def _readable_tenant(name: str) -> bool:
    try:
        check_tenant(name)
    except ConfigurationError:
        logger.warning("costs: skipping a budget whose tenant name is not one a tenant can have: %r", name[:80])
        return False
    return True
