"""Save-to-live latency: from a file write to the new code answering in every target.

Usage: python benchmarks/push_latency.py [--targets 1,50] [--rounds R] [--json-only]

Targets are worker processes that each serve ``GET /`` (stdlib HTTP server, 127.0.0.1) with
``latapp.core.answer()``, with the reloadctl agent embedded (unix socket, accept_push).
``latapp/core.py`` is an ordinary module of about 6 KB (a hundred small functions and the
answer). Each round writes the next version of ``core.py`` and measures, from just before
the write, until every target answers with the new version (each target polled over HTTP
until it does). Three ways to get there:

- ``watch``: the targets import ``latapp`` from the directory that ``reloadctl watch DIR``
  watches; each save is one reload fan-out to every target (``-H`` each socket).
- ``watch --push``: the targets import release 1 from their own directory; the edited
  file lives in another directory, watched by ``reloadctl watch --push``; each save ships
  the module's source to every target (the push size is printed).
- ``reload --push (CLI)``: no watcher; the benchmark runs ``reloadctl reload --push``
  right after each write (a fresh CLI process each time): the watcher's batching left out.
- ``uvicorn --reload``: the same module behind a bare ASGI app in ``uvicorn --reload``
  (one process, restarted on each save by its own watchfiles-based reloader), measured to
  the first successful request that shows the new version.

Both reloadctl modes are measured at every ``--targets`` count; uvicorn at 1 target (a
restart-based reloader serves one app). Printed: a table (the first save, which also pays
one-time costs such as the engine's import in every target, then median and max over R
more saves, per mode and target count) and one JSON line. The targets run on this machine; the
multi-host case (50 targets on 5 namespaced hosts at 20 ms RTT) needs tests/netbed.py and
is not measured here.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
RELOADCTL = shutil.which("reloadctl", path=str(BIN)) or "reloadctl"
UVICORN = shutil.which("uvicorn", path=str(BIN)) or "uvicorn"

WORKER = """
import http.server, os, sys, threading
sys.path.insert(0, sys.argv[1])
import reloadctl.agent
agent = reloadctl.agent.start(accept_push=True)
import latapp.core

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = str(latapp.core.answer()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], agent.address, flush=True)
server.serve_forever()
"""

ASGI = """
import latapp.core

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = str(latapp.core.answer()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""


def core_source(version: int) -> str:
    helpers = "\n".join(
        f"def helper_{i}(x):\n    return x * {i} + len('{'-' * 20}')\n" for i in range(100)
    )
    return f"{helpers}\n\nVERSION = {version}\n\n\ndef answer():\n    return VERSION\n"


def write_app(root: Path, version: int) -> None:
    (root / "latapp").mkdir(parents=True, exist_ok=True)
    (root / "latapp" / "__init__.py").write_text("")
    (root / "latapp" / "asgi.py").write_text(ASGI)
    (root / "latapp" / "core.py").write_text(core_source(version))


def get(port: int) -> str | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/")
        reply = conn.getresponse()
        body = reply.read().decode()
        return body if reply.status == 200 else None
    except OSError:
        return None
    finally:
        conn.close()


def wait_all(ports: Sequence[int], expected: str, timeout: float = 60.0) -> float:
    """Seconds until every port answers ``expected`` (polled), from the call."""
    start = time.perf_counter()
    pending = list(ports)
    while pending:
        pending = [p for p in pending if get(p) != expected]
        if not pending:
            break
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"{len(pending)} targets still not at version {expected}")
        time.sleep(0.001)
    return time.perf_counter() - start


@contextmanager
def workers(disk: Path, count: int, env: dict[str, str]) -> Iterator[list[tuple[int, str]]]:
    procs: list[subprocess.Popen[str]] = []
    try:
        for _ in range(count):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", WORKER, str(disk)],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            )
        found = []
        for p in procs:
            assert p.stdout is not None
            port, address = p.stdout.readline().split()
            found.append((int(port), address))
        yield found
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait(10)
            if p.stdout is not None:
                p.stdout.close()


@contextmanager
def background(argv: list[str], env: dict[str, str], ready: str) -> Iterator[None]:
    """A command whose stderr prints ``ready`` when it is up (read on a thread)."""
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if ready in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not seen.wait(30):
            raise RuntimeError(f"{argv[0]} did not start: {''.join(lines)[-2000:]}")
        time.sleep(0.5)  # the native watcher registers its watches after that line
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        reader.join(5)
        if proc.stderr is not None:
            proc.stderr.close()


def rounds(edit_dir: Path, ports: Sequence[int], first: int, count: int) -> list[float]:
    """Write versions first, first+1, ... and time each until every port serves it."""
    out = []
    for version in range(first, first + count):
        path = edit_dir / "latapp" / "core.py"
        t0 = time.perf_counter()
        path.write_text(core_source(version))
        out.append(time.perf_counter() - t0 + wait_all(ports, str(version)))
        time.sleep(0.3)  # let the watcher settle before the next save
    return out


