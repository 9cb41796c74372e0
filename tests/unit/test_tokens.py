"""Access and refresh tokens (chatcluster.auth.tokens)."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import jwt
import pytest

from chatcluster.auth import tokens
from chatcluster.auth.tokens import (
    ACCESS_TTL_S,
    REFRESH_TTL_S,
    Claims,
    TokenIssuer,
    new_secret,
    secret_digest,
    secret_matches,
)
from chatcluster.domain.errors import Unauthorized

SECRET = "s" * 16 + "0123456789abcdef"  # 32 characters
OTHER_SECRET = "o" * 16 + "0123456789abcdef"


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(SECRET)


def refused(issuer: TokenIssuer, token: str, kind: str = "access") -> Unauthorized:
    with pytest.raises(Unauthorized) as err:
        issuer.verify(token, kind)  # type: ignore[arg-type]
    assert err.value.code == "unauthorized"
    return err.value


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


# -- round trip --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["access", "refresh"])
def test_an_issued_token_verifies_to_its_claims(issuer: TokenIssuer, kind: str) -> None:
    before = int(time.time())
    token, jti = issuer.issue(kind, "app1", "user-ext-1", "sess1")  # type: ignore[arg-type]
    after = int(time.time())

    claims = issuer.verify(token, kind)  # type: ignore[arg-type]

    ttl = ACCESS_TTL_S if kind == "access" else REFRESH_TTL_S
    assert claims == Claims(app_id="app1", user_id="user-ext-1", session_id="sess1", jti=jti,
                            expires_at=claims.expires_at)
    assert before + ttl <= claims.expires_at <= after + ttl


def test_default_lifetimes() -> None:
    assert ACCESS_TTL_S == 15 * 60
    assert REFRESH_TTL_S == 30 * 24 * 3600


def test_a_given_jti_is_kept(issuer: TokenIssuer) -> None:
    token, jti = issuer.issue("refresh", "app1", "u1", "sess1", jti="jti-42")
    assert jti == "jti-42"
    assert issuer.verify(token, "refresh").jti == "jti-42"


def test_each_token_gets_its_own_random_jti(issuer: TokenIssuer) -> None:
    jtis = {issuer.issue("refresh", "app1", "u1", "sess1")[1] for _ in range(20)}
    assert len(jtis) == 20


def test_the_lifetime_is_configurable() -> None:
    issuer = TokenIssuer(SECRET, access_ttl=60, refresh_ttl=120)
    now = int(time.time())
    access = issuer.verify(issuer.issue("access", "a", "u", "s")[0], "access")
    refresh = issuer.verify(issuer.issue("refresh", "a", "u", "s")[0], "refresh")
    assert now + 60 <= access.expires_at <= now + 61
    assert now + 120 <= refresh.expires_at <= now + 121


def test_a_token_is_hs256() -> None:
    token, _ = TokenIssuer(SECRET).issue("access", "app1", "u1", "sess1")
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


# -- refusals ----------------------------------------------------------------------------------


def test_an_expired_access_token_is_refused_as_expired() -> None:
    issuer = TokenIssuer(SECRET, access_ttl=-1)
    token, _ = issuer.issue("access", "app1", "u1", "sess1")
    assert refused(issuer, token).message == "token expired"


def test_an_expired_refresh_token_is_refused_as_expired() -> None:
    issuer = TokenIssuer(SECRET, refresh_ttl=-1)
    token, _ = issuer.issue("refresh", "app1", "u1", "sess1")
    assert refused(issuer, token, "refresh").message == "token expired"


class _Clock:
    """Stands in for the ``time`` module inside chatcluster.auth.tokens."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def test_a_token_expires_once_its_lifetime_has_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    issuer = TokenIssuer(SECRET, access_ttl=60)
    clock = _Clock(time.time())
    monkeypatch.setattr(tokens, "time", clock)

    clock.now -= 59  # issued 59 s ago: one second left
    fresh, _ = issuer.issue("access", "app1", "u1", "sess1")
    clock.now -= 2  # issued 61 s ago: expired a second ago
    stale, _ = issuer.issue("access", "app1", "u1", "sess1")

    assert issuer.verify(fresh, "access").user_id == "u1"
    assert refused(issuer, stale).message == "token expired"


