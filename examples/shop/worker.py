"""A sample shop worker: a tiny HTTP server on loopback with the reloadctl agent embedded.

Run it as ``python examples/shop/worker.py [--port N] [--agent-listen ADDR]``. It serves
``GET /`` with one line computed by ``pricing.describe()``, so a reload of ``pricing`` is
visible on the next request. Once ready it prints one JSON line on stdout:
``{"pid": ..., "url": "http://127.0.0.1:PORT/", "agent": "<agent address>"}``.

The embedding is the one call to ``reloadctl.agent.start()`` in ``main``; the agent reads
``RELOADCTL_SECRET_FILE``/``RELOADCTL_SECRET`` itself (a TCP listen address needs one).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

# The name is bound once, here, the way application code usually does it: a reload of
# `pricing` must still reach this caller (the engine patches `describe` in place).
from pricing import describe

import reloadctl.agent


class ShopHandler(BaseHTTPRequestHandler):
    """``GET /`` answers ``pid <pid> | <pricing.describe()>``; anything else is a 404."""

    def do_GET(self) -> None:
        if self.path != "/":
            self.send_error(404)
            return
        body = f"pid {os.getpid()} | {describe()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Keep request logging quiet: the demo and tests read stdout."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    """Start the agent, serve HTTP on 127.0.0.1 until SIGTERM/SIGINT, stop the agent."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address")
    parser.add_argument("--port", type=int, default=0, help="HTTP port (0: any free port)")
    parser.add_argument(
        "--agent-listen",
        metavar="ADDR",
        help="agent address (default: $RELOADCTL_AGENT_LISTEN, else a private unix socket)",
    )
    args = parser.parse_args(argv)

    agent = reloadctl.agent.start(args.agent_listen)
    server = ThreadingHTTPServer((args.host, args.port), ShopHandler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, _stop)
    port = server.server_address[1]
    ready = {"pid": os.getpid(), "url": f"http://{args.host}:{port}/", "agent": agent.address}
    # A program, not library code: its ready line is its output.
    print(json.dumps(ready), flush=True)  # noqa: T201
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
