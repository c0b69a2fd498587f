"""What repeated reloads cost a worker that is serving: request latency with and without.

Usage: python benchmarks/serving_impact.py [--requests N] [--clients C] [--interval S]
                                           [--rounds R] [--json-only]

A worker process (stdlib ``ThreadingHTTPServer``, keep-alive) serves ``GET /n`` by calling
``app.handle(n)``, where ``app`` is an ordinary module with a class, a cache and a few
functions; the reloadctl agent runs in the worker on a unix socket. C client threads in
this process send N requests in total on keep-alive connections, as fast as answers come
(a closed loop), and record each latency. Every reply names the version of ``app`` that
served it and must be a complete, correct answer; anything else (an error status, a
broken connection, a wrong sum, a version that mixes code of two versions) is a failed
request.

Phases, alternated R times in one run (so that machine noise hits both alike):

- ``baseline``: no reloads.
- ``reloading``: meanwhile another process (this script with ``--reloader``, so that its
  CPU does not stall the load generator's threads) rewrites ``app.py`` between two
  versions and reloads it through the agent (``connection.execute``, a fresh connection
  each time, as the CLI does) every S seconds; every reload must report ``reloaded``.

Printed: p50/p90/p99/max latency per phase, the p99 ratio, failed requests, reloads done
and their duration. Target: zero failed requests, p99 during reloads <= 2x baseline.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from reloadctl.client.connection import execute
from reloadctl.proto.messages import ReloadRequest

APP = """
import functools

VERSION = {v}

class Pricer:
    def __init__(self, rate):
        self.rate = rate

    def price(self, n):
        return sum(range(n)) * self.rate + VERSION * 0

@functools.lru_cache(maxsize=256)
def table(n):
    return tuple(i * i for i in range(n % 64))

PRICER = Pricer(1)

