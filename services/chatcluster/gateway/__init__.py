"""The HTTP gateway (FastAPI): credentials in, tokens and live socket URLs out.

    app.py   the routes of PROTOCOL.md §1, error shapes, health, readiness, metrics, OpenAPI

It carries no messages: every messaging operation is on the socket replicas.
"""
