"""ModerationStore on a MongoDB-protocol server, in the Store's database (``ports.moderation``).

Its own collections: ``bans`` (``_id`` = app and user), ``mutes`` (conversation and user),
``frozen_conversations``, ``session_devices`` and ``flags`` (``_id`` = the flag id, which is
one per member and message). Users, sessions, conversations, messages and
receipts are the Store's collections, read with the queries FerretDB 1.24 supports (``$in``,
``$or``, anchored ``$regex``, ``$gt``); no transactions are needed: each write is one document.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from pymongo import ASCENDING, DESCENDING, IndexModel

from chatcluster.domain.model import MessageState
from chatcluster.domain.moderation import Ban, Flag, FlagStatus
from chatcluster.ports.moderation import (
    ConversationModeration,
    SessionDevice,
    SessionInfo,
    UserRecord,
)
from chatcluster.ports.store import ReceiptMark

from .collections import MongoCollections
from .store import pair_id

Doc = dict[str, Any]
_msg_dec = msgspec.msgpack.Decoder(MessageState)
# Messages decoded per step while filtering by time (the time is inside the state blob).
SCAN_STEP = 500


def _ban(d: Doc) -> Ban:
    return Ban(app_id=d["app_id"], user_id=d["user_id"], by=d["by"], at=d["at"],
               reason=d.get("reason"), expires_at=d.get("expires_at"))


def _flag(d: Doc) -> Flag:
    return Flag(id=d["_id"], app_id=d["app_id"], message_id=d["message_id"],
                conversation_id=d["conversation_id"], sender_id=d["sender_id"],
                flagged_by=d["flagged_by"], reason=d["reason"], note=d.get("note"),
                created_at=d["created_at"], status=d["status"],
                resolved_by=d.get("resolved_by"), resolved_at=d.get("resolved_at"))


class MongoModerationStore(MongoCollections):
    INDEXES = {
        "bans": [IndexModel([("at", ASCENDING)], name="bans_by_time")],
        "mutes": [IndexModel([("conversation_id", ASCENDING)], name="mutes_by_conversation")],
        "frozen_conversations": [],
        "session_devices": [],
        "moderation_version": [],
        "flags": [IndexModel([("app_id", ASCENDING), ("status", ASCENDING),
                              ("created_at", ASCENDING), ("_id", ASCENDING)],
                             name="flags_queue"),
                  IndexModel([("app_id", ASCENDING), ("message_id", ASCENDING)],
                             name="flags_by_message"),
                  IndexModel([("app_id", ASCENDING), ("flagged_by", ASCENDING)],
                             name="flags_by_user")],
    }

    def __init__(self, url: str, database: str | None = None, **client_options: Any) -> None:
        super().__init__(url, database, **client_options)
        self.bans = self.db["bans"]
        self.mutes = self.db["mutes"]
        self.frozen = self.db["frozen_conversations"]
        self.devices = self.db["session_devices"]
        self.versions = self.db["moderation_version"]
        self.flags = self.db["flags"]
        self.users = self.db["users"]
        self.sessions = self.db["sessions"]
        self.conversations = self.db["conversations"]
        self.messages = self.db["messages"]
        self.receipts = self.db["receipts"]

    # bans ---------------------------------------------------------------------------------------
    async def set_ban(self, ban: Ban) -> None:
        async with self._op():
            await self.bans.replace_one({"_id": pair_id(ban.app_id, ban.user_id)}, {
                "app_id": ban.app_id, "user_id": ban.user_id, "by": ban.by, "at": ban.at,
                "reason": ban.reason, "expires_at": ban.expires_at}, upsert=True)
            await self._bump()

    async def remove_ban(self, app_id: str, user_id: str) -> bool:
        async with self._op():
            res = await self.bans.delete_one({"_id": pair_id(app_id, user_id)})
            await self._bump()
        return res.deleted_count == 1

    async def _bump(self) -> None:
        """After a change (see ModerationStore.version): a poller that reads the new number
        then reads the changed state."""
        await self.versions.update_one({"_id": "v"}, {"$inc": {"v": 1}}, upsert=True)

    async def version(self) -> int:
        async with self._op():
            doc = await self.versions.find_one({"_id": "v"})
        return int(doc["v"]) if doc else 0

    async def get_ban(self, app_id: str, user_id: str) -> Ban | None:
        async with self._op():
            doc = await self.bans.find_one({"_id": pair_id(app_id, user_id)})
        return None if doc is None else _ban(doc)

    async def list_bans(self, app_id: str, after: str | None, limit: int) -> list[Ban]:
        async with self._op():
            docs = await self.bans.find({"app_id": app_id, "user_id": {"$gt": after or ""}}).sort(
                "user_id", ASCENDING).limit(limit).to_list()
        return [_ban(d) for d in docs]

    async def bans_since(self, since: str) -> list[Ban]:
        async with self._op():
            docs = await self.bans.find({"at": {"$gte": since}}).to_list()
        return [_ban(d) for d in docs]

    # conversations ----------------------------------------------------------------------------
    async def set_mute(self, app_id: str, conversation_id: str, user_id: str, muted: bool,
                       by: str, at: str) -> bool:
        key = pair_id(conversation_id, user_id)
        async with self._op():
            if muted:
                skipped = await self._insert_new(self.mutes, [{
                    "_id": key, "conversation_id": conversation_id, "user_id": user_id,
                    "app_id": app_id, "by": by, "at": at}])
                changed = not skipped
            else:
                changed = (await self.mutes.delete_one({"_id": key})).deleted_count == 1
            await self._bump()
            return changed

    async def set_frozen(self, app_id: str, conversation_id: str, frozen: bool, by: str,
                         at: str) -> bool:
        async with self._op():
            if frozen:
                skipped = await self._insert_new(self.frozen, [{
                    "_id": conversation_id, "app_id": app_id, "by": by, "at": at}])
                changed = not skipped
            else:
                changed = (await self.frozen.delete_one({"_id": conversation_id})
                           ).deleted_count == 1
            await self._bump()
            return changed

    async def conversation_moderation(self, conversation_id: str) -> ConversationModeration:
        async with self._op():
            frozen = await self.frozen.find_one({"_id": conversation_id})
            muted = await self.mutes.find({"conversation_id": conversation_id},
                                          {"user_id": 1}).to_list()
        return ConversationModeration(
            conversation_id=conversation_id, frozen=frozen is not None,
            frozen_by=frozen["by"] if frozen else None, frozen_at=frozen["at"] if frozen else None,
            muted=sorted(d["user_id"] for d in muted))

    # flags --------------------------------------------------------------------------------------
    async def add_flag(self, flag: Flag) -> Flag:
        doc: Doc = {"_id": flag.id, **{k: v for k, v in msgspec.structs.asdict(flag).items()
                                       if k != "id"}}
        async with self._op():
            await self._insert_new(self.flags, [doc])
            kept = await self.flags.find_one({"_id": flag.id})
        assert kept is not None  # inserted now or before
        return _flag(kept)

    async def get_flag(self, app_id: str, flag_id: str) -> Flag | None:
        async with self._op():
            doc = await self.flags.find_one({"_id": flag_id, "app_id": app_id})
        return None if doc is None else _flag(doc)

    async def list_flags(self, app_id: str, status: FlagStatus | None,
                         after: tuple[str, str] | None, limit: int) -> list[Flag]:
        query: Doc = {"app_id": app_id}
        if status is not None:
            query["status"] = status
        if after is not None:
            query["$or"] = [{"created_at": {"$gt": after[0]}},
                            {"created_at": after[0], "_id": {"$gt": after[1]}}]
        async with self._op():
            docs = await self.flags.find(query).sort(
                [("created_at", ASCENDING), ("_id", ASCENDING)]).limit(limit).to_list()
        return [_flag(d) for d in docs]

    async def resolve_flags(self, app_id: str, message_id: str, status: FlagStatus, by: str,
                            at: str) -> int:
        async with self._op():
            res = await self.flags.update_many(
                {"app_id": app_id, "message_id": message_id, "status": "open"},
                {"$set": {"status": status, "resolved_by": by, "resolved_at": at}})
        return int(res.modified_count)

    async def flags_by(self, app_id: str, user_id: str) -> list[Flag]:
        async with self._op():
            docs = await self.flags.find({"app_id": app_id, "flagged_by": user_id}).sort(
                [("created_at", ASCENDING), ("_id", ASCENDING)]).to_list()
        return [_flag(d) for d in docs]

    # users and sessions -----------------------------------------------------------------------
    async def record_device(self, device: SessionDevice) -> None:
        fields = {k: v for k, v in (("user_agent", device.user_agent), ("ip", device.ip),
                                    ("last_refresh_at", device.last_refresh_at))
                  if v is not None}
        update: Doc = {"$setOnInsert": {"app_id": device.app_id, "user_id": device.user_id}}
        if fields:
            update["$set"] = fields
        async with self._op():
            await self.devices.update_one({"_id": device.session_id}, update, upsert=True)

    async def list_users(self, app_id: str, prefix: str | None, after: str | None,
                         limit: int) -> list[UserRecord]:
        query: Doc = {"app_id": app_id, "user_id": {"$gt": after or ""}}
        if prefix:
            anchored = {"$regex": "^" + re.escape(prefix)}
            query["$or"] = [{"user_id": anchored}, {"display_name": anchored}]
        async with self._op():
            docs = await self.users.find(query).sort("user_id", ASCENDING).limit(
                limit).to_list()
        return [UserRecord(app_id=app_id, user_id=d["user_id"],
                           display_name=d.get("display_name"), created_at=d["created_at"])
                for d in docs]

    async def get_user(self, app_id: str, user_id: str) -> UserRecord | None:
        async with self._op():
            d = await self.users.find_one({"_id": pair_id(app_id, user_id)})
        if d is None:
            return None
        return UserRecord(app_id=app_id, user_id=user_id, display_name=d.get("display_name"),
                          created_at=d["created_at"])

    async def user_sessions(self, app_id: str, user_id: str) -> list[SessionInfo]:
        async with self._op():
            sessions = await self.sessions.find({"app_id": app_id, "user_id": user_id}).sort(
                [("created_at", DESCENDING), ("_id", DESCENDING)]).to_list()
            devices = {d["_id"]: d for d in await self.devices.find(
                {"_id": {"$in": [s["_id"] for s in sessions]}}).to_list()} if sessions else {}
        out = []
        for s in sessions:
            d = devices.get(s["_id"], {})
            out.append(SessionInfo(id=s["_id"], user_id=user_id, created_at=s["created_at"],
                                   revoked_at=s.get("revoked_at"),
                                   last_refresh_at=d.get("last_refresh_at"),
                                   user_agent=d.get("user_agent"), ip=d.get("ip")))
        return out

    async def erase_profile(self, app_id: str, user_id: str) -> None:
        async with self._op():
            await self.users.update_one({"_id": pair_id(app_id, user_id)},
                                        {"$set": {"display_name": None}})
            await self.devices.update_many({"app_id": app_id, "user_id": user_id},
                                           {"$set": {"user_agent": None, "ip": None}})
            await self.flags.update_many({"app_id": app_id, "flagged_by": user_id},
                                         {"$set": {"note": None}})

    # messages ---------------------------------------------------------------------------------
    async def _app_conversations(self, app_id: str) -> list[str]:
        docs = await self.conversations.find({"app_id": app_id}, {"_id": 1}).to_list()
        return [d["_id"] for d in docs]

    async def messages_sent_by(self, app_id: str, user_id: str, after: str | None,
                               limit: int) -> list[MessageState]:
        # External ids repeat across apps: the state names the app, so filter on it.
        out: list[MessageState] = []
        cursor = after or ""
        async with self._op():
            while len(out) < limit:
                docs = await self.messages.find(
                    {"sender_id": user_id, "_id": {"$gt": cursor}}, {"state": 1}).sort(
                    "_id", ASCENDING).limit(SCAN_STEP).to_list()
                if not docs:
                    break
                cursor = docs[-1]["_id"]
                out += [s for s in (_msg_dec.decode(d["state"]) for d in docs)
                        if s.app_id == app_id]
        return out[:limit]

    async def messages_created_before(self, app_id: str, before: str,
                                      limit: int) -> list[MessageState]:
        out: list[MessageState] = []
        async with self._op():
            conversations = await self._app_conversations(app_id)
            for start in range(0, len(conversations), 100):
                cursor = ""
                while len(out) < limit:
                    docs = await self.messages.find(
                        {"conversation_id": {"$in": conversations[start:start + 100]},
                         "deleted": False, "_id": {"$gt": cursor}}, {"state": 1}).sort(
                        "_id", ASCENDING).limit(SCAN_STEP).to_list()
                    if not docs:
                        break
                    cursor = docs[-1]["_id"]
                    out += [s for s in (_msg_dec.decode(d["state"]) for d in docs)
                            if s.message.created_at < before]
                if len(out) >= limit:
                    break
        return out[:limit]

    async def receipts_of(self, app_id: str, user_id: str) -> list[ReceiptMark]:
        async with self._op():
            docs = await self.receipts.find({"user_id": user_id}).sort(
                "conversation_id", ASCENDING).to_list()
            ids = [d["conversation_id"] for d in docs]
            mine = {d["_id"] for d in await self.conversations.find(
                {"_id": {"$in": ids}, "app_id": app_id}, {"_id": 1}).to_list()} if ids else set()
        out: list[ReceiptMark] = []
        for d in docs:
            if d["conversation_id"] not in mine:
                continue
            if d.get("delivered_seq"):
                out.append(ReceiptMark(d["conversation_id"], user_id, "delivered",
                                       int(d["delivered_seq"])))
            if d.get("read_seq"):
                out.append(ReceiptMark(d["conversation_id"], user_id, "read",
                                       int(d["read_seq"])))
        return out
