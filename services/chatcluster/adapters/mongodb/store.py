"""Store on a MongoDB-protocol server, through PyMongo's asyncio API; mirrors ``SqliteStore``.

Guarantees, and how they hold without multi-document transactions (FerretDB v1 has none):

- Durable on return: writes use ``w=majority, j=true`` unless the URL sets ``w``/``journal``.
- Compare-and-set: a conversation's state, version, members and activity are one document, so
  ``save_conversation`` is one conditional ``update_one({_id, version: expected})``.
- The sync log is written *before* the change it announces. Entries are read back hydrated
  with the current state, so an extra entry (a crash after it, or a lost race) is harmless; a
  missing one would not be. Messages are written before the log entries and the activity that
  point at them, so a reader never finds an entry or a ``last_seq`` ahead of its message.
- ``write_pipeline_batch`` is idempotent part by part and sends one command per part, not one
  per message (on FerretDB, updates go in commands of 20: see FERRETDB_UPDATES_PER_COMMAND):
  inserts ignore duplicate keys (a replayed message or entry changes nothing), changed messages
  are replaced, activity only grows (``$max``), receipts only move forward. A batch cut short
  by a crash is replayed by the consumer and converges.
- Receipts: the marks that moved are computed from one read of the current marks, then written
  with ``$max``. Exact while one consumer owns a conversation (the port's guarantee); if two
  overlap during a rebalance the stored marks still never go back, and at worst a mark is
  announced twice (as a replay would).
- Reads go to the primary (PyMongo's default): a process sees every write that returned before
  it read.
- Connection failures (including the 3 s server-selection timeout) and writes not acknowledged
  as durable raise ``Unavailable``; every write is idempotent or compare-and-set, so a retry is
  safe.

Uniqueness rests on unique indexes whose fields are always set, because FerretDB does not count
a document that lacks an indexed field as a duplicate: group conversations get a
``direct_key`` of ``"g:<id>"`` (real pair keys start with a digit, so the two never collide).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import Any

import msgspec
from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

from chatcluster.domain.errors import VersionConflict
from chatcluster.domain.ids import parse_rfc3339, rfc3339
from chatcluster.domain.model import (
    App,
    ConversationActivity,
    ConversationState,
    MessageState,
    Session,
)
from chatcluster.ports.store import (
    ConversationExtras,
    LoggedEvent,
    PipelineBatch,
    ReceiptMark,
    decode_cursor,
    encode_cursor,
)

from .collections import Doc, MongoCollections

# FerretDB v1.24 (SQLite) keeps every statement's query open until an ``update`` command ends,
# and a database has 100 SQLite connections: a command of 100 statements waits forever for a
# connection it holds itself. Commands of 20 leave room for five such writers at once.
# MongoDB has no such limit (PyMongo splits batches at the server's maxWriteBatchSize).
FERRETDB_UPDATES_PER_COMMAND = 20

# name -> (collection, index models). Names are fixed so that list_indexes() can be checked and
# creating them again (every process start) is a no-op.
INDEXES: dict[str, list[IndexModel]] = {
    "sessions": [IndexModel([("revoked_at", ASCENDING)], name="sessions_revoked")],
    "revocations": [IndexModel([("at", ASCENDING)], name="revocations_by_time")],
    "conversations": [
        IndexModel([("app_id", ASCENDING), ("direct_key", ASCENDING)], unique=True,
                   name="conversations_direct"),
        # Multikey on members: a user's conversations, already in listing order.
        IndexModel([("app_id", ASCENDING), ("members", ASCENDING), ("sort_at", DESCENDING),
                    ("_id", DESCENDING)], name="conversations_by_member"),
    ],
    "messages": [
        IndexModel([("conversation_id", ASCENDING), ("seq", ASCENDING)], unique=True,
                   name="messages_by_seq"),
        IndexModel([("conversation_id", ASCENDING), ("sender_id", ASCENDING),
                    ("client_msg_id", ASCENDING)], unique=True, name="messages_by_client_id"),
    ],
    "sync_log": [
        IndexModel([("conversation_id", ASCENDING), ("event_seq", ASCENDING)], unique=True,
                   name="sync_log_by_seq"),
    ],
    "receipts": [
        IndexModel([("conversation_id", ASCENDING), ("user_id", ASCENDING)], unique=True,
                   name="receipts_by_user"),
    ],
}
COLLECTIONS = ("apps", "users", "sessions", "conversations", "messages", "sync_log", "receipts",
               "revocations")
assert set(INDEXES) <= set(COLLECTIONS)
# Revocations are also logged in their own small collection, kept this long: replicas poll the
# last seconds of it every second, and FerretDB v1 would scan every session ever made to answer
# that from ``sessions`` (it does not use secondary indexes). Pruned at most every PRUNE_S.
REVOCATION_LOG_S = 3600.0
REVOCATION_PRUNE_S = 60.0

_enc = msgspec.msgpack.Encoder()
_conv_dec = msgspec.msgpack.Decoder(ConversationState)
_msg_dec = msgspec.msgpack.Decoder(MessageState)


def pair_id(first: str, second: str) -> str:
    """An unambiguous ``_id`` for a pair of strings (the length prefix keeps ``|`` harmless)."""
    return f"{len(first)}:{first}|{second}"


def log_id(conversation_id: str, event_seq: int) -> str:
    # Zero-padded so the entries of one conversation also sort by event_seq on _id.
    return pair_id(conversation_id, f"{event_seq:020d}")


def group_key(conversation_id: str) -> str:
    """The ``direct_key`` stored for a group: unique, and never equal to a real pair key."""
    return f"g:{conversation_id}"


class MongoStore(MongoCollections):
    """The Store port on MongoDB or FerretDB. Collections and indexes are created, idempotently,
    before the first operation of each instance."""

    INDEXES = {name: INDEXES.get(name, []) for name in COLLECTIONS}

    def __init__(self, url: str, database: str | None = None, **client_options: Any) -> None:
        super().__init__(url, database, **client_options)
        self.apps = self.db["apps"]
        self.users = self.db["users"]
        self.sessions = self.db["sessions"]
        self.conversations = self.db["conversations"]
        self.messages = self.db["messages"]
        self.sync_entries = self.db["sync_log"]
        self.receipts = self.db["receipts"]
        self.revocations = self.db["revocations"]
        self._pruned_at = 0.0
        # Statements per ``update`` command; None: no limit. Set by the first operation.
        self.max_updates_per_command: int | None = None

    # -- plumbing ------------------------------------------------------------------------------
    async def _prepare(self) -> None:
        info = await self.db.command("buildInfo")
        if "ferretdbVersion" in info:
            self.max_updates_per_command = FERRETDB_UPDATES_PER_COMMAND

    async def _update(self, collection: AsyncCollection[Doc], ops: list[UpdateOne]) -> None:
        """Unordered bulk update, in as few commands as the server handles safely."""
        if not ops:
            return
        step = self.max_updates_per_command or len(ops)
        for start in range(0, len(ops), step):
            await collection.bulk_write(ops[start:start + step], ordered=False)

    async def _log(self, conversation_id: str, event_seq: int, event: str,
                   message_id: str | None) -> bool:
        """Write one sync-log entry if absent; True if this call created it."""
        skipped = await self._insert_new(self.sync_entries, [
            _entry_doc(LoggedEvent(conversation_id, event_seq, event, message_id))])
        return not skipped

    async def _unlog(self, conversation_id: str, event_seq: int) -> None:
        """Best effort: drop a conversation.updated entry whose change did not happen.

        Only called for an entry this call created at an event_seq that was never used (each
        attempt takes a fresh number), so no one else can depend on it. If this fails, the extra
        entry stays, which is harmless (it reads back as the current state).
        """
        with contextlib.suppress(PyMongoError):
            await self.sync_entries.delete_one(
                {"_id": log_id(conversation_id, event_seq), "event": "conversation.updated"})

    # tenants, users, sessions ---------------------------------------------------------------
    async def create_app(self, app: App) -> None:
        async with self._op():
            await self.apps.insert_one({
                "_id": app.id, "name": app.name, "secret_digest": app.secret_digest,
                "created_at": app.created_at, "disabled": app.disabled})

    async def get_app(self, app_id: str) -> App | None:
        async with self._op():
            doc = await self.apps.find_one({"_id": app_id})
        if doc is None:
            return None
        return App(id=doc["_id"], name=doc["name"], secret_digest=doc["secret_digest"],
                   created_at=doc["created_at"], disabled=bool(doc.get("disabled", False)))

    async def list_apps(self, after: str | None, limit: int) -> list[App]:
        async with self._op():
            docs = await self.apps.find({"_id": {"$gt": after or ""}}).sort(
                "_id", ASCENDING).limit(limit).to_list()
        return [App(id=d["_id"], name=d["name"], secret_digest=d["secret_digest"],
                    created_at=d["created_at"], disabled=bool(d.get("disabled", False)))
                for d in docs]

    async def update_app(self, app_id: str, *, name: str | None = None,
                         secret_digest: str | None = None,
                         disabled: bool | None = None) -> App | None:
        changes = {k: v for k, v in (("name", name), ("secret_digest", secret_digest),
                                     ("disabled", disabled)) if v is not None}
        if changes:
            async with self._op():
                await self.apps.update_one({"_id": app_id}, {"$set": changes})
        return await self.get_app(app_id)

    async def delete_app(self, app_id: str) -> bool:
        async with self._op():
            res = await self.apps.delete_one({"_id": app_id})
        return res.deleted_count == 1

    async def ensure_user(self, app_id: str, user_id: str, display_name: str | None,
                          now: str) -> None:
        on_insert: Doc = {"app_id": app_id, "user_id": user_id, "created_at": now}
        update: Doc = {"$setOnInsert": on_insert}
        if display_name is None:
            on_insert["display_name"] = None  # signing in again without a name keeps the old one
        else:
            update["$set"] = {"display_name": display_name}
        async with self._op():
            for attempt in range(2):
                try:
                    await self.users.update_one({"_id": pair_id(app_id, user_id)}, update,
                                                upsert=True)
                    return
                except DuplicateKeyError:
                    # Two upserts raced to insert; the second attempt finds the document.
                    if attempt:
                        raise

    async def display_names(self, app_id: str, user_ids: list[str]) -> dict[str, str | None]:
        if not user_ids:
            return {}
        async with self._op():
            docs = await self.users.find(
                {"_id": {"$in": [pair_id(app_id, u) for u in user_ids]}},
                {"user_id": 1, "display_name": 1}).to_list()
        return {d["user_id"]: d.get("display_name") for d in docs}

    async def create_session(self, session: Session) -> None:
        async with self._op():
            await self.sessions.insert_one({
                "_id": session.id, "app_id": session.app_id, "user_id": session.user_id,
                "refresh_jti": session.refresh_jti, "created_at": session.created_at,
                "revoked_at": session.revoked_at})

    async def sign_in(self, session: Session, display_name: str | None) -> None:
        # Two collections and no transactions on FerretDB: the user first, so a session never
        # names a user that is not there (a crash in between leaves a user, harmless).
        await self.ensure_user(session.app_id, session.user_id, display_name,
                               session.created_at)
        await self.create_session(session)

    async def get_session(self, session_id: str) -> Session | None:
        async with self._op():
            doc = await self.sessions.find_one({"_id": session_id})
        if doc is None:
            return None
        return Session(id=doc["_id"], app_id=doc["app_id"], user_id=doc["user_id"],
                       refresh_jti=doc["refresh_jti"], created_at=doc["created_at"],
                       revoked_at=doc.get("revoked_at"))

    async def rotate_refresh(self, session_id: str, old_jti: str, new_jti: str) -> bool:
        async with self._op():
            res = await self.sessions.update_one(
                {"_id": session_id, "refresh_jti": old_jti, "revoked_at": None},
                {"$set": {"refresh_jti": new_jti}})
        return res.matched_count == 1

    async def revoke_session(self, session_id: str, now: str) -> None:
        async with self._op():
            # The log first: a crash in between closes the sockets of a session that still
            # works (they reconnect), never leaves a revoked session's sockets open.
            await self.revocations.update_one({"_id": session_id}, {"$setOnInsert": {"at": now}},
                                              upsert=True)
            await self.sessions.update_one({"_id": session_id, "revoked_at": None},
                                           {"$set": {"revoked_at": now}})

    async def revoked_sessions_since(self, since: str) -> list[str]:
        """From the revocation log: ``since`` must be within ``REVOCATION_LOG_S`` (replicas
        ask for the last ten seconds)."""
        async with self._op():
            docs = await self.revocations.find({"at": {"$gte": since}}, {"_id": 1}).to_list()
            if time.monotonic() - self._pruned_at > REVOCATION_PRUNE_S:
                self._pruned_at = time.monotonic()
                await self.revocations.delete_many(
                    {"at": {"$lt": rfc3339(parse_rfc3339(since) - REVOCATION_LOG_S)}})
        return [d["_id"] for d in docs]

    # conversations ----------------------------------------------------------------------------
    async def create_conversation(self, conversation: ConversationState) -> ConversationState:
        key = conversation.direct_key
        async with self._op():
            if key is not None:
                existing = await self._direct(conversation.app_id, key)
                if existing is not None:
                    return existing
            # Log first: a crash before the insert leaves only an entry nobody can reach.
            created_entry = await self._log(conversation.id, conversation.version,
                                            "conversation.updated", None)
            try:
                await self.conversations.insert_one({
                    "_id": conversation.id, "app_id": conversation.app_id,
                    "direct_key": key if key is not None else group_key(conversation.id),
                    "version": conversation.version, "members": list(conversation.members),
                    "state": _enc.encode(conversation), "last_seq": 0,
                    "last_event_seq": conversation.version, "last_message_at": None,
                    "sort_at": conversation.created_at})
            except DuplicateKeyError:
                # Another creator of the same pair won the race, or this is a retry of an insert
                # that did land: either way the stored conversation is the answer.
                winner = (await self._direct(conversation.app_id, key) if key is not None
                          else None) or await self._get(conversation.id)
                if winner is None:
                    raise
                if winner.id != conversation.id and created_entry:
                    await self._unlog(conversation.id, conversation.version)
                return winner
        return conversation

    async def _direct(self, app_id: str, direct_key: str) -> ConversationState | None:
        doc = await self.conversations.find_one({"app_id": app_id, "direct_key": direct_key},
                                                {"state": 1})
        return None if doc is None else _conv_dec.decode(doc["state"])

    async def _get(self, conversation_id: str) -> ConversationState | None:
        doc = await self.conversations.find_one({"_id": conversation_id}, {"state": 1})
        return None if doc is None else _conv_dec.decode(doc["state"])

    async def get_conversation(self, conversation_id: str) -> ConversationState | None:
        async with self._op():
            return await self._get(conversation_id)

    async def save_conversation(self, conversation: ConversationState,
                                expected_version: int) -> None:
        async with self._op():
            # The entry first: if we crash after it, it reads back as the current state.
            created_entry = await self._log(conversation.id, conversation.version,
                                            "conversation.updated", None)
            res = await self.conversations.update_one(
                {"_id": conversation.id, "version": expected_version},
                {"$set": {"state": _enc.encode(conversation), "version": conversation.version,
                          "members": list(conversation.members)},
                 "$max": {"last_event_seq": conversation.version}})
            if res.matched_count != 1:
                if created_entry:
                    await self._unlog(conversation.id, conversation.version)
                raise VersionConflict(conversation.id)

    async def list_conversations(self, app_id: str, user_id: str, limit: int,
                                 cursor: str | None) -> tuple[list[ConversationState], str | None]:
        query: Doc = {"app_id": app_id, "members": user_id}
        if cursor is not None:
            at, cid = decode_cursor(cursor)
            # (sort_at, _id) < (at, cid), written so that sort_at also bounds the index scan.
            query["sort_at"] = {"$lte": at}
            query["$or"] = [{"sort_at": {"$lt": at}}, {"_id": {"$lt": cid}}]
        async with self._op():
            docs = await self.conversations.find(query, {"state": 1, "sort_at": 1}).sort(
                [("sort_at", DESCENDING), ("_id", DESCENDING)]).limit(limit + 1).to_list()
        page = docs[:limit]
        nxt = None
        if len(docs) > limit:
            last = page[-1]
            nxt = encode_cursor(last["sort_at"], last["_id"])
        return [_conv_dec.decode(d["state"]) for d in page], nxt

    async def conversation_extras(self, conversation_ids: list[str],
                                  user_id: str) -> dict[str, ConversationExtras]:
        if not conversation_ids:
            return {}
        ids = list(dict.fromkeys(conversation_ids))
        async with self._op():
            # Two independent reads in parallel: one round trip of latency, not two.
            convs, marks = await _both(
                self.conversations.find(
                    {"_id": {"$in": ids}},
                    {"last_seq": 1, "last_event_seq": 1, "last_message_at": 1}).to_list(),
                self.receipts.find({"conversation_id": {"$in": ids}},
                                   {"conversation_id": 1, "user_id": 1, "read_seq": 1}).to_list())
            read_marks: dict[str, dict[str, int]] = {d["_id"]: {} for d in convs}
            for r in marks:
                if r["conversation_id"] in read_marks:
                    read_marks[r["conversation_id"]][r["user_id"]] = int(r.get("read_seq", 0))
            unread: dict[str, int] = {}
            if read_marks:
                # One aggregation for every conversation, each above its own read mark; served
                # by messages_by_seq (an index range per $or branch) on MongoDB.
                pipeline: list[Doc] = [
                    {"$match": {
                        "$or": [{"conversation_id": cid, "seq": {"$gt": m.get(user_id, 0)}}
                                for cid, m in read_marks.items()],
                        "sender_id": {"$ne": user_id}, "deleted": False}},
                    {"$group": {"_id": "$conversation_id", "n": {"$sum": 1}}}]
                cursor = await self.messages.aggregate(pipeline)
                unread = {d["_id"]: int(d["n"]) async for d in cursor}
        out: dict[str, ConversationExtras] = {}
        for d in convs:
            cid = d["_id"]
            out[cid] = ConversationExtras(
                activity=ConversationActivity(last_seq=int(d.get("last_seq", 0)),
                                              last_event_seq=int(d.get("last_event_seq", 0)),
                                              last_message_at=d.get("last_message_at")),
                read_marks=read_marks[cid], unread_count=unread.get(cid, 0))
        return out

    async def related_users(self, app_id: str, user_id: str,
                            others: list[str] | None) -> set[str]:
        if others is not None and not others:
            return set()
        query: Doc = {"app_id": app_id, "members": user_id}
        if others is not None:
            # Only the conversations that contain one of them (members is indexed).
            query = {"app_id": app_id,
                     "$and": [{"members": user_id}, {"members": {"$in": others}}]}
        async with self._op():
            found = await self.conversations.distinct("members", query)
        users = {str(u) for u in found}
        return users if others is None else users & set(others)

    # messages ---------------------------------------------------------------------------------
    async def get_messages(self, message_ids: list[str]) -> dict[str, MessageState]:
        if not message_ids:
            return {}
        async with self._op():
            docs = await self.messages.find({"_id": {"$in": message_ids}},
                                            {"state": 1}).to_list()
        return {d["_id"]: _msg_dec.decode(d["state"]) for d in docs}

    async def history(self, conversation_id: str, before_seq: int | None,
                      after_seq: int | None, limit: int) -> tuple[list[MessageState], bool]:
        # Both directions are one range of messages_by_seq, walked forwards or backwards.
        seq: Doc = {}
        if after_seq is not None:
            seq["$gt"] = after_seq
        if before_seq is not None:
            seq["$lt"] = before_seq
        query: Doc = {"conversation_id": conversation_id}
        if seq:
            query["seq"] = seq
        direction = ASCENDING if after_seq is not None else DESCENDING
        async with self._op():
            docs = await self.messages.find(query, {"state": 1}).sort(
                "seq", direction).limit(limit + 1).to_list()
        has_more = len(docs) > limit
        states = [_msg_dec.decode(d["state"]) for d in docs[:limit]]
        if after_seq is None:
            states.reverse()
        return states, has_more

    async def sync_log(self, conversation_id: str, after_event_seq: int,
                       limit: int) -> tuple[list[LoggedEvent], bool]:
        async with self._op():
            docs = await self.sync_entries.find(
                {"conversation_id": conversation_id, "event_seq": {"$gt": after_event_seq}},
                {"event_seq": 1, "event": 1, "message_id": 1}).sort(
                "event_seq", ASCENDING).limit(limit + 1).to_list()
        events = [LoggedEvent(conversation_id, int(d["event_seq"]), d["event"],
                              d.get("message_id")) for d in docs[:limit]]
        return events, len(docs) > limit

    async def write_pipeline_batch(self, batch: PipelineBatch) -> list[ReceiptMark]:
        async with self._op():
            # Order matters without a transaction: messages, then what points at them.
            await self._insert_new(self.messages, [_message_doc(s) for s in batch.new_messages])
            # No upsert, like the embedded UPDATE: a change never creates a message.
            await self._update(self.messages, [
                UpdateOne({"_id": s.message.id},
                          {"$set": {"deleted": s.message.deleted, "state": _enc.encode(s)}})
                for s in batch.changed_messages])
            await self._insert_new(self.sync_entries, [_entry_doc(e) for e in batch.events])
            await self._update(self.conversations, [
                UpdateOne({"_id": a.conversation_id}, {"$max": _activity_max(
                    a.last_seq, a.last_event_seq, a.last_message_at)})
                for a in batch.activity])
            return await self._write_receipts(batch.receipts)

    async def _write_receipts(self, marks: list[ReceiptMark]) -> list[ReceiptMark]:
        """Forward-only marks; returns those that moved, in order, as the embedded store does.

        One read of the current marks decides what moves (a mark moves if the row is absent or
        below it, counting the marks before it in this batch); missing rows are inserted at zero,
        then one ``$max`` per row writes the result. FerretDB v1 answers an unordered ``update``
        with a failed upsert by stopping at the error, so no write here relies on one failing.
        """
        if not marks:
            return []
        rows: dict[tuple[str, str], dict[str, int]] = {}
        for m in marks:
            rows.setdefault((m.conversation_id, m.user_id), {})
        found = await self.receipts.find(
            {"_id": {"$in": [pair_id(c, u) for c, u in rows]}},
            {"conversation_id": 1, "user_id": 1, "delivered_seq": 1, "read_seq": 1}).to_list()
        current: dict[tuple[str, str], dict[str, int]] = {
            (d["conversation_id"], d["user_id"]): {
                "delivered_seq": int(d.get("delivered_seq", 0)),
                "read_seq": int(d.get("read_seq", 0))} for d in found}
        missing = [key for key in rows if key not in current]
        moved: list[ReceiptMark] = []
        for m in marks:
            key = (m.conversation_id, m.user_id)
            col = "read_seq" if m.kind == "read" else "delivered_seq"
            row = current.get(key)
            if row is not None and row[col] >= m.seq:
                continue
            if row is None:
                row = current[key] = {"delivered_seq": 0, "read_seq": 0}
            row[col] = max(row[col], m.seq)
            rows[key][col] = row[col]
            moved.append(m)
        if not moved:
            return []
        await self._insert_new(self.receipts, [
            {"_id": pair_id(c, u), "conversation_id": c, "user_id": u, "delivered_seq": 0,
             "read_seq": 0} for c, u in missing])
        await self._update(self.receipts, [
            UpdateOne({"_id": pair_id(c, u)}, {"$max": cols})
            for (c, u), cols in rows.items() if cols])
        return moved


async def _both(first: Awaitable[list[Doc]],
                second: Awaitable[list[Doc]]) -> tuple[list[Doc], list[Doc]]:
    """Await both; if one fails, still wait for the other (no orphaned task), then raise."""
    a, b = await asyncio.gather(first, second, return_exceptions=True)
    for result in (a, b):
        if isinstance(result, BaseException):
            raise result
    assert not isinstance(a, BaseException) and not isinstance(b, BaseException)
    return a, b


def _message_doc(s: MessageState) -> Doc:
    m = s.message
    return {"_id": m.id, "conversation_id": m.conversation_id, "seq": m.seq,
            "sender_id": m.sender_id, "client_msg_id": m.client_msg_id, "deleted": m.deleted,
            "state": _enc.encode(s)}


def _entry_doc(e: LoggedEvent) -> Doc:
    return {"_id": log_id(e.conversation_id, e.event_seq), "conversation_id": e.conversation_id,
            "event_seq": e.event_seq, "event": e.event, "message_id": e.message_id}


def _activity_max(last_seq: int, last_event_seq: int, last_message_at: str | None) -> Doc:
    fields: Doc = {"last_seq": last_seq, "last_event_seq": last_event_seq}
    if last_message_at is not None:
        # null sorts below every string, so $max replaces a missing/null time and moves sort_at.
        fields["last_message_at"] = last_message_at
        fields["sort_at"] = last_message_at
    return fields

