"""Where an alert's notices go: a Slack-compatible webhook, a generic signed webhook, or email."""

from __future__ import annotations

import email.utils
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_URL = 2048


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c in value for c in " \r\n"):
        raise ValueError("must be an http(s) URL")
    return value


def redact_url(url: str) -> str:
    """Scheme and host only: a Slack webhook URL is itself a secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/…"


class _Channel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlackChannel(_Channel):
    """POSTs Slack's incoming-webhook JSON (`text` plus a coloured attachment), which Mattermost,
    Rocket.Chat and Discord's /slack endpoints accept too."""

    type: Literal["slack"]
    url: str = Field(min_length=1, max_length=MAX_URL)
    endpoint: str | None = Field(None, max_length=MAX_URL, description="Name of the webhook signing secret.")

    _url = field_validator("url")(_check_url)


class WebhookChannel(_Channel):
    """POSTs the alert as JSON, signed by the webhook handler (receivers verify the signature)."""

    type: Literal["webhook"]
    url: str = Field(min_length=1, max_length=MAX_URL)
    endpoint: str | None = Field(None, max_length=MAX_URL, description="Name of the webhook signing secret.")

    _url = field_validator("url")(_check_url)


class EmailChannel(_Channel):
    type: Literal["email"]
    to: list[str] = Field(min_length=1, max_length=20)

    @field_validator("to")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        for value in values:
            _, addr = email.utils.parseaddr(value)
            if not addr or "@" not in addr or any(c in value for c in "\r\n") or len(value) > 320:
                raise ValueError(f"not an email address: {value[:100]!r}")
        return values


Channel = Annotated[SlackChannel | WebhookChannel | EmailChannel, Field(discriminator="type")]
