"""``chatcluster`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from chatcluster import __version__
from chatcluster.cli.wiring import BackendUrls, ConfigError


def _backend_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", default="chatcluster-state",
                   help="directory of the embedded backends' data and the cluster's "
                        "credentials (default: ./chatcluster-state)")
    p.add_argument("--store", default=None, help="store URL (env CHAT_STORE_URL; default: "
                   "embedded)")
    p.add_argument("--bus", default=None, help="bus URL (env CHAT_BUS_URL; default: embedded)")
    p.add_argument("--cache", default=None, help="cache/fan-out URL (env CHAT_CACHE_URL; "
                   "default: embedded)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on "
                   "(default: 127.0.0.1)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def _service_flags(p: argparse.ArgumentParser) -> None:
    _backend_flags(p)
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--url-file", type=Path, default=None,
                   help="write the URL this service listens on to this file once it does")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="chatcluster", description="Multi-tenant real-time chat backend.")
    root.add_argument("--version", action="version", version=f"chatcluster {__version__}")
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run a whole cluster on this machine",
                        description="Start the gateway, the socket replicas and the consumers "
                                    "on loopback; print where they are; stop on Ctrl-C.")
    _backend_flags(up)
    up.add_argument("--json", action="store_true",
                    help="print one JSON 'ready' line on stdout instead of a summary")
    up.add_argument("--socket-replicas", type=int, default=2, metavar="N",
                    help="number of socket replicas (default: 2)")
    up.add_argument("--port", type=int, default=None,
                    help="gateway port; socket replicas take the next N ports, the consumers' "
                         "probe port the one after (default: free ports)")

    gateway = sub.add_parser("gateway", help="run the HTTP gateway",
                             description="Serve the gateway routes (PROTOCOL.md §1).")
    _service_flags(gateway)

    sock = sub.add_parser("socket", help="run one socket replica",
                          description="Serve the socket protocol (PROTOCOL.md §2).")
    _service_flags(sock)
    sock.add_argument("--replica-id", required=True, help="stable name of this replica")
    sock.add_argument("--public-url", default=None,
                      help="URL clients reach this replica at (default: ws://HOST:PORT)")
    sock.add_argument("--frame-rate", type=float, default=200.0,
                      help="frames per second refilled per connection (default: 200)")
    sock.add_argument("--frame-burst", type=int, default=200,
                      help="frames a connection may send at once (default: 200)")
    sock.add_argument("--max-in-flight", type=int, default=50,
                      help="requests a connection may keep unanswered (default: 50)")
    sock.add_argument("--max-replica-in-flight", type=int, default=2000,
                      help="requests this replica serves at once before it answers "
                           "rate_limited to shed load (default: 2000)")

    consumers = sub.add_parser("consumers", help="run the event pipeline's consumers",
                               description="Persist messages and conversations; turn receipts "
                                           "into read marks and receipt events.")
    _service_flags(consumers)

    op = sub.add_parser("operator", help="run the Kubernetes operator (ChatCluster resources)",
                        description="Reconcile ChatCluster resources against the current "
                                    "KUBECONFIG (or the pod's service account); see "
                                    "docs/operator.md.")
    scope = op.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], metavar="NS",
                       help="watch only this namespace (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true",
                       help="watch every namespace (the default)")
    op.add_argument("--liveness", type=int, default=None, metavar="PORT",
                    help="serve GET /healthz on this port")
    op.add_argument("--identity", default=None,
                    help="this instance's name in the leader Lease (default: HOST-PID)")
    op.add_argument("--lease-name", default="chatcluster-operator",
                    help="name of the coordination.k8s.io Lease that elects the one acting "
                         "instance (default: chatcluster-operator)")
    op.add_argument("--lease-namespace", default=None,
                    help="namespace of that Lease (default: $POD_NAMESPACE, else the "
                         "kubeconfig's namespace)")
    op.add_argument("--workers", type=int, default=8,
                    help="ChatClusters reconciled at once (default: 8)")
    op.add_argument("--resync", type=float, default=60.0, metavar="SECONDS",
                    help="reconcile every ChatCluster at least this often (default: 60)")
    op.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return root


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        sys.exit(_dispatch(args))
    except ConfigError as exc:
        print(f"chatcluster: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "up":
        from chatcluster.cli import up

        return up.run(args)
    if args.command == "operator":
        return _operator(args)
    from chatcluster.cli import services

    urls = BackendUrls.resolve(args.store, args.bus, args.cache)
    state_dir = Path(args.state_dir).resolve()
    if args.command == "gateway":
        asyncio.run(services.run_gateway(state_dir, urls, args.host, args.port, args.url_file,
                                         args.log_level))
    elif args.command == "socket":
        from chatcluster.socket.server import SocketSettings

        settings = SocketSettings(replica_id=args.replica_id, host=args.host, port=args.port,
                                  public_url=args.public_url, frame_rate=args.frame_rate,
                                  frame_burst=args.frame_burst, max_in_flight=args.max_in_flight,
                                  max_replica_in_flight=args.max_replica_in_flight)
        asyncio.run(services.run_socket(state_dir, urls, settings, args.log_level,
                                        args.url_file))
    elif args.command == "consumers":
        asyncio.run(services.run_consumers(state_dir, urls, args.host, args.port, args.url_file,
                                           args.log_level))
    return 0


def _operator(args: argparse.Namespace) -> int:
    try:
        from chatcluster_operator.runner import OperatorOptions
        from chatcluster_operator.runner import main as run_operator
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ConfigError(f"the operator is not installed ({exc})") from exc
    opts = OperatorOptions(namespaces=args.namespace, liveness_port=args.liveness,
                           lease_name=args.lease_name, lease_namespace=args.lease_namespace,
                           workers=args.workers, resync_s=args.resync,
                           log_level=args.log_level)
    if args.identity:
        opts.identity = args.identity
    return run_operator(opts)
