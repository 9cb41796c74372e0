"""JWT access and refresh tokens (HS256, pyjwt).

An access token names the app, the user (external id) and the session; it is checked at the
socket handshake only, so an open socket outlives its expiry (PROTOCOL.md §2). A refresh token
also carries a ``jti``: the session keeps the one live jti, and a refresh token presented
after it was rotated is a replay, which revokes the whole session (reuse detection).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Literal

import jwt
import msgspec

from chatcluster.domain.errors import Unauthorized

ACCESS_TTL_S = 15 * 60
REFRESH_TTL_S = 30 * 24 * 3600
ALGORITHM = "HS256"


class Claims(msgspec.Struct, frozen=True):
    app_id: str
    user_id: str
    session_id: str
    jti: str
    expires_at: int


class TokenIssuer:
    def __init__(self, secret: str, access_ttl: int = ACCESS_TTL_S,
                 refresh_ttl: int = REFRESH_TTL_S) -> None:
        if len(secret) < 32:
            raise ValueError("the JWT secret needs at least 32 characters")
        self._secret = secret
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl

    def issue(self, kind: Literal["access", "refresh"], app_id: str, user_id: str,
              session_id: str, jti: str | None = None) -> tuple[str, str]:
        """A signed token and its jti."""
        now = int(time.time())
        jti = jti or secrets.token_urlsafe(16)
        ttl = self.access_ttl if kind == "access" else self.refresh_ttl
        claims = {"typ": kind, "app": app_id, "sub": user_id, "sid": session_id, "jti": jti,
                  "iat": now, "exp": now + ttl}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), jti

    def verify(self, token: str, kind: Literal["access", "refresh"]) -> Claims:
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM],
                                options={"require": ["exp", "sub", "sid", "jti"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("invalid token") from None
        if claims.get("typ") != kind or not isinstance(claims.get("app"), str):
            raise Unauthorized("invalid token")
        return Claims(app_id=claims["app"], user_id=str(claims["sub"]),
                      session_id=str(claims["sid"]), jti=str(claims["jti"]),
                      expires_at=int(claims["exp"]))


def new_secret() -> str:
    """A random app secret: 256 bits, so a fast digest is enough to store it."""
    return secrets.token_urlsafe(32)


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, digest: str) -> bool:
    return hmac.compare_digest(secret_digest(secret), digest)