def handle(n):
    total = PRICER.price(n) + len(table(n))
    return f"{{VERSION}} {{total}}"
{pad}
"""

WORKER = textwrap.dedent(
    """
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    sys.path.insert(0, sys.argv[1])
    import app
    import reloadctl.agent

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes

        def do_GET(self):
            body = app.handle(int(self.path[1:])).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    agent = reloadctl.agent.start(f"unix://{sys.argv[1]}/agent.sock")
    print(server.server_address[1], agent.address, flush=True)
    server.serve_forever()
    """
)


def app_source(version: int) -> str:
    # a few hundred lines of padding: a module of a realistic size to compile
    pad = "\n".join(f"def helper_{i}(x):\n    return x + {i}\n" for i in range(150))
    return APP.format(v=version, pad=pad)


def expected(n: int) -> int:
    return sum(range(n)) + len(tuple(i * i for i in range(n % 64)))


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


class Worker:
    def __init__(self, workdir: Path) -> None:
        (workdir / "app.py").write_text(app_source(1))
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELOADCTL_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(workdir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline().decode().split() if ready else []
        if len(line) != 2:
            self.proc.kill()
            raise SystemExit(f"worker did not start: {self.proc.communicate()[1]!r}")
        self.port = int(line[0])
        self.agent = line[1]

    def stop(self) -> bytes:
        self.proc.terminate()
        _out, err = self.proc.communicate(timeout=20)
        return err


def load(port: int, requests: int, clients: int) -> tuple[list[float], list[str], set[str]]:
    """Send ``requests`` GETs from ``clients`` threads; return latencies (s), failures and
    the versions seen."""
    latencies: list[float] = []
    failures: list[str] = []
    versions: set[str] = set()
    lock = threading.Lock()
    per_client = requests // clients

    def client(seed: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine: list[float] = []
        try:
            for i in range(per_client):
                n = 100 + (seed * 7919 + i * 31) % 900
                t0 = time.perf_counter()
                try:
                    conn.request("GET", f"/{n}")
                    resp = conn.getresponse()
                    body = resp.read().decode()
                except Exception as exc:  # a failed request is a figure
                    with lock:
                        failures.append(f"{type(exc).__name__}: {exc}")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    continue
                mine.append(time.perf_counter() - t0)
                version, _, total = body.partition(" ")
                if resp.status != 200 or total != str(expected(n)):
                    with lock:
                        failures.append(f"status {resp.status} body {body[:60]!r}")
                with lock:
                    versions.add(version)
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, failures, versions


def reloader(workdir: Path, agent: str, interval: float, version: int) -> None:
    """The ``--reloader`` process: reload until stdin closes, then print the figures."""
    stop = threading.Event()

    def wait_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    out: dict[str, Any] = {"durations": [], "bad": [], "version": version}
    while not stop.is_set():
        version = out["version"] = 2 if out["version"] == 1 else 1
        # an atomic replace, as an editor or a deploy does
        tmp = workdir / "app.py.tmp"
        tmp.write_text(app_source(version))
        os.replace(tmp, workdir / "app.py")
        t0 = time.perf_counter()
        try:
            results = execute(
                agent, ReloadRequest(("app",)), secret=None, connect_timeout=5, timeout=30
            )
            statuses = [r.status for r in results]  # type: ignore[union-attr]
        except Exception as exc:  # reported as a figure
            statuses = [f"{type(exc).__name__}: {exc}"]
        out["durations"].append(time.perf_counter() - t0)
        if statuses != ["reloaded"]:
            out["bad"].append(statuses)
        stop.wait(interval)
    print(json.dumps(out), flush=True)


def start_reloader(workdir: Path, agent: str, interval: float, version: int) -> Any:
    return subprocess.Popen(
        [sys.executable, __file__, "--reloader", str(workdir), agent, str(interval), str(version)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


def main() -> None:
    if sys.argv[1:2] == ["--reloader"]:
        reloader(Path(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per phase")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between reloads")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rc-serve-", dir="/tmp") as tmp:
        workdir = Path(tmp)
        worker = Worker(workdir)
        phases: dict[str, dict[str, Any]] = {
            name: {"lat": [], "failures": [], "versions": set()}
            for name in ("baseline", "reloading")
        }
        reloads: dict[str, Any] = {"durations": [], "bad": [], "version": 1}
        try:
            load(worker.port, 400, args.clients)  # warm-up
            for _ in range(args.rounds):
                for name in ("baseline", "reloading"):
                    rp = None
                    if name == "reloading":
                        rp = start_reloader(
                            workdir, worker.agent, args.interval, reloads["version"]
                        )
                        time.sleep(0.3)  # its interpreter and imports are up
                    t0 = time.perf_counter()
                    cpu0 = cpu_seconds(worker.proc.pid)
                    lat, failures, versions = load(worker.port, args.requests, args.clients)
                    phases[name].setdefault("wall", []).append(time.perf_counter() - t0)
                    cpu = cpu_seconds(worker.proc.pid) - cpu0
                    phases[name].setdefault("cpu", []).append(cpu)
                    if rp is not None:
                        out, _ = rp.communicate(input=b"", timeout=60)
                        got = json.loads(out)
                        reloads["durations"] += got["durations"]
                        reloads["bad"] += got["bad"]
                        reloads["version"] = got["version"]
                    phases[name]["lat"] += lat
                    phases[name]["failures"] += failures
                    phases[name]["versions"] |= versions
        finally:
            err = worker.stop()

    summary: dict[str, Any] = {
        "requests_per_phase": args.requests * args.rounds,
        "clients": args.clients,
        "reload_interval_s": args.interval,
        "worker_stderr_bytes": len(err),
    }
    for name, ph in phases.items():
        lat_ms = [x * 1000 for x in ph["lat"]]
        summary[name] = {
            "requests": len(lat_ms) + len(ph["failures"]),
            "failed": len(ph["failures"]),
            "failures_sample": ph["failures"][:3],
            "p50_ms": round(percentile(lat_ms, 50), 3),
            "p90_ms": round(percentile(lat_ms, 90), 3),
            "p99_ms": round(percentile(lat_ms, 99), 3),
            "max_ms": round(max(lat_ms), 3),
            "throughput_rps": round(len(lat_ms) / sum(ph["wall"]), 1),
            "worker_cpu_s": round(sum(ph["cpu"]), 2),
            "versions_served": sorted(ph["versions"]),
        }
    durations = [d * 1000 for d in reloads["durations"]]
    summary["reloads"] = {
        "count": len(durations),
        "not_reloaded": len(reloads["bad"]),
        "bad_sample": reloads["bad"][:3],
        "median_ms": round(statistics.median(durations), 2) if durations else None,
        "p99_ms": round(percentile(durations, 99), 2) if durations else None,
    }
    summary["p99_ratio"] = round(summary["reloading"]["p99_ms"] / summary["baseline"]["p99_ms"], 2)
    summary["p50_ratio"] = round(summary["reloading"]["p50_ms"] / summary["baseline"]["p50_ms"], 2)

    if not args.json_only:
        print(
            f"serving impact: {args.clients} keep-alive clients, {args.requests} requests x "
            f"{args.rounds} rounds per phase, a reload every {args.interval:g} s"
        )
        print(
            f"{'phase':<10} {'requests':>8} {'failed':>6} {'p50 ms':>8} {'p90 ms':>8} "
            f"{'p99 ms':>8} {'max ms':>8} {'req/s':>8}"
        )
        for name in ("baseline", "reloading"):
            s = summary[name]
            print(
                f"{name:<10} {s['requests']:>8} {s['failed']:>6} {s['p50_ms']:>8} "
                f"{s['p90_ms']:>8} {s['p99_ms']:>8} {s['max_ms']:>8} {s['throughput_rps']:>8}"
            )
        r = summary["reloads"]
        print(
            f"reloads: {r['count']} done, {r['not_reloaded']} not 'reloaded', "
            f"median {r['median_ms']} ms, p99 {r['p99_ms']} ms (connect+handshake+reload)"
        )
        print(
            f"p99 ratio reloading/baseline: {summary['p99_ratio']} (target <= 2); "
            f"p50 ratio {summary['p50_ratio']}; worker stderr bytes: {len(err)}"
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
