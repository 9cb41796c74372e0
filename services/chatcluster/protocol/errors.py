"""One table from error codes to HTTP statuses, and the WebSocket close codes we use."""

from __future__ import annotations

HTTP_STATUS: dict[str, int] = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "too_large": 413,
    "rate_limited": 429,
    "unavailable": 503,
    "internal": 500,
}

CLOSE_SESSION_REVOKED = 4001  # logged out or revoked: do not reconnect with this session
CLOSE_USER_BANNED = 4003  # banned user or disabled app
CLOSE_POLICY = 1008  # repeated abuse (RFC 6455 §7.4.1)
CLOSE_TOO_BIG = 1009  # frame over the hard limit; websockets sends it itself
CLOSE_RESTARTING = 1012  # replica draining: reconnect to another URL
CLOSE_TRY_AGAIN_LATER = 1013  # client too slow to read its events
