"""`conveyor api APP` (serve the HTTP API with uvicorn) and `conveyor keys create|list|revoke`."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from conveyor.api.keys import KeyStore
from conveyor.app import Conveyor
from conveyor.errors import ConfigurationError
from conveyor.redis.connection import connect, redact
from conveyor.settings import Settings


def load_app(spec: str) -> Conveyor:
    """`package.module:attr` (attr defaults to `app`): a Conveyor instance or a function returning one."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from None
    obj = getattr(module, attr or "app", None)
    if callable(obj) and not isinstance(obj, Conveyor):
        obj = obj()
    if not isinstance(obj, Conveyor):
        raise ConfigurationError(f"{spec!r} is not a Conveyor app (expected module:attribute)")
    return obj


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def api_command(
    app: Annotated[str, typer.Argument(help="The Conveyor app as module:attribute, e.g. myproj.jobs:app.")],
    host: Annotated[
        str | None, typer.Option(help="Bind address (env CONVEYOR_API_HOST, default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (env CONVEYOR_API_PORT, default 8000).")] = None,
    redis_url: Annotated[str | None, typer.Option("--redis-url", help="Redis URL (env REDIS_URL).")] = None,
) -> None:
    """Serve the HTTP API (enqueue, follow, operate) for APP's queues."""
    import uvicorn

    from conveyor.api.app import create_app

    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: the app module is found from the working directory
    try:
        settings = Settings.from_env(redis_url=redis_url, api_host=host, api_port=port)
        conveyor_app = load_app(app)
        asgi = create_app(conveyor_app, settings)
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    config = uvicorn.Config(
        asgi,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        try:
            await server.serve()
        finally:
            await conveyor_app.close()

    where = f"http://{settings.api_host}:{settings.api_port}"
    typer.echo(f"conveyor api: {where} (Redis {redact(conveyor_app.redis_url)})")
    _run(serve())


keys_app = typer.Typer(help="Manage API keys (stored hashed in Redis).", no_args_is_help=True)
_URL = Annotated[str | None, typer.Option("--redis-url", help="Redis URL (env REDIS_URL).")]
_PREFIX = Annotated[str | None, typer.Option(help="Key prefix (env CONVEYOR_PREFIX, default cv).")]


def _with_store(redis_url: str | None, prefix: str | None, fn: Any) -> Any:
    settings = Settings.from_env(redis_url=redis_url, prefix=prefix)
    if not settings.redis_url:
        typer.echo("error: no Redis URL: pass --redis-url or set REDIS_URL", err=True)
        raise typer.Exit(2)

    async def run() -> Any:
        client = connect(settings.redis_url or "")
        try:
            return await fn(KeyStore(client, settings.prefix))
        finally:
            await client.aclose()

    return asyncio.run(run())


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
    try:
        token, info = _with_store(redis_url, prefix, lambda s: s.create(name, scope, rate_limit=rate_limit))
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
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
