"""The retry schedule and what each HTTP answer means for a delivery."""

from __future__ import annotations

import pytest

from chatcluster.pipeline.outbound import Outcome, RetryPolicy, classify, retry_after_seconds
from chatcluster.pipeline.webhooks import delivery_id, event_id, next_state
from chatcluster.ports.webhooks import Delivery

POLICY = RetryPolicy(max_attempts=5, base_s=10.0, max_s=60.0, timeout_s=1.0)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [POLICY.backoff(n) for n in range(1, 7)] == [10, 20, 40, 60, 60, 60]


def test_jitter_stays_between_half_and_all_of_the_backoff() -> None:
    assert POLICY.delay(3, rand=lambda: 0.0) == 20.0
    assert POLICY.delay(3, rand=lambda: 1.0) == 40.0
    assert POLICY.delay(3, rand=lambda: 0.5) == 30.0


def test_retry_after_is_honoured_but_capped() -> None:
    assert POLICY.delay(1, retry_after=45.0, rand=lambda: 0.0) == 45.0
    assert POLICY.delay(1, retry_after=1.0, rand=lambda: 0.0) == 5.0  # backoff is longer
    assert POLICY.delay(1, retry_after=10_000.0, rand=lambda: 0.0) == 60.0


def test_retry_after_as_seconds_or_http_date() -> None:
    assert retry_after_seconds("7", now=0) == 7.0
    assert retry_after_seconds("Thu, 01 Jan 1970 00:00:30 GMT", now=10.0) == 20.0
    assert retry_after_seconds("soon", now=0) is None
    assert retry_after_seconds(None, now=0) is None


def test_policy_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_WEBHOOKS_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("CHAT_WEBHOOKS_RETRY_BASE_S", "0.1")
    monkeypatch.setenv("CHAT_WEBHOOKS_RETRY_MAX_S", "0.4")
    monkeypatch.setenv("CHAT_WEBHOOKS_TIMEOUT_S", "0.5")
    assert RetryPolicy.from_env() == RetryPolicy(3, 0.1, 0.4, 0.5)


@pytest.mark.parametrize(("status", "delivered", "retryable"), [
    (200, True, False), (204, True, False),
    (301, False, False), (302, False, False), (307, False, False),  # redirects: never followed
    (400, False, False), (401, False, False), (404, False, False), (410, False, False),
    (408, False, True), (429, False, True),
    (500, False, True), (502, False, True), (503, False, True),
])
def test_classify(status: int, delivered: bool, retryable: bool) -> None:
    outcome = classify(status, {"retry-after": "3"}, now=0)
    assert (outcome.delivered, outcome.retryable) == (delivered, retryable)
    assert outcome.status == status
    if status == 429:
        assert outcome.retry_after == 3.0


def _delivery(attempts: int = 0) -> Delivery:
    return Delivery(id="dlv_1", app_id="app", endpoint_id="wh", event_id="evt", event_type="t",
                    body=b"{}", created_at="2026-01-01T00:00:00.000Z", attempts=attempts)


def test_next_state_retries_then_gives_up() -> None:
    failed = Outcome(delivered=False, retryable=True, status=503, error="HTTP 503")
    result = next_state(_delivery(0), failed, POLICY, now=1000.0)
    assert result.status == "pending" and result.attempts == 1
    assert 1005.0 <= result.next_attempt_at <= 1010.0
    last = next_state(_delivery(4), failed, POLICY, now=1000.0)
    assert last.status == "dead" and last.attempts == 5 and last.last_error == "HTTP 503"
    permanent = Outcome(delivered=False, retryable=False, status=404, error="HTTP 404")
    assert next_state(_delivery(0), permanent, POLICY, now=1.0).status == "dead"
    ok = next_state(_delivery(2), Outcome(delivered=True, retryable=False, status=200),
                    POLICY, now=1.0)
    assert ok.status == "delivered" and ok.attempts == 3 and ok.finished_at is not None


def test_ids_are_stable_so_replays_deduplicate() -> None:
    assert event_id("message.sent", "c1", 7) == event_id("message.sent", "c1", 7)
    assert event_id("message.sent", "c1", 7) != event_id("message.edited", "c1", 7)
    assert delivery_id("wh_1", "evt_a") == delivery_id("wh_1", "evt_a")
    assert delivery_id("wh_1", "evt_a") != delivery_id("wh_2", "evt_a")
