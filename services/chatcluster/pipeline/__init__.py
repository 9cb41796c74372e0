"""The event pipeline's consumers (the seed design's "Kafka consumers").

    persistence.py  group "persist": message.sent/edited/deleted + conversation.updated ->
                    messages, the conversation.sync log, conversation activity (Store)
    acks.py         group "acks": message.delivered -> delivery records and read marks,
                    and the ``receipt`` events that tell the other members
    webhooks.py     group "webhooks": message.* + conversation.updated -> the durable outbox;
                    its Dispatcher signs and sends deliveries, retries, dead-letters
                    (outbound.py: signing, retry schedule, SSRF guard, no redirects)
    usage.py        group "usage": message.sent -> messages and active users per app and
                    day; a sampler records peak connections from the Registry

All are at-least-once (offsets are committed only after the Store write returned) over
idempotent writes, so a crash at any point loses nothing and duplicates nothing.
"""
