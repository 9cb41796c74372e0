"""WebhookStore on a MongoDB-protocol server; mirrors ``embedded.webhooks``.

Every write touches one document, so no transaction is needed: ``enqueue`` inserts with the
delivery id as ``_id`` (a duplicate is skipped), ``claim_due`` leases each candidate with a
conditional ``update_one`` (only one claimer can match ``lease_until <= now``), and
``save_members`` is an upsert conditional on a lower version (a duplicate key means a newer
mark is stored already).
"""

from __future__ import annotations

import contextlib
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from chatcluster.ports.webhooks import (
    AttemptResult,
    Delivery,
    DeliveryStatus,
    Endpoint,
    MembersMark,
)

from .collections import Doc, MongoCollections


def _endpoint_doc(e: Endpoint) -> Doc:
    return {"_id": e.id, "app_id": e.app_id, "url": e.url, "secret": e.secret,
            "event_types": list(e.event_types), "enabled": e.enabled,
            "description": e.description, "created_at": e.created_at,
            "updated_at": e.updated_at}


def _endpoint(d: Doc) -> Endpoint:
    return Endpoint(id=d["_id"], app_id=d["app_id"], url=d["url"], secret=d["secret"],
                    event_types=list(d["event_types"]), enabled=bool(d["enabled"]),
                    description=d.get("description"), created_at=d["created_at"],
                    updated_at=d["updated_at"])


def _delivery_doc(x: Delivery) -> Doc:
    return {"_id": x.id, "app_id": x.app_id, "endpoint_id": x.endpoint_id,
            "event_id": x.event_id, "event_type": x.event_type, "body": x.body,
            "created_at": x.created_at, "status": x.status, "attempts": x.attempts,
            "next_attempt_at": x.next_attempt_at, "lease_until": x.lease_until,
            "last_status": x.last_status, "last_error": x.last_error,
            "finished_at": x.finished_at}


def _delivery(d: Doc) -> Delivery:
    return Delivery(id=d["_id"], app_id=d["app_id"], endpoint_id=d["endpoint_id"],
                    event_id=d["event_id"], event_type=d["event_type"], body=bytes(d["body"]),
                    created_at=d["created_at"], status=d["status"], attempts=d["attempts"],
                    next_attempt_at=float(d["next_attempt_at"]),
                    lease_until=float(d["lease_until"]), last_status=d.get("last_status"),
                    last_error=d.get("last_error"), finished_at=d.get("finished_at"))


def _lease_id(d: Doc) -> str:
    """Unique per state a claimer can read: attempts and due time change with every attempt
    and replay, the old lease with every claim."""
    return f"{d['_id']}|{d['attempts']}|{float(d['next_attempt_at'])!r}|" \
           f"{float(d['lease_until'])!r}"


