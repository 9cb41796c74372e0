"""AdminStore: operators of the platform, their credentials and what they did.

Holds admin users (argon2id password hashes, TOTP secrets, recovery-code digests), admin
tokens (digests only), login lockout counters, the audit log, the root token's rotation, and
per-app settings and secret-rotation grace digests. Apps themselves live in the ``Store``.

Guarantees:
- Durable on return, shared by every gateway replica that opens the same backend.
- Email addresses are unique (case-insensitive: callers pass them lower-cased);
  ``create_admin`` raises ``Conflict`` for a taken one.
- Single use, atomically across replicas: ``use_totp_step`` accepts a step only above the last
  accepted one, ``use_recovery_code`` removes the code it accepts; of two concurrent callers
  presenting the same code, exactly one gets True.
- ``record_login_failure`` counts atomically per key: N concurrent failures count N.
- The audit log is append-only and read newest first, ``(at, id)`` descending.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Protocol

import msgspec

from chatcluster.domain.errors import BadRequest


class AdminRecord(msgspec.Struct, kw_only=True):
    id: str
    email: str
    password_hash: str
    role: str
    created_at: str
    disabled: bool = False
    mfa_secret: str | None = None  # set at enrolment, in use once mfa_enabled
    mfa_enabled: bool = False
    totp_last_step: int = 0  # the last accepted TOTP step: codes at or below it are replays
    recovery_digests: list[str] = []
    app_ids: list[str] = []  # the apps this admin may act on; empty: every app


class AdminPatch(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Fields to change; None leaves a field as it is (``clear_mfa`` resets MFA entirely)."""

    role: str | None = None
    disabled: bool | None = None
    password_hash: str | None = None
    mfa_secret: str | None = None
    mfa_enabled: bool | None = None
    recovery_digests: list[str] | None = None
    app_ids: list[str] | None = None
    clear_mfa: bool = False


class AdminTokenRecord(msgspec.Struct, kw_only=True):
    digest: str  # SHA-256 of the token; the token itself is never stored
    admin_id: str
    created_at: str
    expires_at: float  # unix seconds
    revoked: bool = False


class Lockout(msgspec.Struct, kw_only=True):
    failures: int = 0
    first_failure_at: float | None = None
    locked_until: float | None = None


class RootToken(msgspec.Struct, kw_only=True):
    """The root token after a rotation: ``current_digest`` replaces the configured token whose
    digest is ``base_digest``. When the operator configures a different token (a new Secret),
    that one wins again: a lost root token can always be replaced from outside."""

    base_digest: str
    current_digest: str
    rotated_at: str


class AuditEntry(msgspec.Struct, kw_only=True):
    id: str
    at: str  # RFC 3339 UTC
    actor: str  # admin id, or "root"
    action: str  # e.g. "app.create", "admin.login.failed"
    target: str | None = None
    app_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    outcome: str = "ok"  # ok | denied | failed
    detail: dict[str, Any] = {}


class AuditQuery(msgspec.Struct, kw_only=True):
    actor: str | None = None
    action: str | None = None
    app_id: str | None = None
    since: str | None = None  # inclusive
    until: str | None = None  # exclusive
    before: tuple[str, str] | None = None  # (at, id) of the previous page's last entry


class AppSettings(msgspec.Struct, kw_only=True):
    """Per-app settings; ``None`` means the platform default."""

    app_id: str
    token_requests_per_minute: int | None = None
    token_requests_per_minute_per_user: int | None = None
    messages_per_minute: int | None = None
    messages_per_minute_per_user: int | None = None
    message_retention_days: int | None = None
    allowed_origins: list[str] = []
    updated_at: str | None = None


class SecretGrace(msgspec.Struct, kw_only=True):
    """The previous secret of an app, still accepted until ``until`` (unix seconds)."""

    app_id: str
    digest: str
    until: float


def encode_audit_cursor(at: str, entry_id: str) -> str:
    return base64.urlsafe_b64encode(f"{at}|{entry_id}".encode()).decode()


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")


def decode_audit_cursor(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.b64decode(cursor.encode(), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("cursor: not a cursor from this route") from None
    at, sep, entry_id = raw.partition("|")
    if not sep or not entry_id or not _RFC3339.fullmatch(at):
        raise BadRequest("cursor: not a cursor from this route")
    return at, entry_id


class AdminStore(Protocol):
    # admins -----------------------------------------------------------------------------------
    async def create_admin(self, admin: AdminRecord) -> None:
        """Insert; ``Conflict`` if the email is taken."""
        ...

    async def get_admin(self, admin_id: str) -> AdminRecord | None: ...

    async def get_admin_by_email(self, email: str) -> AdminRecord | None: ...

    async def list_admins(self) -> list[AdminRecord]:
        """Every admin, oldest first (operators are few)."""
        ...

    async def update_admin(self, admin_id: str, patch: AdminPatch) -> AdminRecord | None:
        """Apply ``patch``; the updated record, or None if there is no such admin."""
        ...

    async def delete_admin(self, admin_id: str) -> bool: ...

    async def use_totp_step(self, admin_id: str, step: int) -> bool:
        """Record ``step`` as used if it is above the last used one; False for a replay."""
        ...

    async def use_recovery_code(self, admin_id: str, code_digest: str) -> bool:
        """Remove the code and return True, or False if it is not (or no longer) there."""
        ...

    # admin tokens -----------------------------------------------------------------------------
    async def save_token(self, token: AdminTokenRecord) -> None: ...

    async def get_token(self, token_digest: str) -> AdminTokenRecord | None: ...

    async def revoke_token(self, token_digest: str) -> None: ...

    async def revoke_admin_tokens(self, admin_id: str) -> None:
        """Every token of the admin stops working (password change, disable, delete)."""
        ...

    # lockout ----------------------------------------------------------------------------------
    async def get_lockout(self, key: str) -> Lockout: ...

    async def record_login_failure(self, key: str, now: float) -> Lockout:
        """Count one failure (``auth.admin.after_failure``) and return the new state."""
        ...

    async def clear_lockout(self, key: str) -> None: ...

    # root token -------------------------------------------------------------------------------
    async def get_root_token(self) -> RootToken | None: ...

    async def set_root_token(self, root: RootToken) -> None: ...

    # audit ------------------------------------------------------------------------------------
    async def append_audit(self, entry: AuditEntry) -> None: ...

    async def query_audit(self, query: AuditQuery, limit: int) -> list[AuditEntry]:
        """Matching entries newest first, ``(at, id)`` descending, after ``query.before``."""
        ...

    # apps -------------------------------------------------------------------------------------
    async def get_app_settings(self, app_id: str) -> AppSettings | None: ...

    async def put_app_settings(self, settings: AppSettings) -> None: ...

    async def get_secret_grace(self, app_id: str) -> SecretGrace | None: ...

    async def set_secret_grace(self, grace: SecretGrace | None, app_id: str) -> None:
        """Replace the app's grace secret (None removes it)."""
        ...

    async def forget_app(self, app_id: str) -> None:
        """Drop the settings and grace secret of a deleted app."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
