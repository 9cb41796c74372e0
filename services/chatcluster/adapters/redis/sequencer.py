"""Sequencer on Redis (one Lua script call per reservation), numbering fenced by MongoDB.

Redis keys (``prefix`` e.g. ``chat:``; ``{conv}`` is a Redis Cluster hash tag, so every key
of one conversation lives in one slot and one script may touch them all):

    {prefix}seq:{conv}              hash  seq, ev, hwm_seq, hwm_ev, epoch   (no TTL)
    {prefix}res:{conv}:<sha1>       hash  draft (msgpack Message), seq, ev  (TTL, 7 days)
    {prefix}mid:<message_id>        string -> the res: key above            (same TTL)

``<sha1>`` is the hex SHA-1 of ``sender_id + NUL + client_msg_id``: a fixed-length key
whatever the client sends. The ``mid:`` index cannot carry the conversation's tag (a lookup
knows only the message id), so on Redis Cluster the script would fail with CROSSSLOT: this
adapter targets one primary (``redis://``), and a Cluster port would write the index in a
second command after CREATED. MongoDB holds, in collection ``sequencer_hwm`` of the store's
database, one document per conversation: ``{_id: conv, seq, ev, epoch}``, the durable
high-water marks.

The hot path is one EVALSHA (``_RESERVE``), which atomically, in this order:
 1. returns the reservation of (conv, sender, client_msg_id) if it exists (created False);
 2. answers REBUILD if the counter hash is missing (Redis lost its data);
 3. answers EXTEND, handing out nothing, if seq+1 > hwm_seq or ev+1 > hwm_ev;
 4. else increments seq and ev, stores the reservation and its index, answers CREATED.
``next_event_seq`` is the same script without the reservation (``_NEXT_EVENT``).

EXTEND: the conversation's marks are first raised in MongoDB (``$max`` to need + ``block``,
majority write concern, journaled), and only then in Redis (``_SET_HWM``, a max again);
then the reservation is retried. So every number Redis hands out is at most a mark MongoDB
already holds durably. One MongoDB write buys ``block`` + 1 numbers (default 1,000); within
one process, concurrent callers that hit EXTEND on one conversation share a single write,
and when more callers wait than a block holds, the step grows to their number.

REBUILD: read the MongoDB marks (0, 0 if none) and create the counter with seq = hwm_seq =
the stored seq mark and ev = hwm_ev = the stored ev mark (``_INIT``, only if still missing,
so racing rebuilders agree on one). The counter starts exhausted, so it must EXTEND above
the durable marks before it hands out anything (the rebuilder does so at once): after a
flush, numbers continue strictly above everything ever handed out (the gap is at most one
step, ``block`` + 1 unless a burst grew it; the port allows gaps).

The epoch fence (an addition to the plain design, for one race): a rebuilder that read the
marks, stalled, and wrote its counter after a *second* flush would restart numbering from
a stale mark while another incarnation had handed out numbers above it. So each rebuild
stamps its counter with a random ``epoch``, and EXTEND is a compare-and-set: MongoDB
accepts it only if its document carries this epoch already, or its marks still equal the
counter's marks (nobody extended since the read, so nothing above them was handed out; the
write then takes the epoch over). A refused EXTEND deletes its stale counter (if still of
that epoch) and the retry rebuilds from fresh marks. ``_SET_HWM`` likewise applies only to
the epoch that was extended. Cost: nothing on the hot path.

What "durable on return" means here: Redis by itself is not durable (``scripts/services``
runs it without persistence; a replica may also lag its primary). What holds:
- Numbering never repeats and never goes backwards, across any loss of Redis data, because
  the marks live in MongoDB (above). After a flush the counter restarts from the marks.
- No acknowledged message is lost: before the ok, the socket service also publishes the
  message to the Bus, and the pipeline stores it in the Store, whose unique
  (conversation, sender, client_msg_id) index keeps exactly one copy.
- What a flush CAN cost: idempotent send across the flush. A resend of a message sent
  before the flush that arrives after it finds no reservation, so it is answered with a
  new id and a new seq, and the members get a second ``message.new``. The Store's unique
  index ignores that second copy: history keeps the message once, under its first id and
  seq. The same holds for a resend arriving after the reservation's TTL (7 days).
- Failover to a lagging Redis replica is NOT detected: its counter exists but may be
  behind numbers already handed out. After a failover, delete the ``{prefix}seq:*`` keys
  (or flush): the next reservation of each conversation then rebuilds from MongoDB.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable
from typing import Any

import msgspec
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError
from pymongo.write_concern import WriteConcern
from redis.asyncio import BlockingConnectionPool, Redis

from chatcluster.domain.model import Message
from chatcluster.ports.sequencer import Reservation

# Script answers (first element of the reply).
EXISTING, CREATED, REBUILD, EXTEND = 0, 1, 2, 3

# Numbers are Lua doubles inside the scripts: exact below 2**53, which at a million numbers a
# second in one conversation is 285 years away.
_COUNTER_FIELDS = "'seq', 'ev', 'hwm_seq', 'hwm_ev', 'epoch'"

_RESERVE = f"""
local r = redis.call('HMGET', KEYS[2], 'draft', 'seq', 'ev')
if r[1] then return {{{EXISTING}, tonumber(r[2]), tonumber(r[3]), r[1]}} end
local c = redis.call('HMGET', KEYS[1], {_COUNTER_FIELDS})
if not c[1] then return {{{REBUILD}}} end
if tonumber(c[1]) + 1 > tonumber(c[3]) or tonumber(c[2]) + 1 > tonumber(c[4]) then
  return {{{EXTEND}, tonumber(c[1]), tonumber(c[2]), tonumber(c[3]), tonumber(c[4]), c[5]}}
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local ev = redis.call('HINCRBY', KEYS[1], 'ev', 1)
redis.call('HSET', KEYS[2], 'draft', ARGV[1], 'seq', seq, 'ev', ev)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], KEYS[2], 'PX', ARGV[2])
return {{{CREATED}, seq, ev}}
"""

_NEXT_EVENT = f"""
local c = redis.call('HMGET', KEYS[1], {_COUNTER_FIELDS})
if not c[1] then return {{{REBUILD}}} end
if tonumber(c[2]) + 1 > tonumber(c[4]) then
  return {{{EXTEND}, tonumber(c[1]), tonumber(c[2]), tonumber(c[3]), tonumber(c[4]), c[5]}}
