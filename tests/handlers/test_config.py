"""Handler settings: the provider chain, secrets and Retry-After parsing reject bad input clearly."""

from __future__ import annotations

import json
import time
from email.utils import formatdate

import pytest

from conveyor import ConfigurationError, RateLimited
from conveyor.handlers.ai import parse_providers
from conveyor.handlers.endpoints import WebhookEndpoints
from conveyor.handlers.http import raise_for_rate_limit, slow_down_wait
from conveyor.settings import Settings


def test_provider_chain_from_settings_reads_keys_from_the_environment() -> None:
    raw = json.dumps(
        [
            {
                "name": "openai",
                "base_url": "https://api.openai.com/v1",
                "model": "gpt-4o-mini",
                "api_key_env": "OPENAI_API_KEY",
                "timeout_s": 20,
            },
            {"name": "local", "base_url": "http://llm.internal:8000/v1", "model": "qwen"},
        ]
    )
    settings = Settings.from_env({"CONVEYOR_AI_PROVIDERS": raw, "CONVEYOR_AI_BREAKER_FAILURES": "3"})
    assert settings.ai_breaker_failures == 3
    openai, local = parse_providers(settings.ai_providers, {"OPENAI_API_KEY": "sk-test"})
    assert (openai.name, openai.api_key, openai.timeout_s) == ("openai", "sk-test", 20.0)
    assert (local.api_key, local.timeout_s) == ("unused", 60.0)
    assert "sk-test" not in repr(openai), "keys stay out of reprs and logs"
    assert parse_providers(None) == [] and parse_providers("  ") == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"name": "x"}', "must be a JSON list"),
        ('[{"name": "x", "base_url": "http://h/v1"}]', "missing \\['model'\\]"),
        ('[{"name": "x", "base_url": "http://h/v1", "model": "m", "colour": "red"}]', "unknown AI provider keys"),
        ('[{"name": "x", "base_url": "ftp://h", "model": "m"}]', "http\\(s\\) URL"),
        ('[{"name": "x y", "base_url": "http://h", "model": "m"}]', "provider name"),
        ('[{"name": "x", "base_url": "http://h", "model": "m", "api_key_env": "NOPE_KEY"}]', "NOPE_KEY"),
        (
            json.dumps([{"name": "x", "base_url": "http://h", "model": "m"}] * 2),
            "unique",
        ),
    ],
)
def test_bad_provider_settings_are_configuration_errors(raw: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_providers(raw, {})


def test_bad_endpoints_and_unknown_settings() -> None:
    with pytest.raises(ConfigurationError, match="CONVEYOR_WEBHOOK_ENDPOINTS"):
        WebhookEndpoints.parse('["a"]')
    with pytest.raises(ConfigurationError, match="CONVEYOR_WEBHOOK_ENDPOINTS"):
        WebhookEndpoints.parse('{"a": {"url": "https://a.example", "secret": ""}}')
    with pytest.raises(ConfigurationError, match="CONVEYOR_WEBHOOK_SECRETS"):
        Settings.from_env({"CONVEYOR_WEBHOOK_SECRETS": '{"*": "x"}'})  # the old setting is refused loudly
    with pytest.raises(ConfigurationError, match="CONVEYOR_SMTP_HOTS"):
        Settings.from_env({"CONVEYOR_SMTP_HOTS": "typo"})
    with pytest.raises(ConfigurationError, match="smtp_port"):
        Settings.from_env({"CONVEYOR_SMTP_PORT": "twenty-five"})


def test_retry_after_forms() -> None:
    assert slow_down_wait(429, {"Retry-After": "12"}) == 12
    assert slow_down_wait(429, {"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    wait = slow_down_wait(429, {"Retry-After": formatdate(time.time() + 20, usegmt=True)})
    assert wait is not None and 18 <= wait <= 20
    assert slow_down_wait(429, {"Retry-After": formatdate(time.time() - 60, usegmt=True)}) == 1.0  # the floor
    assert slow_down_wait(429, {"Retry-After": "soon"}) == 5.0
    assert slow_down_wait(429, {}) == 5.0
    assert slow_down_wait(429, {"Retry-After": "999999"}) == 3600
    with pytest.raises(RateLimited):
        raise_for_rate_limit(429, {})
    with pytest.raises(RateLimited):
        raise_for_rate_limit(503, {"Retry-After": "3"})
    raise_for_rate_limit(503, {})
    raise_for_rate_limit(200, {"Retry-After": "3"})
