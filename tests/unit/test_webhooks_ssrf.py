"""The SSRF guard: private, loopback, link-local and reserved addresses are refused, in every
spelling (IPv6, IPv4-mapped, 6to4, NAT64) and behind DNS names; redirects are never followed."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from chatcluster.pipeline.outbound import HttpSender, Refused, address_allowed

REFUSED = ["127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254",
           "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1",
           "fc00::1", "fd12:3456::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
           "::ffff:169.254.169.254", "2002:7f00:1::", "64:ff9b::7f00:1", "2001:db8::1"]
ALLOWED = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", REFUSED)
def test_private_and_special_addresses_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address))


def _sender(answers: dict[str, list[str]], allow_private: bool = False,
            handler: httpx.MockTransport | None = None) -> HttpSender:
    async def resolver(host: str, port: int) -> list[str]:
        return answers[host]
    return HttpSender(timeout_s=1.0, allow_private=allow_private, resolver=resolver,
                      transport=handler)


async def test_a_name_is_refused_if_any_address_it_resolves_to_is_private() -> None:
    sender = _sender({"evil.example": ["93.184.216.34", "127.0.0.1"],
                      "v6.example": ["2606:4700:4700::1111", "::ffff:192.168.0.1"],
                      "good.example": ["93.184.216.34"]})
    with pytest.raises(Refused, match=r"127\.0\.0\.1"):
        await sender.target("https://evil.example/hook")
    with pytest.raises(Refused, match=r"v6\.example resolves to a private"):
        await sender.target("https://v6.example/hook")
    url, headers, extensions = await sender.target("https://good.example:8443/hook?x=1")
    # Connects to the address it checked; the name stays in Host and in TLS (SNI, cert).
    assert str(url) == "https://93.184.216.34:8443/hook?x=1"
    assert headers == {"Host": "good.example:8443"}
    assert extensions == {"sni_hostname": "good.example"}
    await sender.close()


async def test_localhost_literals_and_bad_schemes_are_refused() -> None:
    sender = _sender({"localhost": ["127.0.0.1", "::1"]})
    for url in ("http://localhost:8080/", "http://127.0.0.1/", "http://[::1]/",
                "http://[::ffff:127.0.0.1]/", "http://169.254.169.254/latest/meta-data",
                "ftp://example.com/", "file:///etc/passwd", "http:///nohost"):
        with pytest.raises(Refused):
            await sender.target(url)
    outcome = await sender.send("http://localhost:1/", "s", delivery_id="d", event_type="t",
                                attempt=1, body=b"{}")
    assert not outcome.delivered and not outcome.retryable and "loopback" in (outcome.error or "")
    await sender.close()


async def test_the_setting_allows_private_addresses() -> None:
    sender = _sender({"localhost": ["127.0.0.1"]}, allow_private=True)
    url, headers, _ = await sender.target("http://localhost:8080/hook")
    assert str(url) == "http://127.0.0.1:8080/hook" and headers == {"Host": "localhost:8080"}
    await sender.close()


async def test_redirects_are_not_followed() -> None:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"Location": "http://127.0.0.1/internal"})

    sender = _sender({"hooks.example": ["93.184.216.34"]}, handler=httpx.MockTransport(handle))
    outcome = await sender.send("http://hooks.example/in", "s", delivery_id="dlv_1",
                                event_type="message.sent", attempt=1, body=b"{}")
    assert seen == ["http://93.184.216.34/in"]  # one request; the Location was not fetched
    assert outcome.status == 302 and not outcome.delivered and not outcome.retryable
    await sender.close()


async def test_a_delivery_carries_its_id_event_attempt_and_signature() -> None:
    got: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        got.append(request)
        return httpx.Response(204)

    sender = _sender({"hooks.example": ["93.184.216.34"]}, handler=httpx.MockTransport(handle))
    outcome = await sender.send("http://hooks.example/in", "whsec_k", delivery_id="dlv_9",
                                event_type="message.sent", attempt=3, body=b'{"a":1}')
    assert outcome.delivered
    [request] = got
    assert request.headers["host"] == "hooks.example"
    assert request.headers["x-chat-delivery"] == "dlv_9"
    assert request.headers["x-chat-event"] == "message.sent"
    assert request.headers["x-chat-attempt"] == "3"
    assert request.headers["x-chat-signature"].startswith("t=")
    assert request.content == b'{"a":1}'
    await sender.close()
