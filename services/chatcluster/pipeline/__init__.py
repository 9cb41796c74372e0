"""The event pipeline's consumers (the seed design's "Kafka consumers").

    persistence.py  group "persist": message.sent/edited/deleted + conversation.updated ->
                    messages, the conversation.sync log, conversation activity (Store)
    acks.py         group "acks": message.delivered -> delivery records and read marks,
                    and the ``receipt`` events that tell the other members

Both are at-least-once (offsets are committed only after the Store write returned) over
idempotent writes, so a crash at any point loses nothing and duplicates nothing.
"""
