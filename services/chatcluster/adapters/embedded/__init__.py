"""The embedded default: every port on SQLite files in one state directory.

Several processes (gateway, socket replicas, consumers) share the files; SQLite's WAL mode
lets readers run beside the single writer. Each process writes through one thread per file
that commits queued writes in groups (``database.Database``), so the event loops never wait on
a lock and one commit covers many messages.

Durability: commits reach the operating system before a call returns (WAL,
``synchronous=NORMAL``), so they survive ``kill -9`` of any or every process. Surviving power
loss needs ``synchronous=FULL`` (``CHAT_SQLITE_FSYNC=1``), at a cost per commit.

    store.db      Store and Sequencer (tenants, sessions, conversations, messages, counters)
    bus.db        Bus (topic log, consumer offsets)
    fanout.db     Fanout (a short-lived frame log every replica tails)
    registry.db   Registry (replicas, presence)
"""
