"""The WebhookStore contract, over every adapter: endpoints, the outbox, leases, dead letters."""

from __future__ import annotations

import asyncio

from chatcluster.ports.webhooks import AttemptResult, Delivery, Endpoint, MembersMark
from tests.contract.conftest import Backend


def endpoint(eid: str, app: str = "app_1", at: str = "2026-01-01T00:00:00.000Z") -> Endpoint:
    return Endpoint(id=eid, app_id=app, url="https://example.com/hook", secret="s3cret",
                    event_types=["message.sent"], created_at=at, updated_at=at)


def delivery(did: str, app: str = "app_1", due: float = 0.0,
             at: str = "2026-01-01T00:00:00.000Z") -> Delivery:
    return Delivery(id=did, app_id=app, endpoint_id="ep_1", event_id=f"evt_{did}",
                    event_type="message.sent", body=b'{"x": 1}', created_at=at,
                    next_attempt_at=due)


def dead(attempts: int) -> AttemptResult:
    return AttemptResult(status="dead", attempts=attempts, next_attempt_at=0.0, last_status=500,
                         last_error="HTTP 500", finished_at="2026-01-01T00:01:00.000Z")


async def test_endpoints_round_trip_per_app(webhook_store_backend: Backend) -> None:
    store = await webhook_store_backend.open()
    await store.create_endpoint(endpoint("ep_1", at="2026-01-01T00:00:00.000Z"))
    await store.create_endpoint(endpoint("ep_2", at="2026-01-01T00:00:01.000Z"))
    await store.create_endpoint(endpoint("ep_3", app="app_2"))
    assert [e.id for e in await store.list_endpoints("app_1")] == ["ep_1", "ep_2"]
    assert await store.get_endpoint("app_2", "ep_1") is None  # another app's id: not found
    got = await store.get_endpoint("app_1", "ep_1")
    assert got == endpoint("ep_1")

    changed = endpoint("ep_1")
    changed.url, changed.enabled = "https://x.test/", False
    changed.event_types = ["message.deleted"]
    assert await store.update_endpoint(changed)
    assert await (await webhook_store_backend.open()).get_endpoint("app_1", "ep_1") == changed
    assert not await store.update_endpoint(endpoint("ep_1", app="app_2"))
    assert not await store.delete_endpoint("app_2", "ep_1")
    assert await store.delete_endpoint("app_1", "ep_1")
    assert await store.get_endpoint("app_1", "ep_1") is None
    assert not await store.delete_endpoint("app_1", "ep_1")


async def test_enqueue_is_idempotent_and_never_resets_an_attempt(
        webhook_store_backend: Backend) -> None:
    store = await webhook_store_backend.open()
    assert await store.enqueue([delivery("d1"), delivery("d2")]) == 2
    [claimed, _] = await store.claim_due(10.0, 10, 40.0)
    retry = AttemptResult(status="pending", attempts=1, next_attempt_at=99.0, last_status=503,
                          last_error="HTTP 503", finished_at=None)
    await store.record_attempt(claimed.id, retry)
    # A replayed bus record enqueues the same ids: nothing new, the attempt is kept.
    assert await store.enqueue([delivery("d1"), delivery("d2"), delivery("d3")]) == 1
    got = await store.get_delivery("app_1", claimed.id)
    assert got is not None and got.attempts == 1 and got.next_attempt_at == 99.0
    assert got.last_status == 503 and got.body == b'{"x": 1}'


async def test_claim_leases_each_due_delivery_to_one_caller(
        webhook_store_backend: Backend) -> None:
    first, second = await webhook_store_backend.open(), await webhook_store_backend.open()
    await first.enqueue([delivery(f"d{i}", due=float(i)) for i in range(6)])
    await first.enqueue([delivery("later", due=1000.0)])
    a, b = await asyncio.gather(first.claim_due(100.0, 4, 130.0),
                                second.claim_due(100.0, 4, 130.0))
    ids = [d.id for d in a] + [d.id for d in b]
    assert len(ids) == len(set(ids))  # never the same delivery to both
    # Two racing claimers may leave some for the next call ("up to limit"): none twice,
    # and "later" is not due.
    ids += [d.id for d in await first.claim_due(100.0, 10, 130.0)]
    assert sorted(ids) == [f"d{i}" for i in range(6)]
    assert all(d.lease_until == 130.0 for d in a + b)
    assert await first.claim_due(120.0, 10, 150.0) == []  # still leased
    # A dispatcher that died: its lease runs out and another claims the delivery.
    again = await second.claim_due(131.0, 10, 160.0)
    assert sorted(d.id for d in again) == [f"d{i}" for i in range(6)]
    done = AttemptResult(status="delivered", attempts=1, next_attempt_at=0.0, last_status=200,
                         last_error=None, finished_at="2026-01-01T00:00:05.000Z")
    for d in again:
        await first.record_attempt(d.id, done)
    assert [d.id for d in await first.claim_due(2000.0, 10, 2030.0)] == ["later"]
    got = await first.get_delivery("app_1", "d0")
    assert got is not None and got.status == "delivered" and got.lease_until == 0.0


