"""Webhook delivery to customer endpoints, signed as Standard Webhooks defines, behind the SSRF guard.

A job names a registered endpoint (`endpoint`: sent to its URL and signed with its secrets, see
`endpoints`) or gives a bare `url` (sent unsigned: no customer secret ever signs a body aimed at a URL
that job data chose). Each delivery POSTs the JSON payload with `webhook-id`, `webhook-timestamp` and
`webhook-signature` (see `signing`) within a 15 s budget. 2xx is success; 408, 5xx, network errors
and temporary DNS failures are retried with the job's exponential backoff; 429 waits for Retry-After
without using an attempt; other 4xx fail at once. Redirects are not followed: a 3xx fails at once,
naming where it pointed (following it would hand the signed body and its signature, replayable for
minutes, and the job's headers to whatever origin the endpoint names). Deliveries to one endpoint (to
one host, for bare URLs) share a group, so one slow customer cannot hold up the others. Job data may
add headers, never hop-by-hop or framing ones.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from conveyor import codec
from conveyor.backoff import Exponential
from conveyor.errors import Retry, Unrecoverable
from conveyor.handlers.bodies import read_capped
from conveyor.handlers.endpoints import ENDPOINT_NAME_PATTERN, WebhookEndpoint, WebhookEndpoints
from conveyor.handlers.http import check_job_header, raise_for_rate_limit, transfer_errors_as_signals
from conveyor.handlers.signing import message_id, signature_headers
from conveyor.handlers.ssrf import REDIRECT_CODES, SsrfGuard, guarded_client
from conveyor.worker.context import JobContext

if TYPE_CHECKING:
    from collections.abc import Iterable

    from conveyor.app import Conveyor, Task
    from conveyor.job import Job
    from conveyor.settings import Settings

QUEUE = "webhooks"
TASK = "webhooks.deliver"
MAX_BODY_BYTES = 1024 * 1024
EXCERPT_BYTES = 1024
USER_AGENT = "Conveyor-Webhooks/1"
# Headers the sender sets itself; job data may not set or override them.
_OWNED_HEADERS = frozenset({"content-type", "content-encoding", "user-agent"})
_OWNED_PREFIXES = ("webhook-", "conveyor-")
_GROUP_CHARS = re.compile(r"[^A-Za-z0-9._:@/+=-]")


class WebhookRequest(BaseModel):
    """Exactly one of `endpoint` (a registered name: its URL, signed) or `url` (unsigned)."""

    model_config = ConfigDict(extra="forbid")
    endpoint: str | None = Field(
        default=None, pattern=ENDPOINT_NAME_PATTERN, description="name of a registered endpoint (signed)"
    )
    url: str | None = Field(default=None, min_length=1, max_length=2048, description="a bare URL (unsigned)")
    payload: Any = None
    event: str | None = Field(default=None, max_length=200)
    headers: dict[str, str] = Field(default_factory=dict, max_length=20)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, v in value.items():
            check_job_header(name, v, owned=_OWNED_HEADERS, owned_prefixes=_OWNED_PREFIXES)
        return value

    @model_validator(mode="after")
    def _one_target(self) -> WebhookRequest:
        if (self.endpoint is None) == (self.url is None):
            raise ValueError("give exactly one of endpoint (a registered endpoint's name) or url")
        return self


class WebhookResult(BaseModel):
    url: str
    final_url: str  # always `url`: redirects are not followed (kept so results keep their shape)
    status: int
    latency_ms: float
    response: str
    response_truncated: bool
    redirects: list[str]  # always empty, as above
    signed: bool


def webhook_group(url: str | None) -> str:
    """The fairness group of a bare URL: its host and port."""
    netloc = httpx.URL(url or "").netloc.decode() or "unknown"
    return _GROUP_CHARS.sub("_", netloc.lower())[:200]


def endpoint_group(name: str) -> str:
    """The fairness group of a registered endpoint."""
    return f"endpoint:{name}"


class WebhookSender:
    """Delivers one webhook (one attempt) and classifies the answer."""

    def __init__(self, guard: SsrfGuard, endpoints: WebhookEndpoints, *, timeout_s: float = 15.0) -> None:
        self.guard = guard
        self.endpoints = endpoints
        self.timeout_s = timeout_s

    def target(self, req: WebhookRequest) -> tuple[str, WebhookEndpoint | None]:
        """The URL to POST to and the endpoint whose secrets sign it (None: a bare URL, unsigned)."""
        if req.endpoint is not None:
            endpoint = self.endpoints.get(req.endpoint)
            return endpoint.url, endpoint
        assert req.url is not None
        return req.url, None

    async def deliver(self, req: WebhookRequest, delivery_id: str = "", attempt: int = 1) -> WebhookResult:
        url, endpoint = self.target(req)
        body = codec.dumps(req.payload)
        if len(body) > MAX_BODY_BYTES:
            raise Unrecoverable(f"webhook body is {len(body)} bytes, over the limit of {MAX_BODY_BYTES}")
        msg_id = message_id(delivery_id or f"{url}:{time.time_ns()}")
        headers = {
            **req.headers,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **signature_headers(endpoint.secrets if endpoint else (), msg_id, body),
            "Conveyor-Delivery": delivery_id,
            "Conveyor-Attempt": str(attempt),
        }
        if req.event:
            headers["Conveyor-Event"] = req.event
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        with transfer_errors_as_signals(self.timeout_s, timed_out="no answer within", failed="network error"):
            async with guarded_client(self.guard, self.timeout_s) as client:
                async with asyncio.timeout_at(deadline):
                    request = client.build_request("POST", url, content=body, headers=headers)
                    response = await client.send(request, stream=True)
                try:
                    excerpt, truncated = await _excerpt(response, deadline)
                finally:
                    await response.aclose()
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        status = response.status_code
        text = excerpt.decode("utf-8", errors="replace")
        if 200 <= status < 300:
            return WebhookResult(
                url=url,
                final_url=url,
                status=status,
                latency_ms=latency_ms,
                response=text,
                response_truncated=truncated,
                redirects=[],
                signed=endpoint is not None,
            )
        if status in REDIRECT_CODES:
            location = response.headers.get("location", "")[:200]
            raise Unrecoverable(
                f"endpoint answered {status} (a redirect to {location!r}), not followed: a webhook goes only "
                "to the URL it was sent to; register the endpoint's new URL"
            )
        summary = f"endpoint answered {status} after {latency_ms} ms: {text[:200]!r}"
        raise_for_rate_limit(status, dict(response.headers), what=webhook_group(url))
        if status == 408 or status >= 500:
            raise Retry(reason=summary)
        raise Unrecoverable(summary)


async def _excerpt(response: httpx.Response, deadline: float) -> tuple[bytes, bool]:
    """The first bytes of the answer's body, read by `deadline`. The status line is the answer: a
    body that cannot be read (cut short, stalled, undecodable) is noted in the excerpt and changes
    nothing, so a 2xx whose body never ends is a delivery, not a reason to deliver again."""
    try:
        async with asyncio.timeout_at(deadline):
            return await read_capped(response, EXCERPT_BYTES)
    except TimeoutError:
        return b"[response body not read: it did not end within the attempt's budget]", True
    except httpx.DecodingError as exc:
        return f"[response body not decoded: {exc}]".encode(), True
    except httpx.HTTPError as exc:
        return f"[response body not read: {type(exc).__name__}: {exc}]"[:300].encode(), True


class WebhookTasks:
    """The declared delivery task; `send` enqueues with the target host's group set."""

    def __init__(self, task: Task[WebhookResult], sender: WebhookSender) -> None:
        self.task = task
        self.sender = sender

    async def send(
        self,
        payload: Any,
        *,
        endpoint: str | None = None,
        url: str | None = None,
        event: str | None = None,
        headers: dict[str, str] | None = None,
        **options: Any,
    ) -> Job[WebhookResult]:
        """Enqueue a delivery to a registered `endpoint` (signed) or a bare `url` (unsigned); job
        options (delay, attempts, idempotency_key...) pass through."""
        request = WebhookRequest(endpoint=endpoint, url=url, payload=payload, event=event, headers=headers or {})
        options.setdefault("group", webhook_group(url) if endpoint is None else endpoint_group(endpoint))
        return await self.task.enqueue(request.model_dump(exclude_none=True), **options)


def register(
    app: Conveyor, settings: Settings, guard: SsrfGuard, endpoints: Iterable[WebhookEndpoint] = ()
) -> WebhookTasks:
    """Declare `webhooks.deliver` on queue `webhooks` (5 attempts, exponential backoff from 2 s),
    signing for the endpoints given here and in CONVEYOR_WEBHOOK_ENDPOINTS."""
    registry = WebhookEndpoints.parse(settings.webhook_endpoints).merged(endpoints)
    sender = WebhookSender(guard, registry, timeout_s=settings.webhook_timeout_s)

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
