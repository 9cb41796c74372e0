#!/usr/bin/env python3
"""Baseline for the chatcluster benchmark: a bare `websockets` relay.

It accepts the same connections and frames as a chatcluster socket replica,
with no logic beyond what the load generator needs, so that it measures the
transport's ceiling on this machine (Python + websockets, one process):

* authentication: none. The user is the Bearer token itself
  (``Authorization: Bearer <user>``), or the ``user`` (or ``access_token``)
  query parameter. A connection naming no user is refused with HTTP 401.
* the first frame is ``{"event": "ready", "data": {...}}``, like a replica's.
* ``conversation.create`` records the members (the caller plus ``members``)
  and answers ``{"conversation": {...}}`` with a new id.
* ``message.send`` builds a message object shaped like chatcluster's, answers
  the sender ``{"id", "ok": true, "data": {"message"}}`` and sends one
  ``message.new`` event frame (serialized once) to every connection of the
  other members, with ``websockets.asyncio.server.broadcast``.
* ``ping`` answers ``{"server_time"}``; any other op answers ``bad_request``.
* ``GET /healthz`` answers 200.

Nothing is stored beyond the membership map, nothing is rate-limited, nothing
is persisted: the ratio "chatcluster / relay" is the share of the transport's
ceiling that the real system reaches with its durability, ordering, auth and
multi-replica fan-out.

On start it prints one JSON line on stdout:
``{"event": "ready", "socket_urls": ["ws://127.0.0.1:PORT/"], "pid", ...}``.
It stops on SIGINT/SIGTERM, and by itself after ``--max-seconds``.

Requires websockets >= 14 (the new asyncio API).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import http
import inspect
import itertools
import json
import os
import signal
import sys
import urllib.parse

import websockets
from websockets.asyncio.server import ServerConnection, broadcast, serve

# JSON codec: set by configure_json(). msgspec when importable (chatcluster's
# own codec), else the standard library.
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_loads = json.loads
_codec = "json"
_send_kw: dict = {}


def configure_json(choice: str) -> None:
    global _dumps, _loads, _codec, _send_kw  # noqa: PLW0603
    if choice == "json":
        return
    try:
        import msgspec  # type: ignore
    except ImportError:
        if choice == "msgspec":
            raise SystemExit("baseline_relay: msgspec is not installed") from None
        return
    enc = msgspec.json.Encoder()
    if "text" in inspect.signature(broadcast).parameters:
        # send the encoded bytes as text frames, no decode/encode round trip
        _dumps, _send_kw = enc.encode, {"text": True}
    else:
        _dumps = lambda obj: enc.encode(obj).decode()  # noqa: E731
    _loads, _codec = msgspec.json.decode, "msgspec"


async def _send(ws: ServerConnection, obj) -> None:
    await ws.send(_dumps(obj), **_send_kw)


def _now() -> str:
    return (
        datetime.datetime.now(datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _user_of(request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer " and auth[7:].strip():
        return auth[7:].strip()
    query = urllib.parse.urlsplit(request.path).query
    params = urllib.parse.parse_qs(query)
    for key in ("user", "access_token"):
        if params.get(key):
            return params[key][0]
    return None


class Relay:
    def __init__(self) -> None:
        self.conns: dict[str, set[ServerConnection]] = {}
        self.convs: dict[str, dict] = {}
        self.conv_ids = itertools.count(1)
        self.msg_ids = itertools.count(1)
        self.sessions = itertools.count(1)

    def process_request(self, connection: ServerConnection, request):
        path = urllib.parse.urlsplit(request.path).path
        if path in ("/healthz", "/readyz"):
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        if _user_of(request) is None:
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "no user\n")
        return None

    async def handler(self, ws: ServerConnection) -> None:
        user = _user_of(ws.request)
        mine = self.conns.setdefault(user, set())
        mine.add(ws)
        try:
            await _send(
                ws,
                {
                    "event": "ready",
                    "data": {
                        "user_id": user,
                        "session_id": f"s{next(self.sessions)}",
                        "replica": "baseline-relay",
                        "server_time": _now(),
                    },
                },
            )
            async for raw in ws:
                await self.on_frame(ws, user, raw)
        except websockets.ConnectionClosed:
            pass
        finally:
            mine.discard(ws)
            if not mine:
                self.conns.pop(user, None)

    async def on_frame(self, ws: ServerConnection, user: str, raw) -> None:
        try:
            req = _loads(raw)
            rid, op, data = req.get("id"), req.get("op"), req.get("data") or {}
        except Exception:  # msgspec.DecodeError is a ValueError; non-dict frames: AttributeError
            await _send(
                ws,
                {
                    "id": None,
                    "ok": False,
                    "error": {"code": "bad_request", "message": "malformed frame"},
                },
            )
            return
        if op == "message.send":
            conv = self.convs.get(data.get("conversation_id"))
            if conv is None or user not in conv["members"]:
                await _send(
                    ws,
                    {
                        "id": rid,
                        "ok": False,
                        "error": {"code": "not_found", "message": "no such conversation"},
                    },
                )
                return
            conv["seq"] += 1
            seq = conv["seq"]
            msg = {
                "id": f"m{next(self.msg_ids)}",
                "conversation_id": conv["id"],
                "seq": seq,
                "sender_id": user,
                "text": data.get("text", ""),
                "client_msg_id": data.get("client_msg_id"),
                "created_at": _now(),
                "edited_at": None,
                "deleted": False,
                "reactions": {},
                "reply_to": data.get("reply_to"),
                "forwarded_from": None,
                "attachments": [],
            }
            await _send(ws, {"id": rid, "ok": True, "data": {"message": msg}})
            event = _dumps({"event": "message.new", "event_seq": seq, "data": {"message": msg}})
            targets = [c for m in conv["members"] for c in self.conns.get(m, ()) if c is not ws]
            broadcast(targets, event, **_send_kw)
        elif op == "conversation.create":
            members = [user] + [
                m for m in data.get("members") or [] if isinstance(m, str) and m != user
            ]
            cid = f"c{next(self.conv_ids)}"
            conv = {
                "id": cid,
                "type": data.get("type", "group"),
                "title": data.get("title"),
                "members": list(dict.fromkeys(members)),
                "owner": user,
                "seq": 0,
            }
            self.convs[cid] = conv
            out = {
                "id": cid,
                "type": conv["type"],
                "title": conv["title"],
                "members": conv["members"],
                "owner": user,
                "admins": [],
                "created_at": _now(),
                "last_seq": 0,
                "last_event_seq": 0,
            }
            await _send(ws, {"id": rid, "ok": True, "data": {"conversation": out}})
        elif op == "ping":
            await _send(ws, {"id": rid, "ok": True, "data": {"server_time": _now()}})
        else:
            await _send(
                ws,
                {
                    "id": rid,
                    "ok": False,
                    "error": {"code": "bad_request", "message": f"unknown op {op!r}"},
                },
            )


async def amain(args) -> None:
    relay = Relay()
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(
            sig, lambda: stop.done() or stop.set_result(None)
        )
    async with serve(
        relay.handler,
        args.host,
        args.port,
        compression=None,
        max_size=2**20,
        process_request=relay.process_request,
        backlog=4096,
    ) as server:
        ports = sorted({s.getsockname()[1] for s in server.sockets})
        print(
            json.dumps(
                {
                    "event": "ready",
                    "socket_urls": [f"ws://{args.host}:{p}/" for p in ports],
                    "pid": os.getpid(),
                    "websockets": websockets.__version__,
                    "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
                    "json": _codec,
                    "python": sys.version.split()[0],
                }
            ),
            flush=True,
        )
        try:
            await asyncio.wait_for(stop, timeout=args.max_seconds)
        except TimeoutError:
            print("baseline_relay: --max-seconds reached, stopping", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--host", default="127.0.0.1", help="listen address (loopback; default %(default)s)"
    )
    ap.add_argument(
        "--port", type=int, default=0, help="listen port (0 = a free port; default %(default)s)"
    )
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=3600,
        help="stop by itself after this long (default %(default)s)",
    )
    ap.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop: auto = uvloop when importable (default %(default)s)",
    )
    ap.add_argument(
        "--json",
        choices=("auto", "json", "msgspec"),
        default="auto",
        help="JSON codec: auto = msgspec when importable, like chatcluster (default %(default)s)",
    )
    args = ap.parse_args()
    configure_json(args.json)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.host.startswith("127."):
        ap.error("this benchmark relay only listens on loopback")
    loop_factory = None
    if args.loop != "asyncio":
        try:
            import uvloop  # type: ignore

            loop_factory = uvloop.new_event_loop
        except ImportError:
            if args.loop == "uvloop":
                ap.error("uvloop is not installed")
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(amain(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
