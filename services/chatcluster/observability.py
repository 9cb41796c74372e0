"""Structured JSON logs on stderr, and Prometheus metrics shared by every service."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("websockets", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class SocketMetrics:
    """The socket replica's metrics (PROTOCOL.md §2: connections, frames, drops, latencies)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("chat_socket_connections", "Open client connections",
                                 registry=r)
        self.frames_in = Counter("chat_socket_frames_in", "Frames received", registry=r)
        self.frames_out = Counter("chat_socket_frames_out", "Frames sent (responses, events)",
                                  registry=r)
        self.errors = Counter("chat_socket_errors", "Error responses by code", ["code"],
                              registry=r)
        self.slow_disconnects = Counter(
            "chat_socket_send_queue_drops",
            "Connections closed (1013) because their send queue passed its bound", registry=r)
        self.out_of_order_drops = Counter(
            "chat_socket_out_of_order_drops",
            "Events dropped because a later event_seq of their conversation was delivered",
            registry=r)
        self.op_latency = Histogram(
            "chat_socket_op_seconds", "Time from frame received to response sent", ["op"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r)


class PipelineMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records = Counter("chat_pipeline_records", "Bus records processed", ["group"],
                               registry=r)
        self.batches = Counter("chat_pipeline_batches", "Batches written", ["group"], registry=r)
        self.lag = Gauge("chat_pipeline_lag", "Records published but not committed", ["group"],
                         registry=r)
        self.failures = Counter("chat_pipeline_failures", "Batches that failed and were retried",
                                ["group"], registry=r)


async def serve_probes(host: str, port: int, ready: Any, registry: CollectorRegistry) -> Any:
    """A minimal HTTP listener for processes without a web framework (the consumers):
    ``GET /healthz``, ``GET /readyz`` (``await ready()`` must be true) and ``GET /metrics``."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            if path == "/healthz":
                status, body = "200 OK", b"ok\n"
            elif path == "/readyz":
                ok = await ready()
                status, body = ("200 OK", b"ready\n") if ok else ("503 Unavailable", b"no\n")
            elif path == "/metrics":
                status, ctype = "200 OK", "text/plain; version=0.0.4"
                body = generate_latest(registry)
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: "
                         f"{len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
