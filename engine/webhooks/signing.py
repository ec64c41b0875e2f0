"""The ``X-Acd-Signature`` header: HMAC-SHA256 over the timestamp and the exact body.

How this works (Stripe's scheme): the header is ``t=<unix seconds>,v1=<hex digest>`` where the
digest is ``HMAC-SHA256(secret, f"{t}." + body)``. Signing the timestamp with the body means a
captured request cannot be replayed later with a new time: a receiver recomputes the digest
from the raw body it received, compares in constant time, and refuses a ``t`` older than its
tolerance (``verify``; docs/webhooks.md shows it in a few lines for receivers).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

# Stripe's default tolerance: wide enough for clock skew and a retry in flight, short enough
# that a captured request is useless soon after.
DEFAULT_TOLERANCE_S: Final = 300.0


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The header value for ``body`` sent at ``timestamp`` (unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and its timestamp is within
    ``tolerance_s`` of ``now``. Any malformed header is False, never an exception."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, given) for given in parts.get("v1", []))