def test_a_token_signed_with_another_secret_is_refused(issuer: TokenIssuer) -> None:
    forged, _ = TokenIssuer(OTHER_SECRET).issue("access", "app1", "u1", "sess1")
    assert refused(issuer, forged).message == "invalid token"


def test_a_refresh_token_is_not_an_access_token(issuer: TokenIssuer) -> None:
    token, _ = issuer.issue("refresh", "app1", "u1", "sess1")
    assert refused(issuer, token, "access").message == "invalid token"


def test_an_access_token_is_not_a_refresh_token(issuer: TokenIssuer) -> None:
    token, _ = issuer.issue("access", "app1", "u1", "sess1")
    assert refused(issuer, token, "refresh").message == "invalid token"


def test_a_tampered_payload_is_refused(issuer: TokenIssuer) -> None:
    token, _ = issuer.issue("access", "app1", "alice", "sess1")
    header, payload, signature = token.split(".")
    claims = json.loads(unb64(payload))
    claims["sub"] = "mallory"
    tampered = ".".join([header, b64(json.dumps(claims).encode()), signature])

    assert refused(issuer, tampered).message == "invalid token"


def test_an_unsigned_token_is_refused(issuer: TokenIssuer) -> None:
    now = int(time.time())
    claims = {"typ": "access", "app": "app1", "sub": "u1", "sid": "s1", "jti": "j1",
              "iat": now, "exp": now + 60}
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert refused(issuer, unsigned).message == "invalid token"


def test_a_token_signed_with_another_algorithm_is_refused(issuer: TokenIssuer) -> None:
    now = int(time.time())
    claims = {"typ": "access", "app": "app1", "sub": "u1", "sid": "s1", "jti": "j1",
              "iat": now, "exp": now + 60}
    token = jwt.encode(claims, SECRET + SECRET, algorithm="HS512")
    assert refused(TokenIssuer(SECRET + SECRET), token).message == "invalid token"


@pytest.mark.parametrize("missing", ["exp", "sub", "sid", "jti", "app", "typ"])
def test_a_token_missing_a_claim_is_refused(issuer: TokenIssuer, missing: str) -> None:
    now = int(time.time())
    claims = {"typ": "access", "app": "app1", "sub": "u1", "sid": "s1", "jti": "j1",
              "iat": now, "exp": now + 60}
    del claims[missing]
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    assert refused(issuer, token).message == "invalid token"


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "Bearer x.y.z"])
def test_garbage_is_refused(issuer: TokenIssuer, token: str) -> None:
    assert refused(issuer, token).message == "invalid token"


def test_a_secret_shorter_than_32_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="32"):
        TokenIssuer("x" * 31)
    TokenIssuer("x" * 32)


# -- app secrets -------------------------------------------------------------------------------


def test_secret_digest_is_the_sha256_hex_of_the_secret() -> None:
    digest = secret_digest("app-secret")
    assert digest == hashlib.sha256(b"app-secret").hexdigest()
    assert len(digest) == 64
    assert "app-secret" not in digest


def test_secret_matches_only_the_right_secret() -> None:
    digest = secret_digest("app-secret")
    assert secret_matches("app-secret", digest)
    assert not secret_matches("app-secreT", digest)
    assert not secret_matches("", digest)


def test_new_secrets_are_long_and_distinct() -> None:
    secrets = {new_secret() for _ in range(20)}
    assert len(secrets) == 20
    assert all(len(s) >= 32 for s in secrets)
    assert all(secret_matches(s, secret_digest(s)) for s in secrets)
