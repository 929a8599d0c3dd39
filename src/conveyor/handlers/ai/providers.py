"""The ordered provider chain: which OpenAI-compatible endpoints to try, and one client per provider."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
from openai import AsyncOpenAI

from conveyor.errors import ConfigurationError
from conveyor.handlers.ai.wire import CappedTransport

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_SELECTED = 64  # names a job may list in `providers`
_KEYS = {"name", "base_url", "model", "api_key_env", "api_key", "timeout_s", "stream"}
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Provider:
    """One endpoint: name (for logs and the breaker), base URL, model, key, request timeout, and
    whether answers are streamed (into the job's output as they arrive; on by default)."""

    name: str
    base_url: str
    model: str
    api_key: str = field(default="unused", repr=False)
    timeout_s: float = DEFAULT_TIMEOUT_S
    stream: bool = True

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigurationError(f"AI provider name {self.name!r}: use 1-64 letters, digits, '.', '_', '-'")
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"AI provider {self.name!r}: base_url must be an http(s) URL")
        if not self.model:
            raise ConfigurationError(f"AI provider {self.name!r}: model is required")
        if not 0 < self.timeout_s <= 3600:
            raise ConfigurationError(f"AI provider {self.name!r}: timeout_s must be in (0, 3600]")


def _provider(entry: Any, environ: Mapping[str, str]) -> Provider:
    if not isinstance(entry, dict):
        raise ConfigurationError("each AI provider must be a JSON object")
    unknown = set(entry) - _KEYS
    if unknown:
        raise ConfigurationError(f"unknown AI provider keys {sorted(unknown)}; known: {sorted(_KEYS)}")
    missing = {"name", "base_url", "model"} - set(entry)
    if missing:
        raise ConfigurationError(f"AI provider {entry.get('name', '?')!r} is missing {sorted(missing)}")
    key = entry.get("api_key")
    env_name = entry.get("api_key_env")
    if env_name:
        key = environ.get(env_name)
        if not key:
            raise ConfigurationError(
                f"AI provider {entry['name']!r}: environment variable {env_name} (its API key) is not set"
            )
    try:
        timeout = float(entry.get("timeout_s", DEFAULT_TIMEOUT_S))
    except (TypeError, ValueError):
        raise ConfigurationError(f"AI provider {entry['name']!r}: timeout_s must be a number") from None
    stream = entry.get("stream", True)
    if not isinstance(stream, bool):
        raise ConfigurationError(f"AI provider {entry['name']!r}: stream must be true or false")
    return Provider(
        str(entry["name"]), str(entry["base_url"]), str(entry["model"]), str(key or "unused"), timeout, stream
    )


def parse_providers(raw: str | None, environ: Mapping[str, str] | None = None) -> list[Provider]:
    """Providers from CONVEYOR_AI_PROVIDERS (a JSON list); keys come from the named env variables."""
    if not raw or not raw.strip():
        return []
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"CONVEYOR_AI_PROVIDERS is not valid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise ConfigurationError("CONVEYOR_AI_PROVIDERS must be a JSON list of provider objects")
    providers = [_provider(e, os.environ if environ is None else environ) for e in entries]
    names = [p.name for p in providers]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"AI provider names must be unique, got {names}")
    return providers


class ProviderChain:
    """Providers in order, each with one SDK client (SDK retries off: the chain decides) whose
    transport bounds every answer body (wire.py)."""

    def __init__(self, providers: list[Provider]) -> None:
        self.providers = list(providers)
        self._clients: dict[str, AsyncOpenAI] = {}

    def __bool__(self) -> bool:
        return bool(self.providers)

    def select(self, names: list[str] | None) -> list[Provider]:
        if names is None:
            return list(self.providers)
        known = {p.name: p for p in self.providers}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigurationError(f"unknown AI providers {unknown[:10]}; configured: {sorted(known)}")
        # A subset of the chain, in the job's order: a name given twice is tried once (one job never
        # buys more calls to a provider by repeating its name).
        return [known[n] for n in dict.fromkeys(names)]

    def client(self, provider: Provider) -> AsyncOpenAI:
        client = self._clients.get(provider.name)
        if client is None:
            http = httpx.AsyncClient(transport=CappedTransport(), timeout=provider.timeout_s, follow_redirects=True)
            client = AsyncOpenAI(
                api_key=provider.api_key,
                base_url=provider.base_url,
                timeout=provider.timeout_s,
                max_retries=0,
                # An httpx client: what the SDK's older releases take, and newer ones besides httpx2.
                http_client=cast(Any, http),
            )
            self._clients[provider.name] = client
        return client

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
