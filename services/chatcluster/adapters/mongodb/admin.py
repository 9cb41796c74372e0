"""AdminStore on a MongoDB-protocol server (tested on FerretDB 1.24), beside ``MongoStore``.

Single use rests on the one write every such server makes atomic, the insert of a unique
``_id`` (FerretDB v1 runs a conditional ``update_one`` as a read then a write, so two racing
updates can both match): a TOTP step or a recovery code is spent by inserting
``<admin>|totp|<step>`` / ``<admin>|rc|<digest>`` into ``admin_used_codes``, and each lockout
state is a new document ``<key>#<n>``, so of two failures counted at once one must retry
on top of the other. Records are plain documents (msgspec builtins).
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import (
    DuplicateKeyError,
)

from chatcluster.auth.admin import after_failure
from chatcluster.domain.errors import Conflict, Unavailable
from chatcluster.ports.admin import (
    AdminPatch,
    AdminRecord,
    AdminTokenRecord,
    AppSettings,
    AuditEntry,
    AuditQuery,
    Lockout,
    RootToken,
    SecretGrace,
)

from .collections import MongoCollections

Doc = dict[str, Any]
T = TypeVar("T")

COLLECTIONS = ("admins", "admin_tokens", "admin_lockouts", "admin_used_codes", "admin_root",
               "admin_audit", "app_settings", "app_secret_grace")
INDEXES: dict[str, list[IndexModel]] = {
    "admins": [IndexModel([("email", ASCENDING)], unique=True, name="admins_email")],
    "admin_tokens": [IndexModel([("admin_id", ASCENDING)], name="admin_tokens_by_admin")],
    "admin_lockouts": [IndexModel([("key", ASCENDING), ("n", DESCENDING)],
                                  name="admin_lockouts_by_key")],
    "admin_audit": [IndexModel([("at", DESCENDING), ("_id", DESCENDING)],
                               name="admin_audit_by_time")],
}
# Compare-and-set rounds for a lockout counter under contention before giving up.
CAS_ATTEMPTS = 20


def _doc(record: msgspec.Struct, key: str) -> Doc:
    doc: Doc = msgspec.to_builtins(record)
    doc["_id"] = doc[key]
    return doc


def _load(kind: type[T], doc: Doc) -> T:
    doc = {k: v for k, v in doc.items() if k != "_id"}
    return msgspec.convert(doc, kind)


class MongoAdminStore(MongoCollections):
    INDEXES = {name: INDEXES.get(name, []) for name in COLLECTIONS}

    def __init__(self, url: str, database: str | None = None, **client_options: Any) -> None:
        super().__init__(url, database, **client_options)
        self.admins = self.db["admins"]
        self.tokens = self.db["admin_tokens"]
        self.lockouts = self.db["admin_lockouts"]
        self.used_codes = self.db["admin_used_codes"]
        self.root = self.db["admin_root"]
        self.audit = self.db["admin_audit"]
        self.settings = self.db["app_settings"]
        self.grace = self.db["app_secret_grace"]

    # admins -----------------------------------------------------------------------------------
    async def create_admin(self, admin: AdminRecord) -> None:
        async with self._op():
            try:
                await self.admins.insert_one(_doc(admin, "id"))
            except DuplicateKeyError:
                raise Conflict("an admin with this email exists") from None

    async def get_admin(self, admin_id: str) -> AdminRecord | None:
        async with self._op():
            doc = await self.admins.find_one({"_id": admin_id})
        return None if doc is None else _load(AdminRecord, doc)

    async def get_admin_by_email(self, email: str) -> AdminRecord | None:
        async with self._op():
            doc = await self.admins.find_one({"email": email})
        return None if doc is None else _load(AdminRecord, doc)

    async def list_admins(self) -> list[AdminRecord]:
        async with self._op():
            docs = await self.admins.find({}).sort([("created_at", ASCENDING),
                                                    ("_id", ASCENDING)]).to_list()
        return [_load(AdminRecord, d) for d in docs]

    async def update_admin(self, admin_id: str, patch: AdminPatch) -> AdminRecord | None:
        changes: Doc = {f: getattr(patch, f) for f in (
            "role", "disabled", "password_hash", "mfa_secret", "mfa_enabled",
            "recovery_digests", "app_ids") if getattr(patch, f) is not None}
        if patch.clear_mfa:
            changes.update(mfa_secret=None, mfa_enabled=False, recovery_digests=[])
        async with self._op():
            if changes:
                res = await self.admins.update_one({"_id": admin_id}, {"$set": changes})
                if res.matched_count == 0:
                    return None
            doc = await self.admins.find_one({"_id": admin_id})
        return None if doc is None else _load(AdminRecord, doc)

    async def delete_admin(self, admin_id: str) -> bool:
        async with self._op():
            res = await self.admins.delete_one({"_id": admin_id})
        return res.deleted_count == 1

    async def _spend(self, marker: str) -> bool:
        try:
            await self.used_codes.insert_one({"_id": marker})
        except DuplicateKeyError:
            return False
        return True

    async def use_totp_step(self, admin_id: str, step: int) -> bool:
        async with self._op():
            doc = await self.admins.find_one({"_id": admin_id}, {"totp_last_step": 1})
            if doc is None or step <= int(doc.get("totp_last_step", 0)):
                return False
            if not await self._spend(f"{admin_id}|totp|{step}"):
                return False
            await self.admins.update_one({"_id": admin_id},
                                         {"$max": {"totp_last_step": step}})
        return True

    async def use_recovery_code(self, admin_id: str, code_digest: str) -> bool:
        async with self._op():
            doc = await self.admins.find_one({"_id": admin_id}, {"recovery_digests": 1})
            if doc is None or code_digest not in doc.get("recovery_digests", []):
                return False
            if not await self._spend(f"{admin_id}|rc|{code_digest}"):
                return False
            await self.admins.update_one({"_id": admin_id},
                                         {"$pull": {"recovery_digests": code_digest}})
        return True

    # admin tokens -----------------------------------------------------------------------------
    async def save_token(self, token: AdminTokenRecord) -> None:
        async with self._op():
            await self.tokens.insert_one(_doc(token, "digest"))

    async def get_token(self, token_digest: str) -> AdminTokenRecord | None:
        async with self._op():
            doc = await self.tokens.find_one({"_id": token_digest})
        return None if doc is None else _load(AdminTokenRecord, doc)

    async def revoke_token(self, token_digest: str) -> None:
        async with self._op():
            await self.tokens.update_one({"_id": token_digest}, {"$set": {"revoked": True}})

    async def revoke_admin_tokens(self, admin_id: str) -> None:
        async with self._op():
            await self.tokens.update_many({"admin_id": admin_id}, {"$set": {"revoked": True}})

    # lockout ----------------------------------------------------------------------------------
    async def _lockout_doc(self, key: str) -> Doc | None:
        docs = await self.lockouts.find({"key": key}).sort("n", DESCENDING).limit(1).to_list()
        return docs[0] if docs else None

    async def get_lockout(self, key: str) -> Lockout:
        async with self._op():
            doc = await self._lockout_doc(key)
        return Lockout() if doc is None else _load(Lockout, doc["state"])

    async def record_login_failure(self, key: str, now: float) -> Lockout:
        async with self._op():
            for _ in range(CAS_ATTEMPTS):
                doc = await self._lockout_doc(key)
                old = Lockout() if doc is None else _load(Lockout, doc["state"])
                n = 0 if doc is None else int(doc["n"])
                failures, first, locked_until = after_failure(old.failures,
                                                              old.first_failure_at, now)
                new = Lockout(failures=failures, first_failure_at=first,
                              locked_until=locked_until or old.locked_until)
                try:
                    await self.lockouts.insert_one({"_id": f"{key}#{n + 1}", "key": key,
                                                    "n": n + 1,
                                                    "state": msgspec.to_builtins(new)})
                except DuplicateKeyError:
                    continue  # another failure was counted first: count on top of it
                await self.lockouts.delete_many({"key": key, "n": {"$lt": n + 1}})
                return new
        raise Unavailable("lockout counter under too much contention")

    async def clear_lockout(self, key: str) -> None:
        async with self._op():
            await self.lockouts.delete_many({"key": key})

    # root token -------------------------------------------------------------------------------
    async def get_root_token(self) -> RootToken | None:
        async with self._op():
            doc = await self.root.find_one({"_id": "root"})
        return None if doc is None else _load(RootToken, doc)

    async def set_root_token(self, root: RootToken) -> None:
        async with self._op():
            await self.root.replace_one({"_id": "root"}, {"_id": "root",
                                                          **msgspec.to_builtins(root)},
                                        upsert=True)

    # audit ------------------------------------------------------------------------------------
    async def append_audit(self, entry: AuditEntry) -> None:
        async with self._op():
            await self.audit.insert_one(_doc(entry, "id"))

    async def query_audit(self, query: AuditQuery, limit: int) -> list[AuditEntry]:
        where: Doc = {}
        for field, value in (("actor", query.actor), ("action", query.action),
                             ("app_id", query.app_id)):
            if value is not None:
                where[field] = value
        at: Doc = {}
        if query.since is not None:
            at["$gte"] = query.since
        if query.until is not None:
            at["$lt"] = query.until
        if at:
            where["at"] = at
        if query.before is not None:
            before_at, before_id = query.before
            where = {"$and": [where, {"$or": [{"at": {"$lt": before_at}},
                                              {"at": before_at, "_id": {"$lt": before_id}}]}]}
        async with self._op():
            docs = await self.audit.find(where).sort([("at", DESCENDING), ("_id", DESCENDING)]
                                                     ).limit(limit).to_list()
        return [_load(AuditEntry, d) for d in docs]

    # apps -------------------------------------------------------------------------------------
    async def get_app_settings(self, app_id: str) -> AppSettings | None:
        async with self._op():
            doc = await self.settings.find_one({"_id": app_id})
        return None if doc is None else _load(AppSettings, doc)

    async def put_app_settings(self, settings: AppSettings) -> None:
        async with self._op():
            await self.settings.replace_one({"_id": settings.app_id},
                                            _doc(settings, "app_id"), upsert=True)

    async def get_secret_grace(self, app_id: str) -> SecretGrace | None:
        async with self._op():
            doc = await self.grace.find_one({"_id": app_id})
        return None if doc is None else _load(SecretGrace, doc)

    async def set_secret_grace(self, grace: SecretGrace | None, app_id: str) -> None:
        async with self._op():
            if grace is None:
                await self.grace.delete_one({"_id": app_id})
            else:
                await self.grace.replace_one({"_id": app_id}, _doc(grace, "app_id"),
                                             upsert=True)

    async def forget_app(self, app_id: str) -> None:
        async with self._op():
            await self.settings.delete_one({"_id": app_id})
            await self.grace.delete_one({"_id": app_id})
