"""Webhook signatures: `Conveyor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.

The scheme follows Stripe's: the timestamp is signed with the body, so a captured request cannot be
replayed after the tolerance window, and several `v1=` entries may be present while a secret rotates.

Verifying on the receiving side (any framework; `body` is the raw request bytes)::

    import hashlib, hmac, time

    def verify(secret: str, body: bytes, header: str, tolerance_s: int = 300) -> bool:
        parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
        ts = next((v for k, v in parts if k == "t"), None)
        if ts is None or not ts.isdigit() or abs(time.time() - int(ts)) > tolerance_s:
            return False
        expected = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        return any(k == "v1" and hmac.compare_digest(v, expected) for k, v in parts)

or, in Python with Conveyor installed, `conveyor.handlers.signing.verify(secret, body, header)`.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "Conveyor-Signature"
DEFAULT_TOLERANCE_S = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`."""
    message = str(int(timestamp)).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value for `body`, signed now (or at `timestamp`)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={ts},v1={signature(secret, ts, body)}"


def verify(
    secret: str | list[str],
    body: bytes,
    header: str,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True if `header` carries a valid v1 signature of `body` from any of `secret`, made recently."""
    secrets = [secret] if isinstance(secret, str) else list(secret)
    pairs = [part.strip().split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [v for k, v in pairs if k == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    ts = int(stamps[0])
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        return False
    given = [v for k, v in pairs if k == "v1"]
    return any(hmac.compare_digest(v, signature(s, ts, body)) for s in secrets for v in given)
