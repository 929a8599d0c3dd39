"""AlertStore: alert rules, their state, the outbox of notices and the history, kept in Redis.

Rules belong to a source: `code` (declared with `app.alert(...)`, written at every scheduler start)
or `api` (`PUT /api/alerts`); neither replaces the other's rules. Every write is one script
(alerts/lua); a state change is compare-and-set on its version, so two evaluators never both send
the same notice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor import codec
from conveyor.alerts.rules import MAX_RULES, RuleBase, parse_rule, rule_json
from conveyor.alerts.state import AlertState, Notice
from conveyor.errors import ConfigurationError, ConveyorError
from conveyor.redis.connection import RedisClient
from conveyor.redis.faults import redis_call
from conveyor.redis.keys import AlertKeys
from conveyor.redis.scripts import Script

LUA_DIR = Path(__file__).with_name("lua")
HISTORY_MAXLEN = 1000
_S = {
    p.name.removesuffix(".lua").rsplit("-", 1)[0]: Script.load(p.name, LUA_DIR) for p in sorted(LUA_DIR.glob("*.lua"))
}


class RuleConflictError(ConveyorError):
    """A rule id is taken by a rule of the other source (code or api)."""


@dataclass(frozen=True, slots=True)
class AlertInfo:
    rule: RuleBase
    source: str
    state: AlertState
    version: int


class AlertStore:
    def __init__(self, client: RedisClient, prefix: str = "cv") -> None:
        self.client = client
        self.keys = AlertKeys(prefix)

    # ------------------------------------------------------------------ rules

    async def put_rules(self, rules: Sequence[RuleBase], *, source: str, replace: bool) -> int:
        """Write `rules` as `source`'s; with `replace`, that source's other rules are deleted.
        Returns how many were deleted. RuleConflictError (nothing written) on an id of the other source."""
        if len(rules) > MAX_RULES:
            raise ConfigurationError(f"at most {MAX_RULES} alert rules")
        ids = [r.id for r in rules]
        if len(set(ids)) != len(ids):
            raise ConfigurationError("alert rule ids must be unique")
        args: list[Any] = [source, "1" if replace else "0", len(rules)]
        for rule in rules:
            args += [rule.id, codec.dumps(rule_json(rule)).decode()]
        k = self.keys
        code, detail = await _S["put-rules"](self.client, (k.rules, k.sources, k.state), args)
        if int(code) != 0:
            raise RuleConflictError(f"alert rule {detail!r} is defined by {'the API' if source == 'code' else 'code'}")
        return int(detail)

    async def delete_rule(self, rule_id: str) -> bool:
        k = self.keys
        return int(await _S["delete-rule"](self.client, (k.rules, k.sources, k.state, k.versions), (rule_id,))) == 1

    async def all(self) -> list[AlertInfo]:
        """Every rule with its state, by id. A stored rule this version cannot read is skipped."""
        k = self.keys
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(k.rules)
            pipe.hgetall(k.sources)
            pipe.hgetall(k.state)
            pipe.hgetall(k.versions)
            rules, sources, states, versions = await redis_call(pipe.execute())
        out = []
        for rule_id in sorted(rules):
            try:
                rule = parse_rule(codec.loads(rules[rule_id]))
            except (ConfigurationError, ValueError):
                continue
            out.append(AlertInfo(rule, sources.get(rule_id, "api"), AlertState.from_json(states.get(rule_id)),
                                 int(versions.get(rule_id, 0))))
        return out

    # ------------------------------------------------------------------ transitions

    async def transition(self, rule_id: str, version: int, state: AlertState, notices: Iterable[Notice]) -> bool:
        """Store the new state and its notices if the state is still at `version`."""
        k = self.keys
        notices = list(notices)
        args: list[Any] = [rule_id, str(version), state.to_json(), HISTORY_MAXLEN, len(notices)]
        for n in notices:
            args += [n.id, codec.dumps(n.to_dict()).decode(), codec.dumps(n.to_dict(channels=False)).decode()]
        keys = (k.rules, k.state, k.versions, k.outbox, k.history)
        return int(await _S["transition"](self.client, keys, args)) > 0

    async def pending_notices(self) -> list[Notice]:
        raw = await redis_call(self.client.hgetall(self.keys.outbox))
        return sorted((Notice.from_dict(codec.loads(v)) for v in raw.values()), key=lambda n: (n.at_ms, n.id))

    async def delivered(self, notice: Notice) -> None:
        await redis_call(self.client.hdel(self.keys.outbox, notice.id))

    async def history(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest notices, newest first (without channels)."""
        entries = await redis_call(self.client.xrevrange(self.keys.history, count=limit))
        return [codec.loads(fields["notice"]) for _, fields in entries if fields and "notice" in fields]