class MongoWebhookStore(MongoCollections):
    INDEXES = {
        "webhook_endpoints": [IndexModel([("app_id", ASCENDING), ("created_at", ASCENDING)],
                                         name="endpoints_by_app")],
        "webhook_deliveries": [
            IndexModel([("status", ASCENDING), ("next_attempt_at", ASCENDING)],
                       name="deliveries_due"),
            IndexModel([("app_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
                       name="deliveries_by_app"),
        ],
        "webhook_member_marks": [],
        "webhook_leases": [IndexModel([("delivery_id", ASCENDING)], name="leases_by_delivery")],
    }

    def __init__(self, url: str, database: str | None = None, **client_options: Any) -> None:
        super().__init__(url, database, **client_options)
        self.endpoints = self.db["webhook_endpoints"]
        self.deliveries = self.db["webhook_deliveries"]
        self.marks = self.db["webhook_member_marks"]
        self.leases = self.db["webhook_leases"]

    # endpoints ------------------------------------------------------------------------------
    async def create_endpoint(self, endpoint: Endpoint) -> None:
        async with self._op():
            await self.endpoints.insert_one(_endpoint_doc(endpoint))

    async def get_endpoint(self, app_id: str, endpoint_id: str) -> Endpoint | None:
        async with self._op():
            doc = await self.endpoints.find_one({"_id": endpoint_id, "app_id": app_id})
        return None if doc is None else _endpoint(doc)

    async def list_endpoints(self, app_id: str) -> list[Endpoint]:
        async with self._op():
            docs = await self.endpoints.find({"app_id": app_id}).sort(
                [("created_at", ASCENDING), ("_id", ASCENDING)]).to_list()
        return [_endpoint(d) for d in docs]

    async def update_endpoint(self, endpoint: Endpoint) -> bool:
        doc = _endpoint_doc(endpoint)
        async with self._op():
            result = await self.endpoints.replace_one(
                {"_id": endpoint.id, "app_id": endpoint.app_id}, doc)
        return result.matched_count > 0

    async def delete_endpoint(self, app_id: str, endpoint_id: str) -> bool:
        async with self._op():
            result = await self.endpoints.delete_one({"_id": endpoint_id, "app_id": app_id})
        return result.deleted_count > 0

    # outbox ---------------------------------------------------------------------------------
    async def enqueue(self, deliveries: list[Delivery]) -> int:
        unique = list({d.id: d for d in deliveries}.values())
        async with self._op():
            skipped = await self._insert_new(self.deliveries, [_delivery_doc(d) for d in unique])
        return len(unique) - len(skipped)

    async def claim_due(self, now: float, limit: int, lease_until: float) -> list[Delivery]:
        claimed = []
        async with self._op():
            docs = await self.deliveries.find(
                {"status": "pending", "next_attempt_at": {"$lte": now},
                 "lease_until": {"$lte": now}}).sort("next_attempt_at", ASCENDING).limit(
                limit).to_list()
            # The claim is the insert of a lease named after the state the claimer read: of two
            # claimers that read one state, only one inserts that _id. (A conditional
            # update_one is not enough: FerretDB v1 reads and writes it in two steps, so two
            # claimers can both match the same old lease.)
            leases = [{"_id": _lease_id(d), "delivery_id": d["_id"], "until": lease_until}
                      for d in docs]
            lost = await self._insert_new(self.leases, leases)
            for i, doc in enumerate(docs):
                if i in lost:
                    continue
                await self.deliveries.update_one({"_id": doc["_id"]},
                                                 {"$set": {"lease_until": lease_until}})
                doc["lease_until"] = lease_until
                claimed.append(_delivery(doc))
        return claimed

    async def record_attempt(self, delivery_id: str, result: AttemptResult) -> None:
        r = result
        async with self._op():
            await self.deliveries.update_one({"_id": delivery_id}, {"$set": {
                "status": r.status, "attempts": r.attempts,
                "next_attempt_at": r.next_attempt_at, "lease_until": 0.0,
                "last_status": r.last_status, "last_error": r.last_error,
                "finished_at": r.finished_at}})
            await self.leases.delete_many({"delivery_id": delivery_id})

    async def get_delivery(self, app_id: str, delivery_id: str) -> Delivery | None:
        async with self._op():
            doc = await self.deliveries.find_one({"_id": delivery_id, "app_id": app_id})
        return None if doc is None else _delivery(doc)

    async def list_deliveries(self, app_id: str, status: DeliveryStatus | None, limit: int,
                              before: tuple[str, str] | None) -> list[Delivery]:
        query: Doc = {"app_id": app_id}
        if status is not None:
            query["status"] = status
        if before is not None:
            query["$or"] = [{"created_at": {"$lt": before[0]}},
                            {"created_at": before[0], "_id": {"$lt": before[1]}}]
        async with self._op():
            docs = await self.deliveries.find(query).sort(
                [("created_at", DESCENDING), ("_id", DESCENDING)]).limit(limit).to_list()
        return [_delivery(d) for d in docs]

    async def replay(self, app_id: str, delivery_id: str, now: float) -> Delivery | None:
        async with self._op():
            result = await self.deliveries.update_one(
                {"_id": delivery_id, "app_id": app_id, "status": "dead"},
                {"$set": {"status": "pending", "attempts": 0, "next_attempt_at": now,
                          "lease_until": 0.0, "finished_at": None}})
            if result.modified_count == 0:
                return None
            doc = await self.deliveries.find_one({"_id": delivery_id})
        return None if doc is None else _delivery(doc)

    async def prune_finished(self, finished_before: str, limit: int) -> int:
        async with self._op():
            docs = await self.deliveries.find(
                {"status": {"$in": ["delivered", "dead"]},
                 "finished_at": {"$lt": finished_before}}, {"_id": 1}).limit(limit).to_list()
            if not docs:
                return 0
            result = await self.deliveries.delete_many(
                {"_id": {"$in": [d["_id"] for d in docs]},
                 "status": {"$in": ["delivered", "dead"]}})
        return int(result.deleted_count)

    # membership marks -----------------------------------------------------------------------
    async def members(self, conversation_id: str) -> MembersMark | None:
        async with self._op():
            doc = await self.marks.find_one({"_id": conversation_id})
        return None if doc is None else MembersMark(doc["version"], list(doc["members"]))

    async def save_members(self, conversation_id: str, mark: MembersMark) -> None:
        async with self._op():
            # A duplicate key: a mark of a higher or equal version is stored, and it wins.
            with contextlib.suppress(DuplicateKeyError):
                await self.marks.update_one(
                    {"_id": conversation_id, "version": {"$lt": mark.version}},
                    {"$set": {"version": mark.version, "members": mark.members}}, upsert=True)
