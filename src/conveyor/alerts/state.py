"""An alert's life: ok → pending (the condition holds, not yet for `for_s`) → firing → ok.

`step` is pure: given a rule, its stored state, a reading and the time it returns the next state and
the notices to send. Firing sends `fired`; while firing a `repeat` goes out every `repeat_s`; when
the condition has been clear at two evaluations in a row (and for `resolve_s`), `resolved`. A
condition that flaps (clear at one evaluation, back at the next) keeps the alert firing and is
counted in `flaps`, instead of sending a resolved/fired pair at every evaluation. Each notice has
an id made of the rule, the episode (one per firing) and its number in the episode, so the jobs
that deliver it are enqueued once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from conveyor import codec
from conveyor.alerts.rules import Reading, RuleBase, rule_json


class Status(StrEnum):
    OK = "ok"
    PENDING = "pending"
    FIRING = "firing"


class NoticeKind(StrEnum):
    FIRED = "fired"
    REPEAT = "repeat"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class AlertState:
    status: Status = Status.OK
    since_ms: int | None = None  # when the condition began holding (pending and firing)
    fired_ms: int | None = None  # when the current (or last) episode fired
    notified_ms: int | None = None  # the last notice of the episode
    episode: int = 0  # firings so far
    seq: int = 0  # notices sent in the current episode
    value: float | None = None
    summary: str = ""
    evaluated_ms: int | None = None
    error: str | None = None
    cleared_ms: int | None = None  # firing, but the condition is clear since then (not yet resolved)
    flaps: int = 0  # times the condition came back before the episode could resolve

    def to_json(self) -> str:
        return codec.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, raw: str | None) -> AlertState:
        if not raw:
            return cls()
        values = codec.loads(raw)
        values["status"] = Status(values.get("status", "ok"))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True, slots=True)
class Notice:
    """One message about one alert, delivered on each of the rule's channels."""

    kind: NoticeKind
    rule: dict[str, Any]  # the rule as it was when the notice was decided (channels included)
    episode: int
    seq: int
    at_ms: int
    fired_ms: int
    value: float | None
    summary: str

    @property
    def id(self) -> str:
        return f"{self.rule['id']}:{self.episode}:{self.seq}"

    def to_dict(self, *, channels: bool = True) -> dict[str, Any]:
        rule = self.rule if channels else {k: v for k, v in self.rule.items() if k != "channels"}
        return {"id": self.id, "kind": self.kind.value, "rule": rule, "episode": self.episode, "seq": self.seq,
                "at_ms": self.at_ms, "fired_ms": self.fired_ms, "value": self.value, "summary": self.summary}

    @classmethod
    def from_dict(cls, v: dict[str, Any]) -> Notice:
        return cls(NoticeKind(v["kind"]), v["rule"], int(v["episode"]), int(v["seq"]), int(v["at_ms"]),
                   int(v["fired_ms"]), v.get("value"), str(v.get("summary", "")))


def step(rule: RuleBase, state: AlertState, reading: Reading | None, now_ms: int) -> tuple[AlertState, list[Notice]]:
    """The next state and notices. `reading` None: the rule is disabled (its alert ends silently)."""
    if reading is None:
        return replace(state, status=Status.OK, since_ms=None, cleared_ms=None, evaluated_ms=now_ms, error=None), []
    s = replace(state, value=reading.value, summary=reading.summary, evaluated_ms=now_ms, error=None)

    def notice(kind: NoticeKind, after: AlertState) -> Notice:
        return Notice(kind, rule_json(rule), after.episode, after.seq, now_ms, after.fired_ms or now_ms,
                      reading.value, reading.summary)

    if not reading.firing:
        if state.status is Status.FIRING:
            if not _resolves(rule, state, now_ms):
                return replace(s, cleared_ms=now_ms if state.cleared_ms is None else state.cleared_ms), []
            resolved = replace(s, status=Status.OK, since_ms=None, cleared_ms=None, seq=state.seq + 1,
                               notified_ms=now_ms)
            return resolved, [notice(NoticeKind.RESOLVED, resolved)]
        return replace(s, status=Status.OK, since_ms=None, cleared_ms=None), []
    since = state.since_ms if state.status is not Status.OK and state.since_ms is not None else now_ms
    if state.status is Status.FIRING:
        if state.cleared_ms is not None:  # back before the alert resolved: the episode goes on
            s = replace(s, cleared_ms=None, flaps=state.flaps + 1)
        due = rule.repeat_s is not None and now_ms - (state.notified_ms or 0) >= rule.repeat_s * 1000
        if not due:
            return replace(s, since_ms=since), []
        repeated = replace(s, since_ms=since, seq=state.seq + 1, notified_ms=now_ms)
        return repeated, [notice(NoticeKind.REPEAT, repeated)]
    if now_ms - since < rule.for_s * 1000:
        return replace(s, status=Status.PENDING, since_ms=since), []
    fired = replace(s, status=Status.FIRING, since_ms=since, fired_ms=now_ms, notified_ms=now_ms,
                    episode=state.episode + 1, seq=1, cleared_ms=None, flaps=0)
    return fired, [notice(NoticeKind.FIRED, fired)]


def _resolves(rule: RuleBase, state: AlertState, now_ms: int) -> bool:
    """A firing alert resolves at the second clear evaluation in a row, once clear for `resolve_s`:
    clear for at least one evaluation interval, so a flapping condition does not resolve."""
    return state.cleared_ms is not None and now_ms - state.cleared_ms >= rule.resolve_s * 1000
