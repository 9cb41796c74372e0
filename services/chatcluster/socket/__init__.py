"""The socket service: one replica of the messaging protocol over WebSocket.

    server.py      websockets listener: handshake auth, plain-HTTP probes and metrics on the
                   same port, the read loop (limits, rate limit, dispatch), heartbeat, draining
    connection.py  one client connection: identity, token bucket, in-flight bound, send path
    operations.py  every op of PROTOCOL.md §2, as domain rules + ports
    delivery.py    local fan-out: who is connected here, event_seq order per conversation,
                   the bounded send queue (slow readers are closed with 1013)
    presence.py    online/offline events and typing timers

A replica keeps no state that another replica needs: counters live in the Sequencer, events
in the Bus and Store, frames for other replicas go through the Fanout.
"""
