"""Webhook signatures: the header format, verification, tampering and old timestamps."""

from __future__ import annotations

import hashlib
import hmac

from chatcluster.pipeline.outbound import sign, verify

BODY = b'{"id":"evt_1","type":"message.sent"}'


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    header = sign("whsec_x", 1700000000, BODY)
    expected = hmac.new(b"whsec_x", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


def test_verify_accepts_its_own_signature_within_the_tolerance() -> None:
    header = sign("whsec_x", 1700000000, BODY)
    assert verify("whsec_x", header, BODY, now=1700000000 + 299)
    assert verify("whsec_x", header, BODY, now=1700000000 - 299)


def test_verify_refuses_tampering_wrong_secret_old_timestamps_and_garbage() -> None:
    header = sign("whsec_x", 1700000000, BODY)
    assert not verify("whsec_x", header, BODY + b" ", now=1700000000)
    assert not verify("whsec_y", header, BODY, now=1700000000)
    assert not verify("whsec_x", header, BODY, now=1700000000 + 301)  # a replayed capture
    resigned = header.replace("t=1700000000", "t=1700000300")  # timestamp is signed too
    assert not verify("whsec_x", resigned, BODY, now=1700000300)
    for junk in ("", "t=abc,v1=00", "v1=00", "t=1700000000"):
        assert not verify("whsec_x", junk, BODY, now=1700000000)
