"""One settings object, read from environment variables (and overridden by CLI flags).

Every field is documented here and in `conveyor --help`; unknown CONVEYOR_* variables are an error,
so a typo never passes silently. Rooms add their fields here, each with its env name and help.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from conveyor.errors import ConfigurationError
from conveyor.redis.durability import Durability


def _setting(env: str, help: str, default: Any = None) -> Any:
    return field(default=default, metadata={"env": env, "help": help})


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str | None = _setting(
        "REDIS_URL",
        "Redis/Valkey URL (redis://, rediss://, unix://, redis+cluster://, redis+sentinel://); "
        "unset = the embedded Valkey.",
    )
    prefix: str = _setting("CONVEYOR_PREFIX", "Key prefix in Redis.", "cv")
    log_level: str = _setting("CONVEYOR_LOG_LEVEL", "Log level (debug, info, warning, error).", "info")
    log_format: str = _setting(
        "CONVEYOR_LOG_FORMAT", "auto (colours on a terminal, JSON otherwise), json or console.", "auto"
    )
    data_dir: str | None = _setting(
        "CONVEYOR_DATA_DIR",
        "Data directory of the embedded Valkey used when REDIS_URL is unset (default: .conveyor/data "
        "of the project directory, the nearest one upwards that holds .conveyor/, else of this one).",
    )
    fsync: str = _setting(
        "CONVEYOR_FSYNC", "AOF fsync of the embedded Valkey: everysec (default) or always (no loss at all).",
        "everysec",
    )
    # HTTP API (conveyor api)
    api_host: str = _setting("CONVEYOR_API_HOST", "Address the HTTP API binds to.", "127.0.0.1")
    api_port: int = _setting("CONVEYOR_API_PORT", "Port of the HTTP API.", 8000)
    api_max_body_bytes: int = _setting(
        "CONVEYOR_API_MAX_BODY_BYTES", "Largest request body the API reads (413 above).", 4 * 1024 * 1024
    )
    api_cors_origins: str = _setting(
        "CONVEYOR_API_CORS_ORIGINS", "Comma-separated origins allowed by CORS (empty = CORS off).", ""
    )
    api_rate_limit: int = _setting(
        "CONVEYOR_API_RATE_LIMIT",
        "Default requests/s of a key created without its own limit, shared by all API processes "
        "(0 = unlimited; per key: `conveyor keys create --rate-limit N`).", 0,
    )
    api_key_cache_s: float = _setting(
        "CONVEYOR_API_KEY_CACHE_S", "Seconds an API process trusts a checked key without a rate limit before "
        "checking it again: a revoked or changed key stops working within this time (0 = check every request).",
        1.0,
    )
    api_max_streams_per_key: int = _setting(
        "CONVEYOR_API_MAX_STREAMS_PER_KEY", "Event streams (SSE) one key may hold open per API process "
        "(429 with Retry-After above).", 100,
    )
    api_max_waits_per_key: int = _setting(
        "CONVEYOR_API_MAX_WAITS_PER_KEY", "Long-polls (GET .../wait) one key may hold open per API process "
        "(429 with Retry-After above).", 100,
    )
    api_workers: int = _setting(
        "CONVEYOR_API_WORKERS", "API processes sharing the port (`conveyor api --workers N`).", 1
    )
    api_worker_healthcheck_s: float = _setting(
        "CONVEYOR_API_WORKER_HEALTHCHECK_S", "Seconds an API process (`--workers N`) has to answer its "
        "supervisor's health check, while it starts and while it serves, before it is killed and replaced.",
        60.0,
    )
    api_max_connections: int = _setting(
        "CONVEYOR_API_MAX_CONNECTIONS", "Open connections (and requests) per API process; over it new "
        "requests get 503 at once.", 2000,
    )
    api_header_timeout_s: float = _setting(
        "CONVEYOR_API_HEADER_TIMEOUT_S", "Seconds a client has to send a request's headers before the "
        "connection is closed.", 10.0,
    )
    api_body_timeout_s: float = _setting(
        "CONVEYOR_API_BODY_TIMEOUT_S", "Seconds a client has to send a request's body once its headers "
        "arrived before the connection is closed.", 30.0,
    )
    api_keepalive_s: float = _setting(
        "CONVEYOR_API_KEEPALIVE_S", "Seconds an idle keep-alive connection stays open.", 5.0
    )
    api_send_timeout_s: float = _setting(
        "CONVEYOR_API_SEND_TIMEOUT_S", "Seconds a client may leave what the API sent it unacknowledged (it "
        "stopped reading, or vanished without closing) before `conveyor api` closes the connection, freeing "
        "an event stream's or long-poll's slot; an idle connection is probed after as long (0 = the "
        "system's TCP defaults, about 15 minutes).", 30.0,
    )
    api_auth: bool = _setting(
        "CONVEYOR_API_AUTH", "Require API keys (turn off only behind a trusted proxy or on loopback).", True
    )
    api_sse_keepalive_s: float = _setting(
        "CONVEYOR_API_SSE_KEEPALIVE_S", "Seconds between keep-alive comments on event streams.", 15.0
    )
    api_sse_buffer_bytes: int = _setting(
        "CONVEYOR_API_SSE_BUFFER_BYTES", "Bytes of events (their text) an event stream may hold for a client "
        "that does not take them, besides at most 10,000 events; past either the stream ends and the client "
        "resumes with Last-Event-ID.", 1024 * 1024,
    )
    api_sse_max_s: float = _setting(
        "CONVEYOR_API_SSE_MAX_S", "Seconds an event stream stays open before the server ends it (clients "
        "reconnect with Last-Event-ID and miss nothing; 0 = no limit).", 0.0,
    )
    autoscale_target_s: float = _setting(
        "CONVEYOR_AUTOSCALE_TARGET_S",
        "Seconds in which the suggested worker count should finish the work present (/api/autoscaling).",
        60.0,
    )
    # --- built-in handlers (conveyor.handlers; see docs/handlers.md)
    ai_providers: str | None = _setting(
        "CONVEYOR_AI_PROVIDERS",
        "AI provider chain, tried in order: JSON list of {name, base_url, model, api_key_env, timeout_s}.",
    )
    ai_breaker_failures: int = _setting(
        "CONVEYOR_AI_BREAKER_FAILURES", "Failures in a row that open a provider's circuit.", 5
    )
    ai_breaker_cooldown_s: float = _setting(
        "CONVEYOR_AI_BREAKER_COOLDOWN_S", "Seconds an open circuit skips its provider.", 30.0
    )
    ai_max_input_chars: int = _setting(
        "CONVEYOR_AI_MAX_INPUT_CHARS", "Largest prompt (all messages) an AI task accepts.", 200_000
    )
    ai_dedupe: bool = _setting(
        "CONVEYOR_AI_DEDUPE", "Identical AI requests in flight at once share one provider call, fleet-wide.", True
    )
    ai_dedupe_lease_s: float = _setting(
        "CONVEYOR_AI_DEDUPE_LEASE_S",
        "Seconds a shared call's leader holds it without renewing (its followers take over after a crash).",
        30.0,
    )
    ai_reuse_ttl_s: float = _setting(
        "CONVEYOR_AI_REUSE_TTL_S", "Seconds a completed identical AI request's result is reused (0 = off).", 0.0
    )
    webhook_endpoints: str | None = _setting(
        "CONVEYOR_WEBHOOK_ENDPOINTS",
        'Webhook endpoints jobs may name, each with its URL and signing secret: JSON '
        '{"<name>": {"url": "https://...", "secret_env": "<VAR holding whsec_...>"}}.',
    )
    webhook_allow_hosts: str = _setting(
        "CONVEYOR_WEBHOOK_ALLOW_HOSTS",
        "Comma-separated hosts, IPs or CIDRs that webhooks, document URLs and the example fetch task may "
        "reach although private.",
        "",
    )
    webhook_timeout_s: float = _setting("CONVEYOR_WEBHOOK_TIMEOUT_S", "Timeout of one webhook request.", 15.0)
    webhook_attempts: int = _setting("CONVEYOR_WEBHOOK_ATTEMPTS", "Delivery attempts per webhook.", 5)
    smtp_host: str | None = _setting("CONVEYOR_SMTP_HOST", "SMTP server host for the email task.")
    smtp_port: int = _setting("CONVEYOR_SMTP_PORT", "SMTP server port.", 587)
    smtp_username: str | None = _setting("CONVEYOR_SMTP_USERNAME", "SMTP AUTH user name.")
    smtp_password: str | None = _setting("CONVEYOR_SMTP_PASSWORD", "SMTP AUTH password.")
    smtp_starttls: bool = _setting(
        "CONVEYOR_SMTP_STARTTLS", "Upgrade the SMTP connection with STARTTLS (required).", True
    )
    smtp_tls: bool = _setting("CONVEYOR_SMTP_TLS", "Implicit TLS (port 465) instead of STARTTLS.", False)
    smtp_ca_file: str | None = _setting(
        "CONVEYOR_SMTP_CA_FILE", "CA bundle that signs the SMTP server's certificate."
    )
    smtp_timeout_s: float = _setting("CONVEYOR_SMTP_TIMEOUT_S", "SMTP connect and command timeout.", 30.0)
    smtp_budget_s: float = _setting(
        "CONVEYOR_SMTP_BUDGET_S",
        "Seconds one delivery may take in all (connect, TLS, AUTH, every command and the message).",
        60.0,
    )
    email_from: str | None = _setting("CONVEYOR_EMAIL_FROM", "Default From address of the email task.")
    email_templates_dir: str | None = _setting(
        "CONVEYOR_EMAIL_TEMPLATES_DIR", "Folder of Jinja2 email templates."
    )
    email_rate_per_minute: int = _setting(
        "CONVEYOR_EMAIL_RATE_PER_MINUTE", "Emails sent per minute per queue, fleet-wide (0: no limit).", 0
    )
    documents_root: str | None = _setting(
        "CONVEYOR_DOCUMENTS_ROOT",
        "Folder that document paths must lie in (unset: paths are refused, URLs only).",
    )
    documents_max_bytes: int = _setting(
        "CONVEYOR_DOCUMENTS_MAX_BYTES", "Largest document read or downloaded.", 20 * 1024 * 1024
    )
    documents_max_chars: int = _setting(
        "CONVEYOR_DOCUMENTS_MAX_CHARS", "Extracted text is cut at this many characters.", 1_000_000
    )
    documents_max_pdf_operations: int = _setting(
        "CONVEYOR_DOCUMENTS_MAX_PDF_OPERATIONS",
        "Drawing operations a PDF may take to read, form XObjects counted each time drawn (over: the job fails).",
        2_000_000,
    )
    documents_parsers: int = _setting(
        "CONVEYOR_DOCUMENTS_PARSERS",
        "Document parser threads per worker process, counting parses that outlive a timed-out job (1-64).",
        4,
    )
    # --- worker service (`conveyor worker`)
    queues: str | None = _setting(
        "CONVEYOR_QUEUES", "Comma-separated subset of the app's queues to run (default: all)."
    )
    worker_id: str | None = _setting(
        "CONVEYOR_WORKER_ID", "Worker id in the registry and on jobs (default host:pid:random)."
    )
    worker_health_host: str = _setting(
        "WORKER_HEALTH_HOST",
        "Address the worker's /health and /metrics server binds (0.0.0.0 exposes them to the network).",
        "127.0.0.1",
    )
    worker_health_port: int = _setting(
        "WORKER_HEALTH_PORT", "Port of the worker's /health and /metrics server (0 = off).", 3002
    )
    metrics_token: str | None = _setting(
        "CONVEYOR_METRICS_TOKEN", "When set, the worker's /metrics requires `Authorization: Bearer <token>`.",
    )
    shutdown_grace_s: float = _setting(
        "CONVEYOR_SHUTDOWN_GRACE_S", "Seconds active jobs may finish after SIGTERM, then handed back.", 30.0
    )
    stats_interval_s: float = _setting(
        "CONVEYOR_STATS_INTERVAL_S", "Seconds between per-queue stats log lines (0 = off).", 30.0
    )
    metrics_interval_s: float = _setting(
        "CONVEYOR_METRICS_INTERVAL_S", "Seconds between samples of queue depths and Redis latency.", 5.0
    )
    redis_max_connections: int = _setting(
        "CONVEYOR_REDIS_MAX_CONNECTIONS",
        "Most Redis connections `conveyor worker` holds for all its queues together (standalone and "
        "Sentinel; on a Cluster, per node), plus one for the health check.", 32,
    )
    idle_calls_per_s: float = _setting(
        "CONVEYOR_IDLE_CALLS_PER_S",
        "Housekeeping calls per second `conveyor worker` spends on its idle queues together (stalled "
        "sweeps, safety-net probes); with many queues each idle queue's turn comes less often.", 2.0,
    )
    heartbeat_s: float = _setting(
        "CONVEYOR_HEARTBEAT_S", "Seconds between worker registry heartbeats (records expire after 3x).", 5.0
    )
    lease_ms: int = _setting(
        "CONVEYOR_LEASE_MS", "Job lease in ms; a job of a dead worker is recovered after it.", 30_000
    )
    stalled_interval_ms: int | None = _setting(
        "CONVEYOR_STALLED_INTERVAL_MS", "Ms between stalled-job sweeps (default: min(lease/2, 5000)).",
    )
    max_stalls: int = _setting(
        "CONVEYOR_MAX_STALLS",
        "Stalls a job may have before it fails (a stall: its lease expired while a worker was running it, "
        "as confirmed by a heartbeat; the worker died or froze).", 1,
    )
    max_lapses: int = _setting(
        "CONVEYOR_MAX_LAPSES",
        "Lease lapses before a confirmed run a job may have before it fails (its worker died before or "
        "right after starting it); a generous bound so a job that kills its worker at once cannot loop for ever.",
        10,
    )
    no_handler_timeout_s: float = _setting(
        "CONVEYOR_NO_HANDLER_TIMEOUT_S",
        "Seconds a job may wait for a worker with a handler for its name before it fails (NoHandler).", 900.0,
    )
    durable_replicas: int = _setting(
        "CONVEYOR_DURABLE_REPLICAS",
        "Replicas that must acknowledge an enqueue or an outcome before it counts (WAIT; 0 = off).", 0,
    )
    durable_aof: bool = _setting(
        "CONVEYOR_DURABLE_AOF",
        "Wait for the AOF fsync before an enqueue or an outcome counts (WAITAOF; Redis/Valkey >= 7.2).", False,
    )
    durable_timeout_ms: int = _setting(
        "CONVEYOR_DURABLE_TIMEOUT_MS", "How long to wait for the replicas/AOF before the write is reported "
        "as not durable.", 1000,
    )
    restart_backoff_max_s: float = _setting(
        "CONVEYOR_RESTART_BACKOFF_MAX_S", "Longest wait before restarting a crashed queue loop.", 30.0
    )

    scheduler: bool = _setting(
        "CONVEYOR_SCHEDULER",
        "Run the scheduler (cron/interval schedules and the maintenance schedule) inside `conveyor worker`; "
        "any number of processes may run it, each tick still makes one job.",
        True,
    )

    maintenance: bool = _setting(
        "CONVEYOR_MAINTENANCE",
        "Let the scheduler inside `conveyor worker` run the built-in maintenance schedule; off, it deletes "
        "the stored one at start, like `conveyor scheduler --no-maintenance`.",
        True,
    )

    alerts_interval_s: float = _setting(
        "CONVEYOR_ALERTS_INTERVAL_S", "Seconds between evaluations of the alert rules (by the scheduler).", 15.0
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        known_env = set()
        for f in fields(cls):
            name = f.metadata.get("env")
            if not name:
                continue
            known_env.add(name)
            if name in env:
                values[f.name] = _coerce(f.name, f.type, env[name])
        unknown = {
            k for k in env
            if k.startswith("CONVEYOR_") and k not in known_env and not _dynamic(k)
        }
        if unknown:
            raise ConfigurationError(f"unknown settings in the environment: {sorted(unknown)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def durability(self) -> Durability | None:
        """The durable-acknowledgement setting, or None when off."""
        wanted = Durability(self.durable_replicas, self.durable_aof, self.durable_timeout_ms)
        return wanted if wanted.enabled else None

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def describe(cls) -> list[tuple[str, str, Any]]:
        """(env name, help, default) for every setting, for --help and docs."""
        return [(f.metadata["env"], f.metadata["help"], f.default) for f in fields(cls) if f.metadata.get("env")]


# Settings with a per-queue suffix, e.g. CONVEYOR_CONCURRENCY_EMAILS=5.
DYNAMIC_PREFIXES = ("CONVEYOR_CONCURRENCY_",)
# Read by tools outside the settings object (conveyor.testing, the pytest plugin, API worker processes).
OTHER_KNOWN = frozenset({"CONVEYOR_SERVER_BIN", "CONVEYOR_TEST_REDIS_URL", "CONVEYOR_API_APP"})


def _dynamic(name: str) -> bool:
    return name.startswith(DYNAMIC_PREFIXES) or name in OTHER_KNOWN


def _coerce(name: str, type_: Any, raw: str) -> Any:
    text = str(type_)
    try:
        if "bool" in text:
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(raw)
        if "int" in text and "str" not in text:
            return int(raw)
        if "float" in text and "str" not in text:
            return float(raw)
    except ValueError:
        raise ConfigurationError(f"setting {name} has an invalid value {raw!r}") from None
    return raw
