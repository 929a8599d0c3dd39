"""`conveyor worker APP`: load the app, build settings from env + flags, run the service under signals.

First SIGTERM/SIGINT: stop claiming, let active jobs finish up to the grace, hand the rest back, print
the summary. Second signal: exit at once (jobs still leased are recovered by the stalled sweep).
"""

from __future__ import annotations

import asyncio
import importlib
import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Annotated, Any

import typer

from conveyor.app import Conveyor
from conveyor.errors import ConfigurationError
from conveyor.service.health import HealthServer
from conveyor.service.plan import plan_queues
from conveyor.service.supervisor import WorkerService
from conveyor.settings import Settings

FORCED_EXIT_CODE = 130


def load_app(path: str) -> Conveyor:
    """Import `module:attribute` (the current directory is importable, as with uvicorn)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"APP must look like 'module:attribute', got {path!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigurationError(f"{module_name!r} has no attribute {attr!r}")
    if not isinstance(obj, Conveyor):
        raise ConfigurationError(f"{path} is a {type(obj).__name__}, not a conveyor.Conveyor app")
    return obj


def settings_help() -> str:
    lines = ["Settings (environment variable, default); the flags above override them:", ""]
    for env, text, default in Settings.describe():
        lines.append(f"  {env} ({default!r}): {text}")
    lines.append("  CONVEYOR_CONCURRENCY_<QUEUE>: concurrency of one queue (name upper-cased, others as _).")
    return "\n\n".join(["\b\n" + "\n".join(lines)])


async def serve(service: WorkerService, settings: Settings) -> dict[str, Any]:
    """Run the service and its health server until a signal; a second signal exits at once."""
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            service.log.info("signal received: shutting down", signal=signal.Signals(signum).name)
            service.request_stop()
        else:
            service.log.warning("second signal: exiting now; leased jobs are recovered by the stalled sweep")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(FORCED_EXIT_CODE)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    health = None
    if settings.worker_health_port:
        health = HealthServer(
            service, settings.worker_health_host, settings.worker_health_port,
            metrics_token=settings.metrics_token,
        )
        try:
            await health.start()
        except OSError as exc:
            where = f"{settings.worker_health_host}:{settings.worker_health_port}"
            raise ConfigurationError(f"health server cannot listen on {where}: {exc}") from None
    try:
        return await service.run()
    finally:
        if health is not None:
            await health.close()


def run_worker(app_path: str, settings: Settings, configure_logging: Callable[[str, str], None]) -> None:
    configure_logging(settings.log_level, settings.log_format)
    try:  # until serve() handles signals, Ctrl-C (a slow import of APP, say) ends the command here
        app = load_app(app_path)
        if settings.redis_url:
            app.use_redis(settings.redis_url)
        plan = plan_queues(app, settings.queues, os.environ)
        service = WorkerService(app, settings, plan)
    except KeyboardInterrupt:
        typer.echo(f"interrupted while loading {app_path}; no worker started", err=True)
        raise typer.Exit(FORCED_EXIT_CODE) from None
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(serve(service, settings))
    sys.stdout.flush()
    if any(t.name.startswith("conveyor-job") and t.is_alive() for t in threading.enumerate()):
        # Sync handlers still running in threads were handed back; do not wait for them at exit.
        os._exit(0)


def _opt(flag: str, help: str) -> Any:
    return typer.Option(flag, help=help, show_default=False)


def worker_command(configure_logging: Callable[[str, str], None]) -> Callable[..., None]:
    """The Typer command; the CLI passes its logging set-up in (cli.py is where logging is configured)."""

    def worker(
        app_path: Annotated[
            str, typer.Argument(metavar="APP", help="module:attribute of your Conveyor app.")
        ],
        queues: Annotated[
            str | None, _opt("--queues", "Comma-separated subset (env CONVEYOR_QUEUES).")
        ] = None,
        redis_url: Annotated[str | None, _opt("--redis-url", "(env REDIS_URL)")] = None,
        health_host: Annotated[str | None, _opt("--health-host", "(env WORKER_HEALTH_HOST)")] = None,
        health_port: Annotated[int | None, _opt("--health-port", "0 = off (env WORKER_HEALTH_PORT)")] = None,
        shutdown_grace: Annotated[
            float | None, _opt("--shutdown-grace", "s (env CONVEYOR_SHUTDOWN_GRACE_S)")
        ] = None,
        stats_interval: Annotated[
            float | None, _opt("--stats-interval", "s (env CONVEYOR_STATS_INTERVAL_S)")
        ] = None,
        metrics_interval: Annotated[
            float | None, _opt("--metrics-interval", "s (env CONVEYOR_METRICS_INTERVAL_S)")
        ] = None,
        heartbeat: Annotated[float | None, _opt("--heartbeat", "s (env CONVEYOR_HEARTBEAT_S)")] = None,
        lease_ms: Annotated[int | None, _opt("--lease-ms", "(env CONVEYOR_LEASE_MS)")] = None,
        worker_id: Annotated[str | None, _opt("--worker-id", "(env CONVEYOR_WORKER_ID)")] = None,
        log_level: Annotated[
            str | None, _opt("--log-level", "debug logs payloads (env CONVEYOR_LOG_LEVEL)")
        ] = None,
        log_format: Annotated[
            str | None, _opt("--log-format", "auto, json, console (env CONVEYOR_LOG_FORMAT)")
        ] = None,
    ) -> None:
        """Run a worker for every queue APP declares, in one process, with health, metrics, graceful stop."""
        try:
            settings = Settings.from_env(
                queues=queues,
                redis_url=redis_url,
                worker_health_host=health_host,
                worker_health_port=health_port,
                shutdown_grace_s=shutdown_grace,
                stats_interval_s=stats_interval,
                metrics_interval_s=metrics_interval,
                heartbeat_s=heartbeat,
                lease_ms=lease_ms,
                worker_id=worker_id,
                log_level=log_level,
                log_format=log_format,
            )
            check_settings(settings)
            run_worker(app_path, settings, configure_logging)
        except ConfigurationError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return worker


_SECONDS = {  # the worker's settings in seconds (or per second): each must be a finite number
    "CONVEYOR_SHUTDOWN_GRACE_S": "shutdown_grace_s", "CONVEYOR_STATS_INTERVAL_S": "stats_interval_s",
    "CONVEYOR_METRICS_INTERVAL_S": "metrics_interval_s", "CONVEYOR_HEARTBEAT_S": "heartbeat_s",
    "CONVEYOR_RESTART_BACKOFF_MAX_S": "restart_backoff_max_s", "CONVEYOR_IDLE_CALLS_PER_S": "idle_calls_per_s",
    "CONVEYOR_NO_HANDLER_TIMEOUT_S": "no_handler_timeout_s",
}


def check_settings(s: Settings) -> None:
    for env, name in _SECONDS.items():  # nan passes every comparison below, and inf breaks sleeps
        if not math.isfinite(getattr(s, name)):
            raise ConfigurationError(f"{env} must be a finite number, got {getattr(s, name)!r}")
    if s.shutdown_grace_s < 0:
        raise ConfigurationError("CONVEYOR_SHUTDOWN_GRACE_S must be >= 0")
    if s.heartbeat_s <= 0 or s.metrics_interval_s <= 0 or s.stats_interval_s < 0:
        raise ConfigurationError("heartbeat and metrics intervals must be > 0, the stats interval >= 0")
    if not 0 <= s.worker_health_port <= 65535:
        raise ConfigurationError("WORKER_HEALTH_PORT must be in [0, 65535]")
    if s.lease_ms < 100:
        raise ConfigurationError("CONVEYOR_LEASE_MS must be >= 100")
    if s.restart_backoff_max_s <= 0:
        raise ConfigurationError("CONVEYOR_RESTART_BACKOFF_MAX_S must be > 0")