end
return {{{CREATED}, 0, redis.call('HINCRBY', KEYS[1], 'ev', 1)}}
"""

# Only if still missing: racing rebuilders (and a stale one) must not reset a live counter.
_INIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'ev', ARGV[2], 'hwm_seq', ARGV[1],
           'hwm_ev', ARGV[2], 'epoch', ARGV[3])
return 1
"""

# Marks only rise, and only on the counter whose epoch MongoDB accepted.
_SET_HWM = """
local c = redis.call('HMGET', KEYS[1], 'epoch', 'hwm_seq', 'hwm_ev')
if c[1] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'hwm_seq', math.max(tonumber(c[2]), tonumber(ARGV[2])),
           'hwm_ev', math.max(tonumber(c[3]), tonumber(ARGV[3])))
return 1
"""

_DROP_STALE = """
if redis.call('HGET', KEYS[1], 'epoch') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# A reservation normally succeeds on the first or second call (after one EXTEND); more
# attempts happen only while other callers drain fresh blocks first (tiny blocks, heavy
# contention) or Redis is being flushed. Beyond this, the caller gets an error (a failed
# request, which the protocol allows) rather than a livelock.
MAX_ATTEMPTS = 100
DEFAULT_TTL_S = 7 * 24 * 3600

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Message)


class SequencerUnavailable(RuntimeError):
    """No number could be reserved after ``MAX_ATTEMPTS`` refills."""


class RedisSequencer:
    def __init__(self, redis_url: str, mongodb_url: str, prefix: str = "chat:",
                 block: int = 1000, *, reservation_ttl_s: float = DEFAULT_TTL_S,
                 database: str | None = None, collection: str = "sequencer_hwm",
                 max_connections: int = 64) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"prefix {prefix!r}: braces would replace the {{conv}} hash tag")
        if block < 1:
            raise ValueError("block must be at least 1")
        # A blocking pool: 2,000 concurrent sends wait their turn for one of 64 connections
        # (redis-py 8.1's default pool raises MaxConnectionsError past 100 instead).
        self.redis: Redis = Redis.from_pool(
            BlockingConnectionPool.from_url(redis_url, max_connections=max_connections))
        self.prefix = prefix
        self.block = block
        self._ttl_ms = int(reservation_ttl_s * 1000)
        self._mongodb_url = mongodb_url
        self._database = database
        self._collection = collection
        self._mongo: AsyncMongoClient[dict[str, Any]] | None = None
        self._hwm: AsyncCollection[dict[str, Any]] | None = None
        self._reserve = self.redis.register_script(_RESERVE)
        self._next_event = self.redis.register_script(_NEXT_EVENT)
        self._init = self.redis.register_script(_INIT)
        self._set_hwm = self.redis.register_script(_SET_HWM)
        self._drop_stale = self.redis.register_script(_DROP_STALE)
        self._refills: dict[str, asyncio.Future[None]] = {}
        self._waiting: dict[str, int] = {}  # callers waiting for each conversation's refill
        # What the fault tests (and metrics) count: MongoDB writes and reads of the marks.
        self.extends = 0
        self.rebuilds = 0

    # -- keys ----------------------------------------------------------------------------------
    def counter_key(self, conversation_id: str) -> str:
        return f"{self.prefix}seq:{{{conversation_id}}}"

    def reservation_key(self, draft: Message) -> str:
        digest = hashlib.sha1(f"{draft.sender_id}\0{draft.client_msg_id}".encode(),
                              usedforsecurity=False).hexdigest()
        return f"{self.prefix}res:{{{draft.conversation_id}}}:{digest}"

    def index_key(self, message_id: str) -> str:
        return f"{self.prefix}mid:{message_id}"

    # -- the port ------------------------------------------------------------------------------
    async def reserve_message(self, draft: Message) -> Reservation:
        conv = draft.conversation_id
        keys = [self.counter_key(conv), self.reservation_key(draft), self.index_key(draft.id)]
        args: list[bytes | int] = [_enc.encode(draft), self._ttl_ms]
        for _ in range(MAX_ATTEMPTS):
            reply: list[Any] = await self._reserve(keys=keys, args=args)
            if reply[0] == CREATED:
                return Reservation(msgspec.structs.replace(draft, seq=int(reply[1])),
                                   int(reply[2]), created=True)
            if reply[0] == EXISTING:
                message = msgspec.structs.replace(_dec.decode(reply[3]), seq=int(reply[1]))
                return Reservation(message, int(reply[2]), created=False)
            await self._refill(conv, reply)
        raise SequencerUnavailable(f"no seq for conversation {conv} after {MAX_ATTEMPTS} tries")

    async def next_event_seq(self, conversation_id: str) -> int:
        keys = [self.counter_key(conversation_id)]
        for _ in range(MAX_ATTEMPTS):
            reply: list[Any] = await self._next_event(keys=keys)
            if reply[0] == CREATED:
                return int(reply[2])
            await self._refill(conversation_id, reply)
        raise SequencerUnavailable(
            f"no event_seq for conversation {conversation_id} after {MAX_ATTEMPTS} tries")

    async def reserved_message(self, message_id: str) -> Message | None:
        # Two reads rather than a script: the res: key is known only after the first, and a
        # script must name its keys up front. Not on the hot path (edits of fresh messages).
        key = await self.redis.get(self.index_key(message_id))
        if key is None:
            return None
        draft, seq = await self.redis.hmget(key, ["draft", "seq"])
        if not isinstance(draft, bytes) or seq is None:
            return None  # expired between the two reads
        return msgspec.structs.replace(_dec.decode(draft), seq=int(seq))

    async def last_seq(self, conversation_id: str) -> int:
        key = self.counter_key(conversation_id)
        seq = await self.redis.hget(key, "seq")
        if seq is None:
            # Redis lost the counter (or never had it): rebuild it from the durable marks,
            # which bound every seq handed out. Numbers between the true last seq and the
            # mark are burned by the rebuild, so the mark is then the last seq in effect.
            if not await self._rebuild(conversation_id):
                return 0
            seq = await self.redis.hget(key, "seq")
        return 0 if seq is None else int(seq)

    async def close(self) -> None:
        await self.redis.aclose()
        if self._mongo is not None:
            await self._mongo.close()
            self._mongo = self._hwm = None

    # -- refills: EXTEND and REBUILD ------------------------------------------------------------
    async def _refill(self, conv: str, reply: list[Any]) -> None:
        """Run the refill ``reply`` asks for, or wait for the one already running here.

        Either way the caller then retries its script: a refill only ever makes a retry
        likelier to succeed, so sharing one per conversation is safe (and it makes EXTEND
        cost one MongoDB write per block, not one per waiting caller).
        """
        running = self._refills.get(conv)
        if running is None:
            work: Awaitable[Any]
            if reply[0] == REBUILD:
                work = self._rebuild(conv, extend=True)
            else:
                _, seq, ev, hwm_seq, hwm_ev, epoch = reply
                work = self._extend(conv, int(seq), int(ev), int(hwm_seq), int(hwm_ev),
                                    epoch.decode() if isinstance(epoch, bytes) else "")
            running = asyncio.ensure_future(self._run_refill(conv, work))
            self._refills[conv] = running
        self._waiting[conv] = self._waiting.get(conv, 0) + 1
        try:
            # Shielded: a cancelled caller must not cancel the refill others are waiting for.
            await asyncio.shield(running)
        finally:
            left = self._waiting.pop(conv) - 1
            if left:
                self._waiting[conv] = left

    async def _run_refill(self, conv: str, work: Awaitable[Any]) -> None:
        try:
            await work
        finally:
            self._refills.pop(conv, None)

    async def _rebuild(self, conv: str, *, extend: bool = False) -> bool:
        """Create the missing counter at the durable marks. False if there are none.

        With ``extend``, a counter this call created is extended at once: it starts
        exhausted, so every caller's retry would answer EXTEND anyway, and doing it here
        saves all of them one script call each.
        """
        self.rebuilds += 1
        doc = await self._marks().find_one({"_id": conv})
        seq, ev = (0, 0) if doc is None else (int(doc["seq"]), int(doc["ev"]))
        epoch = secrets.token_hex(8)
        created = await self._init(keys=[self.counter_key(conv)], args=[seq, ev, epoch])
        if extend and created == 1:
            await self._extend(conv, seq, ev, seq, ev, epoch)
        return doc is not None

    async def _extend(self, conv: str, seq: int, ev: int, hwm_seq: int, hwm_ev: int,
                      epoch: str) -> None:
        """Raise the marks durably in MongoDB, then in Redis (see the module docstring)."""
        self.extends += 1
        key = self.counter_key(conv)
        marks = self._marks()
        # Usually ``block``. A burst larger than a block (more callers already waiting here
        # for this refill) gets a step its size, so one write serves all of them instead of
        # one write per block's worth of callers, each retrying behind the others.
        step = max(self.block, self._waiting.get(conv, 0))
        new = {"seq": seq + 1 + step, "ev": ev + 1 + step}
        cas = {"_id": conv, "$or": [{"epoch": epoch}, {"seq": hwm_seq, "ev": hwm_ev}]}
        doc: dict[str, Any] | None = None
        if hwm_seq == hwm_ev == 0:
            # No marks were found at the rebuild: most likely a new conversation, so insert
            # rather than upsert (FerretDB 1.24 takes ~46 ms for an upsert whose $or filter
            # matches nothing, against ~4 ms for an insert). A duplicate means the document
            # exists after all (a racing first EXTEND, or stale marks): compare-and-set.
            try:
                await marks.insert_one({"_id": conv, **new, "epoch": epoch})
                doc = new
            except DuplicateKeyError:
                pass
        if doc is None:
            doc = await marks.find_one_and_update(
                cas, {"$set": {"epoch": epoch}, "$max": new},
                return_document=ReturnDocument.AFTER)
        if doc is None:  # refused: this counter was initialised from stale marks
            await self._drop_stale(keys=[key], args=[epoch])
            return
        await self._set_hwm(keys=[key], args=[epoch, int(doc["seq"]), int(doc["ev"])])

    def _marks(self) -> AsyncCollection[dict[str, Any]]:
        if self._hwm is None:
            self._mongo = AsyncMongoClient(self._mongodb_url)
            db = (self._mongo.get_database(self._database) if self._database
                  else self._mongo.get_default_database("chatcluster"))
            # Majority and journaled: a mark must survive a MongoDB failover or crash, or
            # numbers below it could be handed out twice.
            self._hwm = db.get_collection(
                self._collection, write_concern=WriteConcern(w="majority", j=True))
        return self._hwm