def measure_reloadctl(tmp: Path, n: int, r: int, push: bool, env: dict[str, str]) -> list[float]:
    base = tmp / f"{'push' if push else 'watch'}-{n}"
    disk, client = base / "disk", base / "client"
    write_app(disk, 1)
    write_app(client, 1)
    with workers(disk, n, env) as found:
        ports = [port for port, _ in found]
        wait_all(ports, "1")
        hosts = [arg for _, address in found for arg in ("-H", address)]
        watched = client if push else disk
        argv = [RELOADCTL, "watch", *(["--push"] if push else []), str(watched), *hosts]
        with background(argv, env, "watching"):
            # the first save also pays one-time costs in every target (the engine's import,
            # its first sight of the module) and in the watcher (rpyc's import): reported
            # on its own, the rounds measure the steady state
            first = rounds(watched, ports, 2, 1)
            return first + rounds(watched, ports, 3, r)


def measure_cli_push(tmp: Path, n: int, r: int, env: dict[str, str]) -> list[float]:
    """``reloadctl reload --push`` run right after each write (no watcher): the floor of
    a push without the watcher's batching, a fresh CLI process each time included."""
    base = tmp / f"cli-{n}"
    disk, client = base / "disk", base / "client"
    write_app(disk, 1)
    write_app(client, 1)
    with workers(disk, n, env) as found:
        ports = [port for port, _ in found]
        wait_all(ports, "1")
        hosts = [arg for _, address in found for arg in ("-H", address)]
        out = []
        for version in range(2, 3 + r):
            t0 = time.perf_counter()
            (client / "latapp" / "core.py").write_text(core_source(version))
            argv = [RELOADCTL, "reload", "--push", "--root", str(client), *hosts, "latapp.core"]
            subprocess.run(argv, env=env, capture_output=True, check=True, timeout=60)
            out.append(time.perf_counter() - t0 + wait_all(ports, str(version)))
        return out


def measure_uvicorn(tmp: Path, r: int, env: dict[str, str]) -> list[float]:
    app = tmp / "uvicorn"
    write_app(app, 1)
    with socketless_port() as port:
        argv = [UVICORN, "latapp.asgi:app", "--reload", "--port", str(port)]
        argv += ["--app-dir", str(app), "--reload-dir", str(app), "--log-level", "warning"]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_all([port], "1", timeout=30)
            time.sleep(0.5)
            return rounds(app, [port], 2, r)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@contextmanager
def socketless_port() -> Iterator[int]:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    yield port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="1,50", help="comma-separated target counts")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    counts = [int(x) for x in args.targets.split(",")]
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="rc-pushlat-", dir="/tmp") as name:
        tmp = Path(name)
        env = {
            **os.environ,
            "XDG_RUNTIME_DIR": str(tmp / "run"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        (tmp / "run").mkdir()
        for n in counts:
            for push in (False, True):
                mode = "watch --push" if push else "watch"
                results.setdefault(mode, {})[str(n)] = measure_reloadctl(
                    tmp, n, args.rounds, push, env
                )
            results.setdefault("reload --push (CLI)", {})[str(n)] = measure_cli_push(
                tmp, n, args.rounds, env
            )
        results["uvicorn --reload"] = {"1": [0.0, *measure_uvicorn(tmp, args.rounds, env)]}
    push_bytes = len(core_source(2).encode())
    summary: dict[str, Any] = {
        "benchmark": "push_latency",
        "rounds": args.rounds,
        "push_bytes": push_bytes,
        "python": "{}.{}.{}".format(*sys.version_info[:3]),
        "cpus": os.cpu_count(),
        "ms": {
            mode: {
                n: {
                    "first": round(v[0] * 1000, 1) if v[0] else None,
                    "median": round(statistics.median(v[1:]) * 1000, 1),
                    "max": round(max(v[1:]) * 1000, 1),
                    "all": [round(x * 1000, 1) for x in v[1:]],
                }
                for n, v in by_n.items()
            }
            for mode, by_n in results.items()
        },
    }
    if not args.json_only:
        print(f"save-to-live latency, ms (first save; median / max of {args.rounds} more)")
        print(f"push size: {push_bytes} bytes (latapp/core.py)")
        print(f"{'mode':<22}{'targets':>8}{'first':>10}{'median':>10}{'max':>10}")
        for mode, by_n in summary["ms"].items():
            for n, f in by_n.items():
                first = "-" if f["first"] is None else f["first"]
                print(f"{mode:<22}{n:>8}{first:>10}{f['median']:>10}{f['max']:>10}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
