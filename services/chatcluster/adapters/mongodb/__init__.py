"""The Store on a MongoDB-protocol server (MongoDB, or FerretDB v1 as tested here).

Only the Store port lives here; the other ports stay embedded or on their own backends.
``store.MongoStore`` uses PyMongo's native asyncio API (``pymongo.AsyncMongoClient``); Motor,
the older asyncio wrapper, is deprecated upstream and is not used.

Guarantees (those of ``chatcluster.ports.store``, without multi-document transactions):

- Every write that must be atomic touches one document: a conversation's state, version,
  members and activity live in one document, so compare-and-set is a single conditional
  ``update_one``.
- Pipeline batches are idempotent part by part (inserts that ignore duplicate keys, ``$max``
  activity, forward-only receipts), so a replayed batch, or a batch cut short by a crash and
  replayed, changes nothing more.
- Where two documents must be written, the order makes a crash in between harmless (a sync-log
  entry before the change it announces; messages before the log entries and activity that
  point at them).
- Durable on return with the default write concern ``w=majority, j=true`` (overridable in the
  URL). Unreachable servers surface as ``Unavailable`` after a short server-selection timeout.

See docs/backends/mongodb.md.
"""
