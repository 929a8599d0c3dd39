"""Alert notices as jobs of the built-in handlers (conveyor.handlers): `webhooks.deliver` on queue
`webhooks` for Slack and generic webhooks, `email.send` on queue `email`.

This module is the only place alerts know about the handlers: their public queue and job names and
their payload shapes. Jobs get ids derived from the notice, so enqueueing a notice twice (a pass
that crashed after enqueueing, before clearing its outbox) delivers it once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from conveyor.alerts.state import Notice, NoticeKind
from conveyor.backoff import Exponential
from conveyor.errors import IdempotencyConflictError
from conveyor.options import JobOptions, JobSpec
from conveyor.queue import Queue
from conveyor.redis.connection import RedisClient

logger = logging.getLogger(__name__)

WEBHOOK_QUEUE, WEBHOOK_TASK = "webhooks", "webhooks.deliver"
EMAIL_QUEUE, EMAIL_TASK = "email", "email.send"
ATTEMPTS = 5
BACKOFF = Exponential(base=2.0, factor=4.0, max=3600.0)
_GROUP_CHARS = re.compile(r"[^A-Za-z0-9._:@/+=-]")
COLORS = {"critical": "#d0413a", "warning": "#c88a00", "info": "#2f6fed"}
RESOLVED_COLOR = "#2e9d5b"


def webhook_group(channel: dict[str, Any]) -> str:
    """The fairness group as the webhook handler sets it (`endpoint:<name>`, or host:port of a bare
    URL), so a 429 from one receiver holds back that receiver's deliveries only."""
    if channel.get("endpoint"):
        return f"endpoint:{channel['endpoint']}"
    netloc = urlsplit(channel["url"]).netloc.rsplit("@", 1)[-1] or "unknown"
    return _GROUP_CHARS.sub("_", netloc.lower())[:200]


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def headline(n: Notice) -> str:
    rule = n.rule
    state = {NoticeKind.FIRED: "FIRING", NoticeKind.REPEAT: "STILL FIRING", NoticeKind.RESOLVED: "RESOLVED"}[n.kind]
    return f"[{state}] {rule['severity']}: {rule['id']} ({rule['kind']} on {rule['queue']})"


def text_body(n: Notice) -> str:
    rule = n.rule
    lines = [headline(n), "", n.summary, ""]
    if rule.get("description"):
        lines += [str(rule["description"]), ""]
    lines += [f"Fired at: {_when(n.fired_ms)}", f"This notice: {_when(n.at_ms)} (#{n.seq} of episode {n.episode})"]
    return "\n".join(lines)


def slack_payload(n: Notice) -> dict[str, Any]:
    rule = n.rule
    color = RESOLVED_COLOR if n.kind is NoticeKind.RESOLVED else COLORS.get(rule["severity"], COLORS["warning"])
    fields = [
        {"title": "Queue", "value": rule["queue"], "short": True},
        {"title": "Rule", "value": f"{rule['id']} ({rule['kind']})", "short": True},
        {"title": "Fired at", "value": _when(n.fired_ms), "short": True},
    ]
    if n.value is not None:
        fields.append({"title": "Value", "value": f"{n.value:g}", "short": True})
    return {
        "text": f"{headline(n)}: {n.summary}",
        "attachments": [{"color": color, "title": headline(n), "text": rule.get("description") or n.summary,
                         "fields": fields, "ts": n.at_ms // 1000}],
    }


def event_payload(n: Notice) -> dict[str, Any]:
    """The generic webhook body: the notice itself (the rule without its channels)."""
    return {"type": f"alert.{n.kind.value}", **n.to_dict(channels=False)}


def specs(n: Notice) -> list[tuple[str, JobSpec]]:
    """(queue, job) per channel of the notice's rule."""
    out: list[tuple[str, JobSpec]] = []
    for i, channel in enumerate(n.rule["channels"]):
        job_id = f"alert:{n.id}:{i}"
        kind = channel["type"]
        if kind in ("slack", "webhook"):
            target = {"endpoint": channel["endpoint"]} if channel.get("endpoint") else {"url": channel["url"]}
            data = {**target, "payload": slack_payload(n) if kind == "slack" else event_payload(n),
                    "event": f"alert.{n.kind.value}", "headers": {}}
            options = JobOptions(job_id=job_id, attempts=ATTEMPTS, backoff=BACKOFF, group=webhook_group(channel))
            out.append((WEBHOOK_QUEUE, JobSpec(WEBHOOK_TASK, data, options)))
        elif kind == "email":
            data = {"to": list(channel["to"]), "subject": headline(n)[:900], "text": text_body(n)}
            out.append((EMAIL_QUEUE, JobSpec(EMAIL_TASK, data, JobOptions(job_id=job_id, attempts=ATTEMPTS,
                                                                         backoff=BACKOFF))))
    return out


async def enqueue(client: RedisClient, prefix: str, notice: Notice) -> int:
    """Enqueue the notice's delivery jobs; returns how many were new.

    A job id already taken by another notice's job (a rule deleted before episodes were kept across
    deletion, then defined again) gets the notice's time appended, so the notice is still delivered,
    once, instead of failing every later pass."""
    created = 0
    for queue, spec in specs(notice):
        q = Queue(queue, redis=client, prefix=prefix)
        try:
            jobs = await q.add_specs([spec])
        except IdempotencyConflictError:
            job_id = f"{spec.options.job_id}:{notice.at_ms}"
            logger.warning("alert notice %s: job id %s is taken by an earlier notice; using %s",
                           notice.id, spec.options.job_id, job_id)
            jobs = await q.add_specs([replace(spec, options=replace(spec.options, job_id=job_id))])
        created += sum(1 for j in jobs if j.created)
    return created
