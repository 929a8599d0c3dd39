"""Webhook signatures as the Standard Webhooks specification defines them (the `standardwebhooks` package).

Every delivery carries three headers:

* `webhook-id`: the message id, the same on every attempt of one delivery (receivers de-duplicate on it);
* `webhook-timestamp`: unix seconds when this attempt was signed (receivers refuse old ones: replays);
* `webhook-signature`: `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<raw body>")>`, one entry per
  secret of the endpoint, separated by spaces, so a receiver keeps working while a secret rotates.

A secret is `whsec_` followed by the base64 of 24 to 64 random bytes (`new_secret()` makes one). A
receiver verifies with the same package, in any framework (`body` is the raw request bytes)::

    from standardwebhooks import Webhook

    payload = Webhook(secret).verify(body, headers)   # raises WebhookVerificationError if not valid
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets as random_source
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook, WebhookVerificationError

from conveyor.errors import ConfigurationError

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


def new_secret() -> str:
    """A fresh signing secret (32 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(random_source.token_bytes(32)).decode()


def check_secret(secret: str, where: str = "webhook secret") -> str:
    """`secret` if it is a usable Standard Webhooks secret, else ConfigurationError (never echoing it)."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ConfigurationError(f"{where} must start with {SECRET_PREFIX!r} (make one with new_secret())")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{where} is not valid base64 after {SECRET_PREFIX!r}") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ConfigurationError(
            f"{where} must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, it holds {len(key)}"
        )
    return secret


def message_id(delivery: str) -> str:
    """The `webhook-id` of a delivery: stable across attempts, and free of the `.` that separates
    the signed parts (a job id may contain one)."""
    return "msg_" + hashlib.sha256(delivery.encode()).hexdigest()[:32]


def signature_headers(
    secrets: Sequence[str], msg_id: str, body: bytes, timestamp: datetime | None = None
) -> dict[str, str]:
    """The three headers for `body`, signed now (or at `timestamp`) with every secret given.

    With no secret (a delivery to a bare URL) only the id and timestamp are sent."""
    when = timestamp or datetime.now(UTC)
    headers = {ID_HEADER: msg_id, TIMESTAMP_HEADER: str(int(when.timestamp()))}
    if secrets:
        text = body.decode()
        headers[SIGNATURE_HEADER] = " ".join(Webhook(s).sign(msg_id, when, text) for s in secrets)
    return headers


def verify(secret: str | Sequence[str], body: bytes, headers: Mapping[str, str]) -> bool:
    """True if `headers` carry a valid, recent signature of `body` by any of `secret`."""
    candidates = [secret] if isinstance(secret, str) else list(secret)
    for candidate in candidates:
        try:
            Webhook(candidate).verify(body, dict(headers), json_parse=False)
        except (WebhookVerificationError, ValueError):
            continue
        return True
    return False
