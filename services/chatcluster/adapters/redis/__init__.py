"""Redis adapters (``--cache redis://…`` / ``CHAT_CACHE_URL``), all through redis.asyncio.

    fanout.py     Fanout     pub/sub channel ``{prefix}fanout`` (msgpack Envelopes)
    registry.py   Registry   ``{prefix}replicas`` hash, per-(app, user) presence hashes,
                             presence-event arbitration (one Lua script)
    sequencer.py  Sequencer  per-conversation counters and reservations (one Lua call each),
                             with durable high-water marks in MongoDB (``sequencer_hwm``)

What Redis holds here can all be lost without losing an acknowledged message or repeating a
number: fan-out is at most once by contract, the registry is rewritten by every heartbeat
and connection change, and the sequencer rebuilds its counters above the MongoDB marks
(see ``sequencer``'s docstring for exactly what a flush can cost). Every key starts with
``prefix`` (default ``chat:``), so deployments and test runs can share one server.
"""
