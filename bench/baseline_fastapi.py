#!/usr/bin/env python3
"""Baseline for the token-route benchmark: a bare FastAPI route that returns a constant.

Served exactly as the gateway is (``chatcluster.cli.services.run_gateway``): one uvicorn
server on one pre-bound socket, no access log, no lifespan. ``POST /const`` reads its JSON
body into a Pydantic model shaped like the token request and answers a constant of the token
response's size, so the difference to the real route is the route's own work (credentials,
quotas, session, JWTs).

Prints ``{"event": "ready", "url": "http://127.0.0.1:PORT"}`` on stdout once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field

CONSTANT = {"access_token": "x" * 300, "refresh_token": "y" * 300, "token_type": "Bearer",
            "expires_in": 900, "user": {"id": "u_" + "0" * 24, "external_id": "bench"},
            "socket_urls": ["ws://127.0.0.1:1", "ws://127.0.0.1:2"],
            "socket_connection_guide": "z" * 300}


class Body(BaseModel):
    app_id: str = Field(min_length=1, max_length=128)
    app_secret: str = Field(min_length=1, max_length=256)
    user_external_id: str = Field(min_length=1, max_length=128)
    display_name: str | None = Field(default=None, max_length=200)


def app() -> FastAPI:
    api = FastAPI(title="baseline")

    @api.post("/const")
    async def const(body: Body) -> dict[str, object]:
        return CONSTANT

    return api


async def serve(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(app(), log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    print(json.dumps({"event": "ready", "url": f"http://127.0.0.1:{sock.getsockname()[1]}"}),
          flush=True)
    await server.serve(sockets=[sock])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    asyncio.run(serve(p.parse_args().port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
