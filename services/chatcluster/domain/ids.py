"""Identifiers and timestamps. The only domain module that reads the clock or randomness,
so that rules stay pure and tests pass ids and times in."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime


def new_id(prefix: str) -> str:
    """``prefix_`` + 20 url-safe random characters (120 bits): unguessable, unique without
    coordination between replicas."""
    return f"{prefix}_{secrets.token_urlsafe(15)}"


def now_rfc3339() -> str:
    """UTC time with milliseconds, e.g. ``2026-11-26T01:48:33.123Z`` (RFC 3339)."""
    return rfc3339(time.time())


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_rfc3339(value: str) -> float:
    """The unix time of an RFC 3339 string (``rfc3339``'s format, or any offset)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
