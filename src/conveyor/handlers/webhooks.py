"""Signed webhook delivery to customer endpoints, behind the SSRF guard.

Each delivery POSTs the JSON payload with a `Conveyor-Signature` header (see `signing`), within a
15 s budget. 2xx is success; 408, 5xx and network errors are retried with the job's exponential
backoff; 429 waits for Retry-After without using an attempt; other 4xx fail at once. Deliveries to
one endpoint share a group (its host), so one slow customer cannot hold up the others.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from conveyor import codec
from conveyor.backoff import Exponential
from conveyor.errors import ConfigurationError, Retry, Unrecoverable
from conveyor.handlers.http import raise_for_rate_limit, transfer_errors_as_signals
from conveyor.handlers.signing import HEADER, sign
from conveyor.handlers.ssrf import SsrfGuard, guarded_client, read_capped, send_following
from conveyor.worker.context import JobContext

if TYPE_CHECKING:
    from conveyor.app import Conveyor, Task
    from conveyor.job import Job
    from conveyor.settings import Settings

QUEUE = "webhooks"
TASK = "webhooks.deliver"
MAX_BODY_BYTES = 1024 * 1024
EXCERPT_BYTES = 1024
USER_AGENT = "Conveyor-Webhooks/1"
_RESERVED_HEADERS = {"host", "content-type", "content-length", "user-agent", HEADER.lower()}
_GROUP_CHARS = re.compile(r"[^A-Za-z0-9._:@/+=-]")


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=2048)
    payload: Any = None
    event: str | None = Field(default=None, max_length=200)
    endpoint: str | None = Field(
        default=None, max_length=2048, description="key of the signing secret (default: by URL)"
    )
    headers: dict[str, str] = Field(default_factory=dict, max_length=20)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, v in value.items():
            if name.lower() in _RESERVED_HEADERS or name.lower().startswith("conveyor-"):
                raise ValueError(f"header {name!r} is set by Conveyor")
            if any(c in name + v for c in "\r\n") or len(v) > 4096:
                raise ValueError(f"header {name!r} has a line break or is too long")
        return value


class WebhookResult(BaseModel):
    url: str
    final_url: str
    status: int
    latency_ms: float
    response: str
    response_truncated: bool
    redirects: list[str]


class WebhookSecrets:
    """Signing secrets per endpoint: exact URL, then origin, then host, then `*`."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = {k.rstrip("/") if "://" in k else k.lower(): v for k, v in secrets.items()}

    @classmethod
    def parse(cls, raw: str | None) -> WebhookSecrets:
        if not raw:
            return cls({})
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"CONVEYOR_WEBHOOK_SECRETS is not valid JSON: {exc}") from None
        if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
            raise ConfigurationError('CONVEYOR_WEBHOOK_SECRETS must be a JSON object {"endpoint": "secret"}')
        return cls(value)

    def lookup(self, url: str, endpoint: str | None = None) -> str:
        if endpoint is not None:
            key = endpoint.rstrip("/") if "://" in endpoint else endpoint.lower()
            if key not in self.secrets:
                raise Unrecoverable(f"no webhook secret configured for endpoint {endpoint!r}")
            return self.secrets[key]
        u = httpx.URL(url)
        origin = f"{u.scheme}://{u.netloc.decode()}"
        for key in (url.rstrip("/"), origin, u.host.lower(), "*"):
            if key in self.secrets:
                return self.secrets[key]
        raise Unrecoverable(
            f"no webhook secret for {origin}: add it to CONVEYOR_WEBHOOK_SECRETS (unsigned webhooks are not sent)"
        )


def webhook_group(url: str) -> str:
    """The fairness group of an endpoint: its host and port."""
    netloc = httpx.URL(url).netloc.decode() or "unknown"
    return _GROUP_CHARS.sub("_", netloc.lower())[:200]


class WebhookSender:
    """Delivers one webhook (one attempt) and classifies the answer."""

    def __init__(self, guard: SsrfGuard, secrets: WebhookSecrets, *, timeout_s: float = 15.0) -> None:
        self.guard = guard
        self.secrets = secrets
        self.timeout_s = timeout_s

    async def deliver(self, req: WebhookRequest, delivery_id: str = "", attempt: int = 1) -> WebhookResult:
        body = codec.dumps(req.payload)
        if len(body) > MAX_BODY_BYTES:
            raise Unrecoverable(f"webhook body is {len(body)} bytes, over the limit of {MAX_BODY_BYTES}")
        headers = {
            **req.headers,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            HEADER: sign(self.secrets.lookup(req.url, req.endpoint), body),
            "Conveyor-Delivery": delivery_id,
            "Conveyor-Attempt": str(attempt),
        }
        if req.event:
            headers["Conveyor-Event"] = req.event
        started = time.perf_counter()
        with transfer_errors_as_signals(self.timeout_s, timed_out="no answer within", failed="network error"):
            async with asyncio.timeout(self.timeout_s), guarded_client(self.guard, self.timeout_s) as client:
                response, hops = await send_following(client, "POST", req.url, content=body, headers=headers)
                try:
                    excerpt, truncated = await read_capped(response, EXCERPT_BYTES)
                finally:
                    await response.aclose()
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        status = response.status_code
        text = excerpt.decode("utf-8", errors="replace")
        if 200 <= status < 300:
            return WebhookResult(
                url=req.url,
                final_url=hops[-1] if hops else req.url,
                status=status,
                latency_ms=latency_ms,
                response=text,
                response_truncated=truncated,
                redirects=hops,
            )
        summary = f"endpoint answered {status} after {latency_ms} ms: {text[:200]!r}"
        raise_for_rate_limit(status, dict(response.headers), what=webhook_group(req.url))
        if status == 408 or status >= 500:
            raise Retry(reason=summary)
        raise Unrecoverable(summary)


class WebhookTasks:
    """The declared delivery task; `send` enqueues with the endpoint's group set."""

    def __init__(self, task: Task[WebhookResult], sender: WebhookSender) -> None:
        self.task = task
        self.sender = sender

    async def send(
        self,
        url: str,
        payload: Any,
        *,
        event: str | None = None,
        endpoint: str | None = None,
        headers: dict[str, str] | None = None,
        **options: Any,
    ) -> Job[WebhookResult]:
        """Enqueue a delivery; job options (delay, attempts, idempotency_key...) pass through."""
        options.setdefault("group", webhook_group(url))
        data = {"url": url, "payload": payload, "event": event, "endpoint": endpoint, "headers": headers or {}}
        return await self.task.enqueue(data, **options)


def register(app: Conveyor, settings: Settings, guard: SsrfGuard) -> WebhookTasks:
    """Declare `webhooks.deliver` on queue `webhooks` (5 attempts, exponential backoff from 2 s)."""
    sender = WebhookSender(guard, WebhookSecrets.parse(settings.webhook_secrets), timeout_s=settings.webhook_timeout_s)

    async def deliver(ctx: JobContext, payload: WebhookRequest) -> WebhookResult:
        return await sender.deliver(payload, delivery_id=f"{ctx.queue}:{ctx.job_id}", attempt=ctx.attempt)

    task = app.task(
        deliver,
        queue=QUEUE,
        name=TASK,
        attempts=settings.webhook_attempts,
        backoff=Exponential(base=2.0, factor=4.0, max=3600.0),
        timeout=settings.webhook_timeout_s * 2,
    )
    return WebhookTasks(task, sender)
