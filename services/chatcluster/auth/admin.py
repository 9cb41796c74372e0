"""Admin credentials: argon2id passwords, TOTP (RFC 6238), recovery codes, opaque admin tokens,
the role ladder and the lockout rule.

Everything here is a pure function of its arguments (the clock is passed in) except hashing
and the random generators, so the rules are tested without a server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from typing import Literal
from urllib.parse import quote, urlencode

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

AdminRole = Literal["viewer", "moderator", "admin", "owner"]
ROLES: tuple[AdminRole, ...] = ("viewer", "moderator", "admin", "owner")
# Each role can do everything the roles below it can.
ROLE_RANK: dict[str, int] = {role: rank for rank, role in enumerate(ROLES)}

# Admin tokens: one hour, short enough that a leaked one ages out within a working session;
# logout (or disabling the admin) revokes it at once.
ADMIN_TOKEN_TTL_S = 3600
ADMIN_TOKEN_PREFIX = "adm_"

# RFC 6238 defaults, which every authenticator app uses: SHA-1, 6 digits, 30 s steps.
TOTP_STEP_S = 30
TOTP_DIGITS = 6
# Accept the previous and the next step too (RFC 6238 §5.2: clock drift and typing time).
TOTP_DRIFT_STEPS = 1
TOTP_SECRET_BYTES = 20  # 160 bits, the HMAC-SHA1 block the RFC's reference uses
RECOVERY_CODES = 10

# Lockout: 5 failed logins (wrong password, wrong or reused code) within 15 minutes lock the
# account for 15 minutes. 5 leaves room for typos; 15 min makes online guessing of a password
# hopeless (at most 480 guesses a day) without locking an owner out for long.
LOCKOUT_THRESHOLD = 5
LOCKOUT_WINDOW_S = 15 * 60
LOCKOUT_S = 15 * 60

# argon2id with the RFC 9106 "second recommended" low-memory parameters (64 MiB, t=3, p=4).
_hasher = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4)


def role_allows(role: str, minimum: str) -> bool:
    """True when ``role`` is at least ``minimum`` on the ladder viewer < moderator < admin <
    owner; an unknown role allows nothing."""
    return ROLE_RANK.get(role, -1) >= ROLE_RANK[minimum]


# -- passwords -------------------------------------------------------------------------------
def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(password: str, encoded: str) -> bool:
    try:
        return _hasher.verify(encoded, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


_DUMMY_HASH: str | None = None


def burn_password_check(password: str) -> None:
    """Spend the time of one verification, so an unknown email answers as slowly as a wrong
    password (no account enumeration by timing)."""
    global _DUMMY_HASH  # noqa: PLW0603 - computed once, lazily, to keep imports fast
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
    password_matches(password, _DUMMY_HASH)


# -- opaque tokens and digests ---------------------------------------------------------------
def digest(value: str) -> str:
    """SHA-256 hex: for random, high-entropy values (tokens, recovery codes) a fast digest is
    enough; only passwords need a slow hash."""
    return hashlib.sha256(value.encode()).hexdigest()


def new_admin_token() -> str:
    return ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_root_token() -> str:
    return secrets.token_urlsafe(32)


def new_recovery_codes(count: int = RECOVERY_CODES) -> list[str]:
    """``xxxxx-xxxxx`` codes of 50 random bits each (base32, no ambiguous padding)."""
    codes = []
    for _ in range(count):
        raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()[:10]
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def normalize_recovery_code(code: str) -> str:
    return code.strip().lower().replace(" ", "")


# -- TOTP (RFC 6238 over RFC 4226 HOTP) --------------------------------------------------------
def new_totp_secret() -> str:
    return base64.b32encode(secrets.token_bytes(TOTP_SECRET_BYTES)).decode().rstrip("=")


def _secret_bytes(secret: str) -> bytes:
    padded = secret.upper() + "=" * (-len(secret) % 8)
    return base64.b32decode(padded)


def hotp(secret: str, counter: int, digits: int = TOTP_DIGITS) -> str:
    """RFC 4226 §5.3: HMAC-SHA1 of the big-endian counter, dynamically truncated."""
    mac = hmac.new(_secret_bytes(secret), struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10 ** digits).zfill(digits)


def totp_step(now: float) -> int:
    return int(now // TOTP_STEP_S)


def totp_code(secret: str, now: float) -> str:
    return hotp(secret, totp_step(now))


def totp_match(secret: str, code: str, now: float) -> int | None:
    """The time step whose code ``code`` is (within the drift window), or None.

    The caller must refuse a step at or below the last one it accepted: a code seen once (over
    a shoulder, in a log) cannot be replayed within its window (RFC 6238 §5.2)."""
    code = code.strip().replace(" ", "")
    if len(code) != TOTP_DIGITS or not code.isdigit():
        return None
    current = totp_step(now)
    for step in range(current - TOTP_DRIFT_STEPS, current + TOTP_DRIFT_STEPS + 1):
        if hmac.compare_digest(hotp(secret, step), code):
            return step
    return None


def otpauth_uri(secret: str, account: str, issuer: str = "chatcluster") -> str:
    """The ``otpauth://`` URI authenticator apps read from a QR code (Key Uri Format)."""
    label = quote(f"{issuer}:{account}", safe="@:")
    query = urlencode({"secret": secret, "issuer": issuer, "algorithm": "SHA1",
                       "digits": TOTP_DIGITS, "period": TOTP_STEP_S})
    return f"otpauth://totp/{label}?{query}"


# -- lockout -----------------------------------------------------------------------------------
def after_failure(failures: int, first_failure_at: float | None, now: float
                  ) -> tuple[int, float, float | None]:
    """The next lockout counter after one more failure: ``(failures, first_failure_at,
    locked_until)``. Failures older than the window start a new count."""
    if first_failure_at is None or now - first_failure_at > LOCKOUT_WINDOW_S:
        failures, first_failure_at = 0, now
    failures += 1
    locked_until = now + LOCKOUT_S if failures >= LOCKOUT_THRESHOLD else None
    return failures, first_failure_at, locked_until
