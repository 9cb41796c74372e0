"""The acknowledgement producer: receipts become delivery records, read marks and events."""

from __future__ import annotations

import msgspec

from chatcluster.ports import bus as topics
from chatcluster.ports.bus import Record
from chatcluster.ports.events import ReceiptSubmitted
from chatcluster.ports.fanout import Envelope, Fanout
from chatcluster.ports.store import PipelineBatch, ReceiptMark, Store
from chatcluster.protocol.frames import encode_event

GROUP = "acks"
TOPICS = (topics.MESSAGE_DELIVERED,)

_receipt = msgspec.msgpack.Decoder(ReceiptSubmitted)


async def process(store: Store, fanout: Fanout, records: list[Record], origin: str) -> int:
    """Write the marks; announce those that moved forward. Returns how many were announced.

    A replayed record finds its mark already there and announces nothing: no duplicate event.
    """
    submitted = [_receipt.decode(r.value) for r in records]
    marks = [ReceiptMark(s.conversation_id, s.user_id, s.kind, s.seq) for s in submitted]
    moved = set(await store.write_pipeline_batch(PipelineBatch(receipts=marks)))
    announced = 0
    for s, mark in zip(submitted, marks, strict=True):
        if mark not in moved:
            continue
        moved.discard(mark)
        frame = encode_event("receipt", {"conversation_id": s.conversation_id,
                                         "user_id": s.user_id, "seq": s.seq, "kind": s.kind})
        await fanout.publish(Envelope(kind="event", origin=origin, app_id=s.app_id,
                                      recipients=s.recipients, frame=frame, exclude=s.origin))
        announced += 1
    return announced
