"""chatcluster: a multi-tenant real-time chat backend.

Module map (imports point downwards only; ``lint-imports`` enforces it)::

    cli/          chatcluster up | gateway | socket | consumers   (wires adapters into services)
      |
    gateway/      FastAPI: SDK tokens, refresh, logout, admin apps, health, metrics
    socket/       websockets replicas: the whole messaging protocol over one socket
    pipeline/     bus consumers: persist messages and conversations, acknowledgements
    adapters/     embedded/ (SQLite, no server) ... one folder per backend
      |
    ports/        Store, Sequencer, Bus, Fanout, Registry: interfaces and their guarantees
    auth/         JWT access/refresh tokens (pure)
    observability JSON logs, Prometheus metrics
      |
    protocol/     typed wire frames: ops, events, limits, error codes
      |
    domain/       pure rules: tenants, conversations, messages, authorization

The request path of ``message.send``::

    client -> socket replica --(reserve seq, event_seq, client_msg_id)--> Sequencer
                             --(message.sent, keyed by conversation)----> Bus  (durable: then "ok")
                             --(message.new)------------------------------> Fanout -> every replica
    Bus -> pipeline consumers -> Store (messages, events for conversation.sync, activity)
"""

__version__ = "0.1.0"
