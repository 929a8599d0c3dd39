"""Where an alert's notices go: a Slack-compatible webhook, a generic webhook, or email.

A webhook channel gives either `url` (sent unsigned, as every bare-URL webhook is) or `endpoint`, the
name of a registered webhook endpoint (sent to that endpoint's URL, signed with its secrets).
"""

from __future__ import annotations

import email.utils
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_URL = 2048
MAX_ADDRESS = 320
ENDPOINT_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"  # as the webhook handler's endpoint registry


def _check_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c in value for c in " \r\n"):
        raise ValueError("must be an http(s) URL")
    return value


def redact_url(url: str) -> str:
    """Scheme and host only: a Slack webhook URL is itself a secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/…"


class _Channel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # lax where read back (rules.py)


class _HookChannel(_Channel):
    url: str | None = Field(None, min_length=1, max_length=MAX_URL, description="A bare URL (unsigned).")
    endpoint: str | None = Field(
        None, pattern=ENDPOINT_NAME, description="A registered webhook endpoint: its URL, signed with its secrets."
    )

    _url = field_validator("url")(_check_url)

    @model_validator(mode="after")
    def _one_target(self) -> _HookChannel:
        if (self.url is None) == (self.endpoint is None):
            raise ValueError("give exactly one of url or endpoint (a registered webhook endpoint)")
        return self


class SlackChannel(_HookChannel):
    """POSTs Slack's incoming-webhook JSON (`text` plus a coloured attachment), which Mattermost,
    Rocket.Chat and Discord's /slack endpoints accept too."""

    type: Literal["slack"]


class WebhookChannel(_HookChannel):
    """POSTs the alert as JSON through the webhook handler (signed when it names an endpoint)."""

    type: Literal["webhook"]


class EmailChannel(_Channel):
    type: Literal["email"]
    to: list[Annotated[str, Field(max_length=MAX_ADDRESS)]] = Field(min_length=1, max_length=20)

    @field_validator("to")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        for value in values:
            _, addr = email.utils.parseaddr(value)
            if not addr or "@" not in addr or any(c in value for c in "\r\n") or len(value) > MAX_ADDRESS:
                raise ValueError(f"not an email address: {value[:100]!r}")
        return values


Channel = Annotated[SlackChannel | WebhookChannel | EmailChannel, Field(discriminator="type")]
