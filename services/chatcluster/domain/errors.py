"""The error hierarchy of the whole platform.

Each subclass names one protocol error code. The socket service turns them into
``{"ok": false, "error": {"code", "message"}}`` responses and the gateway into HTTP statuses,
from one table (``protocol.errors.HTTP_STATUS``), so a rule raises a type and never a number.
"""

from __future__ import annotations


class ChatError(Exception):
    """Base of every error a client may see. ``code`` is the protocol's error code."""

    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ChatError):
    code = "bad_request"


class Unauthorized(ChatError):
    code = "unauthorized"


class Forbidden(ChatError):
    code = "forbidden"


class NotFound(ChatError):
    code = "not_found"


class Conflict(ChatError):
    code = "conflict"


class TooLarge(ChatError):
    code = "too_large"


class RateLimited(ChatError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class Unavailable(ChatError):
    """A backend could not be reached; the request had no effect or is safe to retry."""

    code = "unavailable"


class VersionConflict(Exception):
    """A compare-and-set lost a race; the caller reloads and retries. Never reaches a client."""