async def test_dead_letters_list_and_replay(webhook_store_backend: Backend) -> None:
    store = await webhook_store_backend.open()
    await store.enqueue([delivery("d1", at="2026-01-01T00:00:01.000Z"),
                         delivery("d2", at="2026-01-01T00:00:02.000Z"),
                         delivery("d3", at="2026-01-01T00:00:03.000Z"),
                         delivery("other", app="app_2")])
    for d in await store.claim_due(1.0, 10, 31.0):
        if d.id != "d2":
            await store.record_attempt(d.id, dead(5))
    dead_ones = await store.list_deliveries("app_1", "dead", 10, None)
    assert [d.id for d in dead_ones] == ["d3", "d1"]  # newest first; other apps' left out
    assert dead_ones[0].last_error == "HTTP 500" and dead_ones[0].attempts == 5
    page = await store.list_deliveries("app_1", None, 2, None)
    assert [d.id for d in page] == ["d3", "d2"]
    rest = await store.list_deliveries("app_1", None, 2, (page[-1].created_at, page[-1].id))
    assert [d.id for d in rest] == ["d1"]

    assert await store.replay("app_2", "d1", 50.0) is None  # another app's id
    assert await store.replay("app_1", "d2", 50.0) is None  # not dead
    replayed = await store.replay("app_1", "d1", 50.0)
    assert replayed is not None and replayed.id == "d1" and replayed.status == "pending"
    assert replayed.attempts == 0 and replayed.finished_at is None
    assert await store.replay("app_1", "d1", 50.0) is None  # already back in the outbox
    # d2 (its lease ran out at 31) and the replayed d1, which is due now
    assert sorted(d.id for d in await store.claim_due(50.0, 10, 80.0)) == ["d1", "d2"]


async def test_member_marks_only_move_forward(webhook_store_backend: Backend) -> None:
    store = await webhook_store_backend.open()
    assert await store.members("c1") is None
    await store.save_members("c1", MembersMark(5, ["a", "b"]))
    await store.save_members("c1", MembersMark(3, ["a"]))  # older: ignored
    await store.save_members("c1", MembersMark(5, ["x"]))  # same version: ignored
    assert await store.members("c1") == MembersMark(5, ["a", "b"])
    await store.save_members("c1", MembersMark(7, ["a", "b", "c"]))
    assert await (await webhook_store_backend.open()).members("c1") == MembersMark(
        7, ["a", "b", "c"])


async def test_prune_removes_only_finished_deliveries_before_the_cutoff(
        webhook_store_backend: Backend) -> None:
    store = await webhook_store_backend.open()
    await store.enqueue([delivery(f"d{i}") for i in range(5)])
    claimed = {d.id: d for d in await store.claim_due(1.0, 10, 31.0)}
    for did, finished in (("d0", "2026-01-01T00:00:00.000Z"), ("d1", "2026-01-02T00:00:00.000Z"),
                          ("d2", "2026-03-01T00:00:00.000Z")):
        await store.record_attempt(claimed[did].id, AttemptResult(
            status="delivered", attempts=1, next_attempt_at=0.0, last_status=200,
            last_error=None, finished_at=finished))
    await store.record_attempt("d3", AttemptResult(
        status="dead", attempts=3, next_attempt_at=0.0, last_status=500, last_error="x",
        finished_at="2026-01-03T00:00:00.000Z"))
    # d4 stays pending, however old.
    assert await store.prune_finished("2026-02-01T00:00:00.000Z", 2) == 2
    assert await store.prune_finished("2026-02-01T00:00:00.000Z", 10) == 1
    assert await store.prune_finished("2026-02-01T00:00:00.000Z", 10) == 0
    left = await store.list_deliveries("app_1", None, 10, None)
    assert sorted(d.id for d in left) == ["d2", "d4"]
