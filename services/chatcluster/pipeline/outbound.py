"""Outbound webhook HTTP: signing, the retry schedule, and a sender that refuses private
addresses and never follows redirects.

    sign / verify       HMAC-SHA256 over ``f"{timestamp}." + body``, in ``X-Chat-Signature:
                        t=<unix seconds>,v1=<hex>`` (the scheme Stripe uses: the timestamp is
                        signed, so a captured request cannot be replayed later)
    RetryPolicy         attempts, exponential backoff with jitter, per-attempt timeout (env)
    classify            an HTTP answer -> delivered | retry (408, 429, 5xx) | give up
    address_allowed     the SSRF guard for one IP address
    HttpSender          resolves the host, checks *every* address, connects to a checked one
                        (so DNS cannot change its answer between check and connect), one try
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import ipaddress
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import httpx

from chatcluster import __version__

SIGNATURE_HEADER = "X-Chat-Signature"
DELIVERY_HEADER = "X-Chat-Delivery"
EVENT_HEADER = "X-Chat-Event"
ATTEMPT_HEADER = "X-Chat-Attempt"
# 5 minutes: what receivers are told to accept between our timestamp and their clock.
SIGNATURE_TOLERANCE_S = 300

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now: float,
           tolerance: float = SIGNATURE_TOLERANCE_S) -> bool:
    """What a receiver does (docs/webhooks.md has the same recipe without this package)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split(",v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


@dataclass(frozen=True)
class RetryPolicy:
    """Defaults: 10 attempts over about 4 hours (30 s, 1, 2, 4 ... min, capped at 6 h apart),
    so a receiver that is down for a deploy or an afternoon still gets everything."""

    max_attempts: int = 10
    base_s: float = 30.0
    max_s: float = 6 * 3600.0
    # 10 s per attempt: receivers should answer fast and queue their own work.
    timeout_s: float = 10.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        return cls(max_attempts=int(_env_float("CHAT_WEBHOOKS_MAX_ATTEMPTS", cls.max_attempts)),
                   base_s=_env_float("CHAT_WEBHOOKS_RETRY_BASE_S", cls.base_s),
                   max_s=_env_float("CHAT_WEBHOOKS_RETRY_MAX_S", cls.max_s),
                   timeout_s=_env_float("CHAT_WEBHOOKS_TIMEOUT_S", cls.timeout_s))

    def backoff(self, attempt: int) -> float:
        """The ceiling of the wait after failed attempt ``attempt`` (1-based)."""
        return min(self.max_s, self.base_s * 2.0 ** (attempt - 1))

    def delay(self, attempt: int, retry_after: float | None = None,
              rand: Callable[[], float] = random.random) -> float:
        """Wait before the next attempt: between half and all of the backoff ("equal jitter",
        so receivers that failed together do not come back together), and never less than the
        receiver's ``Retry-After`` (itself capped at ``max_s``)."""
        ceiling = self.backoff(attempt)
        wait = ceiling / 2 + rand() * ceiling / 2
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_s))
        return wait


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    retryable: bool
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as delay-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def classify(status: int, headers: Mapping[str, str], now: float) -> Outcome:
    if 200 <= status < 300:
        return Outcome(delivered=True, retryable=False, status=status)
    if 300 <= status < 400:
        return Outcome(delivered=False, retryable=False, status=status,
                       error=f"HTTP {status}: redirects are not followed")
    if status in (408, 429) or status >= 500:
        return Outcome(delivered=False, retryable=True, status=status, error=f"HTTP {status}",
                       retry_after=retry_after_seconds(headers.get("retry-after"), now))
    return Outcome(delivered=False, retryable=False, status=status, error=f"HTTP {status}")


