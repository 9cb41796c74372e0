"""Ports: the interfaces between the services and their backends, with their guarantees.

Each port is a ``typing.Protocol``; each backend implements it in ``chatcluster.adapters.<backend>``
and one contract suite (``tests/contract``) runs against every implementation.

    Sequencer  atomic per-conversation counters and client_msg_id reservations (before "ok")
    Bus        durable, per-key ordered event log with consumer groups (the pipeline's topics)
    Fanout     best-effort broadcast of ready-to-send frames to every socket replica
    Store      durable state: tenants, users, sessions, conversations, messages, sync log
    Registry   live socket replicas and who is online
"""
