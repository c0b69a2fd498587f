"""RPC overhead of one reload: over a warm connection (unix, loopback TCP) vs in-process.

Usage: python benchmarks/rpc_overhead.py [--iterations N] [--json-only]

What is measured (medians over N calls after a warm-up, all in one run):

- ``in-process``: ``reloadctl.agent.reload_modules([m])`` called directly (the baseline the
  RPC adds to); ``m`` is a small unchanged module, so the engine answers "unchanged".
- ``rpc unix`` / ``rpc tcp``: the same reload asked of an agent in another process over an
  existing authenticated connection: one sealed ``submit`` plus the ``poll`` calls until the
  job is done (what ``reloadctl reload`` costs per target once connected).
- ``execute unix`` / ``execute tcp``: ``connection.execute`` (fresh connection, handshake,
  reload, close), what one CLI invocation pays per target.
- ``rpyc ping``: a bare rpyc round trip on the same connection (the transport floor).

The agent process runs the in-process figure too, so both sides of the comparison run the
same engine on the same module; "overhead" = rpc - in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from reloadctl.client.connection import execute
from reloadctl.proto import auth, codec
from reloadctl.proto.messages import JobAccepted, JobEvents, PollRequest, ReloadRequest
from reloadctl.secrets import Secret

SECRET = b"benchmark-secret"
MODULE_SOURCE = textwrap.dedent(
    """
    import functools

    class Greeter:
        def __init__(self, name):
            self.name = name

        def greet(self):
            return f"hello {self.name}"

    def add(a, b):
        return a + b

    @functools.lru_cache(maxsize=None)
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    CONSTANT = 42
    """
)

AGENT = textwrap.dedent(
    """
    import json, statistics, sys, time
    sys.path.insert(0, sys.argv[1])
    import rc_bench_mod
    import reloadctl.agent
    n = int(sys.argv[3])
    for _ in range(20):
        reloadctl.agent.reload_modules(["rc_bench_mod"])
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        reloadctl.agent.reload_modules(["rc_bench_mod"])
        samples.append(time.perf_counter() - t)
    status = reloadctl.agent.reload_modules(["rc_bench_mod"])[0].status
    agent = reloadctl.agent.start(sys.argv[2], secret=sys.argv[4])
    print(json.dumps({"address": agent.address, "in_process": samples, "status": status}),
          flush=True)
    sys.stdin.read()
    """
)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return out


class WarmClient:
    """One authenticated connection kept open (what a long-lived client would hold)."""

    def __init__(self, address: str) -> None:
        from rpyc.core.channel import Channel
        from rpyc.core.stream import SocketStream
        from rpyc.utils.factory import connect_channel

        if address.startswith("unix://"):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(address[len("unix://") :])
        else:
            host, port = address[len("tcp://") :].rsplit(":", 1)
            self.sock = socket.create_connection((host, int(port)))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = auth.ClientHandshake(SECRET, require_mac=not address.startswith("unix"))
        self.sock.sendall(client.answer(auth.read_frame(lambda n: _recv_exact(self.sock, n))))
        self.session = client.finish(auth.read_frame(lambda n: _recv_exact(self.sock, n)))
        self.conn = connect_channel(
            Channel(SocketStream(self.sock), compress=False), config={"allow_pickle": False}
        )
        root = self.conn.root
        self.submit, self.poll = root.submit, root.poll

    def _call(self, method: Any, request: Any) -> Any:
        raw = method(self.session.seal(codec.encode(request)))
        return codec.decode_reply(self.session.unseal(raw))

    def reload(self, module: str) -> str:
        accepted = self._call(self.submit, ReloadRequest((module,)))
        assert isinstance(accepted, JobAccepted), accepted
        cursor, statuses = 0, []
        while True:
            events = self._call(self.poll, PollRequest(accepted.job, cursor, 5.0))
            assert isinstance(events, JobEvents), events
            statuses += [r.status for r in events.results]
            cursor = events.cursor
            if events.done:
                return statuses[0]

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()
        self.sock.close()


def _time(fn: Any, n: int, warmup: int = 30) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return samples


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 4),
        "p90_ms": round(ordered[int(len(ordered) * 0.9) - 1] * 1000, 4),
        "n": len(ordered),
    }


def _agent(tmp: Path, listen: str, n: int) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp)}
    proc = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(tmp), listen, str(n), SECRET.decode()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    if not ready:
        proc.kill()
        raise SystemExit("agent did not start")
    return proc, json.loads(proc.stdout.readline())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    n = args.iterations
    results: dict[str, Any] = {"python": sys.version.split()[0], "iterations": n}
    with tempfile.TemporaryDirectory(prefix="rcb-", dir="/tmp") as d:
        tmp = Path(d)
        (tmp / "rc_bench_mod.py").write_text(MODULE_SOURCE)
        rows: dict[str, dict[str, float]] = {}
        for label, listen in (("unix", f"unix://{tmp}/bench.sock"), ("tcp", "tcp://127.0.0.1:0")):
            proc, hello = _agent(tmp, listen, n)
            try:
                if "in-process reload_modules" not in rows:
                    rows["in-process reload_modules"] = _ms(hello["in_process"])
                    results["engine_status"] = hello["status"]
                client = WarmClient(hello["address"])
                try:
                    rows[f"rpyc ping ({label})"] = _ms(
                        _time(lambda c=client: c.conn.ping(b"x", timeout=5), n)
                    )
                    rows[f"rpc reload, warm connection ({label})"] = _ms(
                        _time(lambda c=client: c.reload("rc_bench_mod"), n)
                    )
                finally:
                    client.close()
                secret = Secret(SECRET)
                rows[f"execute(): connect+auth+reload+close ({label})"] = _ms(
                    _time(
                        lambda a=hello["address"], s=secret: execute(
                            a,
                            ReloadRequest(("rc_bench_mod",)),
                            secret=s,
                            connect_timeout=2,
                            timeout=10,
                        ),
                        max(50, n // 3),
                        warmup=5,
                    )
                )
            finally:
                proc.communicate(b"", timeout=20)
        base = rows["in-process reload_modules"]["median_ms"]
        for label in ("unix", "tcp"):
            rpc = rows[f"rpc reload, warm connection ({label})"]["median_ms"]
            results[f"overhead_ms_{label}"] = round(rpc - base, 4)
        results["rows"] = rows
    if not args.json_only:
        width = max(len(k) for k in rows)
        print(f"{'measurement':<{width}}  {'median ms':>10}  {'p90 ms':>9}  {'n':>5}")
        for name, row in rows.items():
            print(
                f"{name:<{width}}  {row['median_ms']:>10.3f}  {row['p90_ms']:>9.3f}  {row['n']:>5}"
            )
        print(
            f"RPC overhead over in-process (median): unix {results['overhead_ms_unix']:.3f} ms, "
            f"tcp {results['overhead_ms_tcp']:.3f} ms (target < 1 ms)"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