def address_allowed(ip: IPAddress) -> bool:
    """Public unicast only. IPv4-mapped, 6to4, Teredo and NAT64 addresses are judged by the
    IPv4 address inside, so ``::ffff:127.0.0.1`` is loopback here too."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner: IPAddress | None = ip.ipv4_mapped or ip.sixtofour
        if inner is None and ip.teredo is not None:
            inner = ip.teredo[1]
        if inner is None and ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None:
            return address_allowed(inner)
    return ip.is_global and not ip.is_multicast


class Refused(Exception):
    """The URL may not be called (scheme, or an address the guard refuses): no retry."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class HttpSender:
    """One attempt of one delivery. Connects to an address it checked itself; sends the
    original host in ``Host`` and, for https, as the TLS server name, so certificates still
    verify against the name."""

    def __init__(self, *, timeout_s: float, allow_private: bool,
                 resolver: Resolver = system_resolver,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.timeout_s = timeout_s
        self.allow_private = allow_private
        self.resolver = resolver
        self.client = httpx.AsyncClient(
            follow_redirects=False, trust_env=False, transport=transport,
            timeout=httpx.Timeout(timeout_s), limits=httpx.Limits(max_connections=100),
            headers={"User-Agent": f"chatcluster-webhooks/{__version__}"})

    @classmethod
    def from_env(cls, timeout_s: float) -> HttpSender:
        return cls(timeout_s=timeout_s,
                   allow_private=os.environ.get("CHAT_WEBHOOKS_ALLOW_PRIVATE") == "1")

    async def target(self, url: str) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
        """The URL to connect to (host replaced by a checked address), extra headers, and
        request extensions. Raises ``Refused``."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise Refused(f"invalid URL: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise Refused("only http:// and https:// URLs with a host are allowed")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            literal: IPAddress | None = ipaddress.ip_address(parsed.host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = await self.resolver(parsed.host, port)
            except OSError as exc:
                raise ConnectionError(f"cannot resolve {parsed.host}: {exc}") from exc
            if not addresses:
                raise ConnectionError(f"cannot resolve {parsed.host}")
        ips = [ipaddress.ip_address(a.split("%", 1)[0]) for a in addresses]
        if not self.allow_private:
            refused = [str(ip) for ip in ips if not address_allowed(ip)]
            if refused:
                raise Refused(f"{parsed.host} resolves to a private, loopback or reserved "
                              f"address ({', '.join(refused)})")
        pinned = parsed.copy_with(host=str(ips[0]))
        headers = {"Host": parsed.netloc.decode("ascii")}
        extensions = {"sni_hostname": parsed.host} if parsed.scheme == "https" else {}
        return pinned, headers, extensions

    async def send(self, url: str, secret: str, *, delivery_id: str, event_type: str,
                   attempt: int, body: bytes) -> Outcome:
        now = time.time()
        try:
            target, headers, extensions = await self.target(url)
        except Refused as exc:
            return Outcome(delivered=False, retryable=False, error=str(exc))
        except ConnectionError as exc:
            return Outcome(delivered=False, retryable=True, error=str(exc))
        headers |= {"Content-Type": "application/json", DELIVERY_HEADER: delivery_id,
                    EVENT_HEADER: event_type, ATTEMPT_HEADER: str(attempt),
                    SIGNATURE_HEADER: sign(secret, int(now), body)}
        request = self.client.build_request("POST", target, content=body, headers=headers,
                                            extensions=extensions)
        try:
            # The whole attempt, not only each phase, ends within the timeout.
            async with asyncio.timeout(self.timeout_s):
                response = await self.client.send(request, stream=True)
                await response.aclose()  # the status is the answer; the body is not read
        except (TimeoutError, httpx.TimeoutException):
            return Outcome(delivered=False, retryable=True,
                           error=f"timed out after {self.timeout_s:g} s")
        except httpx.HTTPError as exc:
            return Outcome(delivered=False, retryable=True,
                           error=f"{type(exc).__name__}: {exc}"[:300])
        return classify(response.status_code, response.headers, time.time())

    async def close(self) -> None:
        await self.client.aclose()
