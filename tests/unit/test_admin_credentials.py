"""Admin credentials (chatcluster.auth.admin): TOTP against RFC 6238's test vectors, the
drift window, recovery codes, argon2id passwords, the role ladder and the lockout rule."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import pytest

from chatcluster.auth import admin
from chatcluster.auth.admin import (
    LOCKOUT_S,
    LOCKOUT_THRESHOLD,
    LOCKOUT_WINDOW_S,
    after_failure,
    hash_password,
    hotp,
    new_recovery_codes,
    new_totp_secret,
    normalize_recovery_code,
    otpauth_uri,
    password_matches,
    role_allows,
    totp_code,
    totp_match,
    totp_step,
)

# RFC 6238 Appendix B: the SHA-1 seed is the ASCII string "12345678901234567890".
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()


@pytest.mark.parametrize(("unix_time", "expected"), [
    (59, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"),
    (1234567890, "89005924"), (2000000000, "69279037"), (20000000000, "65353130"),
])
def test_totp_matches_the_rfc_6238_test_vectors(unix_time: int, expected: str) -> None:
    assert hotp(RFC_SECRET, totp_step(unix_time), digits=8) == expected


def test_hotp_matches_the_rfc_4226_test_vectors() -> None:
    expected = ["755224", "287082", "359152", "969429", "338314", "254676", "287922",
                "162583", "399871", "520489"]
    assert [hotp(RFC_SECRET, i) for i in range(10)] == expected


def test_a_code_is_accepted_one_step_either_side_and_no_further() -> None:
    secret = new_totp_secret()
    now = 1_800_000_000.0
    step = totp_step(now)
    assert totp_match(secret, totp_code(secret, now), now) == step
    assert totp_match(secret, totp_code(secret, now - 30), now) == step - 1
    assert totp_match(secret, totp_code(secret, now + 30), now) == step + 1
    stale = totp_code(secret, now - 90)
    if stale not in {totp_code(secret, now + d) for d in (-30, 0, 30)}:
        assert totp_match(secret, stale, now) is None


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "12 34 5x"])
def test_malformed_codes_never_match(code: str) -> None:
    assert totp_match(new_totp_secret(), code, 1_800_000_000.0) is None


def test_spaces_in_a_typed_code_are_ignored() -> None:
    secret, now = new_totp_secret(), 1_800_000_000.0
    code = totp_code(secret, now)
    assert totp_match(secret, f"{code[:3]} {code[3:]}", now) == totp_step(now)


def test_the_otpauth_uri_carries_the_secret_and_parameters() -> None:
    secret = new_totp_secret()
    uri = urlsplit(otpauth_uri(secret, "ops@example.com"))
    assert uri.scheme == "otpauth" and uri.netloc == "totp"
    assert uri.path == "/chatcluster:ops@example.com"
    query = parse_qs(uri.query)
    assert query["secret"] == [secret] and query["digits"] == ["6"]
    assert query["period"] == ["30"] and query["issuer"] == ["chatcluster"]


def test_recovery_codes_are_distinct_and_normalized() -> None:
    codes = new_recovery_codes()
    assert len(set(codes)) == len(codes) == admin.RECOVERY_CODES
    assert all(len(c) == 11 and c[5] == "-" for c in codes)
    assert normalize_recovery_code(f"  {codes[0].upper()} ") == codes[0]


def test_passwords_are_argon2id_and_verify() -> None:
    encoded = hash_password("correct horse battery")
    assert encoded.startswith("$argon2id$")
    assert password_matches("correct horse battery", encoded)
    assert not password_matches("correct horse batterY", encoded)
    assert not password_matches("anything", "not a hash")


@pytest.mark.parametrize(("role", "minimum", "allowed"), [
    ("owner", "owner", True), ("owner", "viewer", True), ("admin", "owner", False),
    ("admin", "admin", True), ("admin", "moderator", True), ("moderator", "admin", False),
    ("moderator", "viewer", True), ("viewer", "moderator", False), ("viewer", "viewer", True),
    ("root", "viewer", False), ("", "viewer", False),
])
def test_each_role_allows_the_roles_below_it(role: str, minimum: str, allowed: bool) -> None:
    assert role_allows(role, minimum) is allowed


def test_lockout_after_the_threshold_within_the_window() -> None:
    failures, first, locked = 0, None, None
    now = 1000.0
    for i in range(LOCKOUT_THRESHOLD - 1):
        failures, first, locked = after_failure(failures, first, now + i)
        assert locked is None
    failures, first, locked = after_failure(failures, first, now + 10)
    assert failures == LOCKOUT_THRESHOLD and first == now
    assert locked == now + 10 + LOCKOUT_S


def test_failures_older_than_the_window_start_a_new_count() -> None:
    failures, first, _ = after_failure(LOCKOUT_THRESHOLD - 1, 1000.0, 1000.0 + 1)
    assert failures == LOCKOUT_THRESHOLD  # still in the window: this one locks
    failures, first, locked = after_failure(LOCKOUT_THRESHOLD - 1, 1000.0,
                                            1000.0 + LOCKOUT_WINDOW_S + 1)
    assert (failures, locked) == (1, None) and first == 1000.0 + LOCKOUT_WINDOW_S + 1
