"""Registered webhook endpoints: each signing secret belongs to one named endpoint and its URL.

The application declares its customers' endpoints (`install(app, webhook_endpoints=[...])`) or the
operator lists them in CONVEYOR_WEBHOOK_ENDPOINTS. A job either names an endpoint (it is sent to
that endpoint's URL, signed with its secrets) or gives a bare URL (it is sent with no customer
secret, unsigned). Job data never chooses which secret signs a body sent to which URL, so a caller
who may enqueue deliveries cannot obtain a customer's signature on a request aimed anywhere else.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from conveyor.errors import ConfigurationError, Unrecoverable
from conveyor.handlers.signing import check_secret

ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
ENDPOINT_NAME_PATTERN = ENDPOINT_NAME.pattern
_SETTING = "CONVEYOR_WEBHOOK_ENDPOINTS"
_FIELDS = frozenset({"url", "secret", "secret_env"})


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """One customer endpoint: a name jobs use, the URL deliveries go to, and its secrets (the first
    is the current one; all of them sign while a secret rotates)."""

    name: str
    url: str
    secrets: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not ENDPOINT_NAME.match(self.name):
            raise ConfigurationError(
                f"webhook endpoint name {self.name!r}: 1-100 letters, digits, '.', '_' or '-'"
            )
        try:
            url = httpx.URL(self.url)
        except (httpx.InvalidURL, TypeError):
            raise ConfigurationError(f"webhook endpoint {self.name!r} has an invalid URL") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigurationError(f"webhook endpoint {self.name!r} needs an http(s) URL with a host")
        if not self.secrets:
            raise ConfigurationError(f"webhook endpoint {self.name!r} has no secret")
        for secret in self.secrets:
            check_secret(secret, f"the secret of webhook endpoint {self.name!r}")

    @classmethod
    def of(cls, name: str, url: str, secret: str | Sequence[str]) -> WebhookEndpoint:
        return cls(name, url, (secret,) if isinstance(secret, str) else tuple(secret))

    def __repr__(self) -> str:  # never print secrets
        return f"WebhookEndpoint(name={self.name!r}, url={self.url!r}, secrets=<{len(self.secrets)}>)"


class WebhookEndpoints:
    """The endpoints a worker may sign for, by name."""

    def __init__(self, endpoints: Iterable[WebhookEndpoint] = ()) -> None:
        self._by_name: dict[str, WebhookEndpoint] = {}
        for endpoint in endpoints:
            if endpoint.name in self._by_name:
                raise ConfigurationError(f"webhook endpoint {endpoint.name!r} is declared twice")
            self._by_name[endpoint.name] = endpoint

    @classmethod
    def parse(cls, raw: str | None, environ: Mapping[str, str] | None = None) -> WebhookEndpoints:
        """From CONVEYOR_WEBHOOK_ENDPOINTS: `{"<name>": {"url": ..., "secret_env": "VAR"}}` (or
        `"secret"`; either may be a list while a secret rotates)."""
        if not raw:
            return cls()
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{_SETTING} is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ConfigurationError(
                f'{_SETTING} must be a JSON object {{"<name>": {{"url": ..., "secret_env": ...}}}}'
            )
        env = os.environ if environ is None else environ
        return cls(_endpoint(name, spec, env) for name, spec in value.items())

    def merged(self, other: Iterable[WebhookEndpoint]) -> WebhookEndpoints:
        return WebhookEndpoints([*self, *other])

    def get(self, name: str) -> WebhookEndpoint:
        endpoint = self._by_name.get(name)
        if endpoint is None:
            raise Unrecoverable(
                f"no webhook endpoint named {name!r} is registered on this worker "
                f"(declare it in the app or in {_SETTING})"
            )
        return endpoint

    def __iter__(self) -> Iterator[WebhookEndpoint]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)


def _endpoint(name: str, spec: Any, env: Mapping[str, str]) -> WebhookEndpoint:
    where = f"{_SETTING}[{name!r}]"
    if not isinstance(spec, dict) or not isinstance(spec.get("url"), str) or set(spec) - _FIELDS:
        raise ConfigurationError(f'{where} must be {{"url": "...", "secret_env": "VAR"}} (or "secret")')
    if ("secret" in spec) == ("secret_env" in spec):
        raise ConfigurationError(f"{where} needs exactly one of secret_env or secret")
    if "secret_env" in spec:
        names = _strings(spec["secret_env"], where)
        missing = [n for n in names if not env.get(n)]
        if missing:
            raise ConfigurationError(f"{where}: environment variable(s) {missing} are not set")
        secrets = [env[n] for n in names]
    else:
        secrets = _strings(spec["secret"], where)
    return WebhookEndpoint(name, spec["url"], tuple(secrets))


def _strings(value: Any, where: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise ConfigurationError(f"{where}: a secret is a non-empty string or a list of them")
    return items
