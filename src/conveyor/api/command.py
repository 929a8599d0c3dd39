"""`conveyor api APP` (serve the HTTP API with uvicorn) and `conveyor keys create|list|revoke`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from redis.exceptions import RedisClusterException, RedisError

from conveyor.api.keys import KeyStore
from conveyor.app import Conveyor
from conveyor.errors import ConfigurationError
from conveyor.ops.common import redis_failure, run
from conveyor.redis.connection import check_url, redact
from conveyor.service.command import load_app
from conveyor.settings import Settings

logger = logging.getLogger(__name__)


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def api_command(configure_logging: Callable[[str, str], None]) -> Callable[..., None]:
    """The Typer command; the CLI passes its logging set-up in (cli.py is where logging is configured)."""

    def api(
        app: Annotated[str, typer.Argument(metavar="APP", help="module:attribute of your Conveyor app.")],
        host: Annotated[str | None, typer.Option(help="Bind address (env CONVEYOR_API_HOST).")] = None,
        port: Annotated[int | None, typer.Option(help="Port (env CONVEYOR_API_PORT, default 8000).")] = None,
        redis_url: Annotated[str | None, typer.Option("--redis-url", help="(env REDIS_URL)")] = None,
        log_level: Annotated[str | None, typer.Option(help="(env CONVEYOR_LOG_LEVEL)")] = None,
        log_format: Annotated[
            str | None, typer.Option(help="auto, json, console (env CONVEYOR_LOG_FORMAT)")
        ] = None,
        workers: Annotated[
            int | None, typer.Option(min=1, max=64, help="Processes sharing the port (env CONVEYOR_API_WORKERS).")
        ] = None,
    ) -> None:
        """Serve the HTTP API (enqueue, follow, operate) for APP's queues with uvicorn."""
        try:
            settings = Settings.from_env(
                redis_url=redis_url, api_host=host, api_port=port, log_level=log_level, log_format=log_format,
                api_workers=workers,
            )
            configure_logging(settings.log_level, settings.log_format)
            conveyor_app = load_app(app)
            check_url(settings.redis_url or conveyor_app.redis_url)  # else every request would be a 500
            if settings.api_workers > 1:
                serve_api_workers(app, conveyor_app, settings)
            else:
                serve_api(conveyor_app, settings)
        except ConfigurationError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return api


def serve_api(conveyor_app: Conveyor, settings: Settings) -> None:
    """Run uvicorn until SIGINT/SIGTERM. uvicorn shuts down gracefully (lifespan closes the API's
    connections), then re-raises the signal so the exit status tells how the process ended."""
    import uvicorn

    from conveyor.api.app import create_app
    from conveyor.api.server import make_config, raise_open_files_limit

    raise_open_files_limit(settings)
    api = create_app(conveyor_app, settings)
    api.state.conveyor_api.drain_on_exit_signals = True
    server = uvicorn.Server(make_config(api, settings))
    where = f"http://{settings.api_host}:{settings.api_port}"
    logger.info("conveyor api listening on %s (Redis %s)", where, redact(conveyor_app.redis_url))
    _run(server.serve())


def serve_api_workers(app_path: str, conveyor_app: Conveyor, settings: Settings) -> None:
    """`--workers N`: uvicorn's supervisor runs N processes on one socket, each building the API
    from the environment (the app path and every setting given as a flag are passed down there)."""
    import os

    from uvicorn.supervisors import Multiprocess

    from conveyor.api.server import APP_ENV, raise_open_files_limit

    raise_open_files_limit(settings)  # the processes inherit it
    os.environ[APP_ENV] = app_path
    os.environ["REDIS_URL"] = conveyor_app.redis_url
    os.environ["CONVEYOR_LOG_LEVEL"] = settings.log_level
    os.environ["CONVEYOR_LOG_FORMAT"] = settings.log_format
    config = workers_config(settings)
    sock = config.bind_socket()
    where = f"http://{settings.api_host}:{settings.api_port}"
    logger.info("conveyor api listening on %s with %d processes (Redis %s)", where, settings.api_workers,
                redact(conveyor_app.redis_url))
    Multiprocess(config, sockets=[sock]).run()


def workers_config(settings: Settings) -> Any:
    """uvicorn's configuration for `--workers N` (the app is built in each process from the environment).

    uvicorn's supervisor pings each process and kills one that does not answer in time; its default
    of 5 s kills healthy processes on a busy machine (a new one still importing, or one that waited
    that long for a CPU) and, with every replacement killed the same way, leaves the port with
    nobody accepting. The time allowed is `api_worker_healthcheck_s`."""
    if not settings.api_worker_healthcheck_s > 0:
        raise ConfigurationError("CONVEYOR_API_WORKER_HEALTHCHECK_S must be > 0")
    from conveyor.api.server import make_config

    return make_config(
        "conveyor.api.server:app_from_env", settings, factory=True, workers=settings.api_workers,
        loop="uvloop" if _has_uvloop() else "asyncio", timeout_worker_healthcheck=settings.api_worker_healthcheck_s,
    )


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


keys_app = typer.Typer(help="Manage API keys (stored hashed in Redis).", no_args_is_help=True)
_URL = Annotated[str | None, typer.Option("--redis-url", help="Redis URL (env REDIS_URL).")]
_PREFIX = Annotated[str | None, typer.Option(help="Key prefix (env CONVEYOR_PREFIX, default cv).")]


def _with_store(redis_url: str | None, prefix: str | None, fn: Any) -> Any:
    """Run `fn(KeyStore)` on the server (REDIS_URL, else the project's embedded one)."""
    return run(redis_url, prefix, lambda target: fn(KeyStore(target.client, target.prefix)), _failure)


def _failure(exc: Exception, url: str) -> tuple[str, int] | None:
    """A bad setting, URL or key option is one error line and exit status 2, an unusable server one
    line and status 1 (as the operator commands); any other error goes up."""
    if isinstance(exc, ConfigurationError):
        return str(exc), 2
    if isinstance(exc, RedisError | RedisClusterException | OSError):  # OSError: ConnectionFailedError too
        return redis_failure(exc, url) or str(exc), 1
    return None


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A label for the key (who uses it).")],
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help="enqueue, read, read-data or admin (repeatable).")
    ],
    rate_limit: Annotated[
        int | None, typer.Option(help="Requests/s for this key (0 = none; default CONVEYOR_API_RATE_LIMIT).")
    ] = None,
    redis_url: _URL = None,
    prefix: _PREFIX = None,
) -> None:
    """Create a key and print it once: only its hash is stored."""
    token, info = _with_store(redis_url, prefix, lambda s: s.create(name, scope, rate_limit=rate_limit))
    typer.echo(
        f"created key {info.id} ({info.name}) with scopes {', '.join(info.scopes)}; store it now:", err=True
    )
    typer.echo(token)


@keys_app.command("list")
def keys_list(redis_url: _URL = None, prefix: _PREFIX = None) -> None:
    """List keys (id, name, scopes, rate limit, created); secrets are never shown."""
    for k in _with_store(redis_url, prefix, lambda s: s.list()):
        created = datetime.fromtimestamp(k.created_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        rate = "default" if k.rate_limit is None else str(k.rate_limit)
        typer.echo(f"{k.id}  {k.name}  scopes={','.join(k.scopes)}  rate={rate}  created={created}")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id shown by `keys list`.")],
    redis_url: _URL = None,
    prefix: _PREFIX = None,
) -> None:
    """Revoke a key; every API process refuses it from the next request on."""
    if not _with_store(redis_url, prefix, lambda s: s.revoke(key_id)):
        typer.echo(f"error: no key with id {key_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")
