"""Fleet reload across a (emulated) WAN: 200 agents on 10 namespaced hosts at 25 ms RTT.

Builds the multi-host bed of ``benchmarks/netbed.py`` (network namespaces; latency added by
a forwarding proxy inside each host, see tests/netbed.py), starts the agents (by default one
real process each, ``python -m reloadctl.agent --listen tcp://127.0.0.1:P app.py`` with a
secret; each app also runs an ``rpyc.classic`` server, what an rpyc user would embed
instead), then, interleaved in random order, ``--runs`` times each:

- ``reloadctl reload -q -o ndjson -H ... fleetmod`` after an edit of ``fleetmod.py`` (every
  agent really reloads it), with the CLI's default pool for tcp targets;
- ``rpyc ping``: a Python process that, with the same pool size, connects to every agent,
  runs the agent's mandatory HMAC handshake, opens an rpyc connection and calls rpyc's
  ``ping()``: the transport floor (target: reload <= 1.3x of it);
- ``rpyc.classic``: a Python process that, with the same pool size, does
  ``rpyc.classic.connect`` + ``conn.modules.importlib.reload(conn.modules.fleetmod)`` on
  every app (target: reload <= 1.0x of it).

All three are whole processes (interpreter start-up included). Also measured: round trips
of one reload (best of 7 sequential ``connection.execute`` calls / RTT; target <= 4), and
the client's CPU per target (the CLI's user+system CPU / agents).

The proxies run on the same 2 cores as everything else; they cost all three the same.
About two minutes; the bed and every process are removed at the end (also on Ctrl-C).

Usage: sudo python benchmarks/fleet_wan.py [--hosts 10] [--agents 200] [--rtt-ms 25]
       [--runs 5] [--per-process 1]
       python benchmarks/fleet_wan.py --scale 1000,10000 [--per-process 200] [--runs 3]
       (loopback, no namespaces: the client's cost per target, next to the same run's
       floor of the chosen stack, see ``scale``)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from netbed import NetBed, unavailable

RELOADCTL = shutil.which("reloadctl", path=str(Path(sys.executable).parent)) or "reloadctl"
SECRET = "fleet-wan-benchmark-secret-0123456789"
CLASSIC_OFFSET = 1000
FIRST_PORT = 7000
TARGET_PING = 1.3
TARGET_CLASSIC = 1.0
TARGET_ROUND_TRIPS = 4
#: The CLI's default pool for tcp targets; the scale floor uses the same.
SCALE_POOL = 64

APP = """
import logging, threading, time
import fleetmod
from reloadctl.agent import lifecycle
from rpyc.core.service import SlaveService
from rpyc.utils.server import ThreadedServer

port = int(lifecycle.current_agent().address.rsplit(":", 1)[1]) + {offset}
quiet = logging.getLogger("classic")
quiet.addHandler(logging.NullHandler())
quiet.propagate = False
server = ThreadedServer(
    SlaveService, hostname="127.0.0.1", port=port, logger=quiet, listener_timeout=None,
    protocol_config={{"allow_all_attrs": True, "sync_request_timeout": 60}},
)
threading.Thread(target=server.start, daemon=True).start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"""

PING = r"""
import socket, sys
from concurrent.futures import ThreadPoolExecutor
from rpyc.core.channel import Channel
from rpyc.core.stream import SocketStream
from rpyc.utils.factory import connect_channel
from reloadctl.proto import auth

SECRET = sys.argv[2].encode()

def ping(address):
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        def recv_exact(n):
            data = b""
            while len(data) < n:
                chunk = sock.recv(n - len(data))
                if not chunk:
                    raise EOFError
                data += chunk
            return data
        client = auth.ClientHandshake(SECRET, require_mac=True)
        sock.sendall(client.answer(auth.read_frame(recv_exact)))
        client.finish(auth.read_frame(recv_exact))
        conn = connect_channel(Channel(SocketStream(sock), compress=False), config={})
        try:
            conn.ping()
        finally:
            conn.close()
    finally:
        sock.close()

with ThreadPoolExecutor(int(sys.argv[1])) as pool:
    list(pool.map(ping, sys.argv[3:]))
"""

CLASSIC = r"""
import sys
from concurrent.futures import ThreadPoolExecutor
import rpyc

def reload(address):
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    conn = rpyc.classic.connect(host, int(port))
    try:
        conn.modules.importlib.reload(conn.modules.fleetmod)
    finally:
        conn.close()

with ThreadPoolExecutor(int(sys.argv[1])) as pool:
    list(pool.map(reload, sys.argv[2:]))
"""


def run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall ms, user+system CPU ms) of one child; bounded by a watchdog."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        watchdog.cancel()
    elapsed = (time.perf_counter() - started) * 1000
    code = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if code != 0:
        raise SystemExit(f"{argv[:3]}... exited {code}: {err[-800:]}")
    return elapsed, (usage.ru_utime + usage.ru_stime) * 1000


def streaming(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    """When NDJSON records reach our pipe: ms to the first, the median and the last record
    (a live stream spreads them over the run; a buffered one delivers them all at the end)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    watchdog = threading.Timer(300, proc.kill)
    watchdog.start()
    times = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(b'{"target"'):
                times.append((time.perf_counter() - started) * 1000)
        proc.wait()
    finally:
        watchdog.cancel()
        if proc.stdout is not None:
            proc.stdout.close()
    end = (time.perf_counter() - started) * 1000
    return {
        "records": len(times),
        "first_ms": round(times[0], 1),
        "median_ms": round(statistics.median(times), 1),
        "last_ms": round(times[-1], 1),
        "exit_ms": round(end, 1),
    }


def cpu_ms(pids: list[int]) -> float:
    """User + system CPU of processes ``pids`` so far (from /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total * 1000 / os.sysconf("SC_CLK_TCK")


def round_trips(address: str, rtt_s: float, fleetmod: Path, calls: int = 7) -> dict[str, float]:
    """Best wall time of one reload (and one status) over RTT, sequential, in this process."""
    from reloadctl.client.connection import execute
    from reloadctl.proto.messages import ReloadRequest, StatusRequest
    from reloadctl.secrets import Secret

    secret = Secret(SECRET.encode())
    out: dict[str, float] = {}
    for name, request in (("status", StatusRequest()), ("reload", ReloadRequest(("fleetmod",)))):
        best = float("inf")
        for i in range(calls):
            if name == "reload":
                fleetmod.write_text(f"VALUE = {10**6 + i}\n")
            t0 = time.perf_counter()
            execute(address, request, secret=secret, connect_timeout=10, timeout=30)
            best = min(best, time.perf_counter() - t0)
        out[name] = best / rtt_s
    return out


def scale(sizes: list[int], per_process: int, runs: int) -> None:
    """Client cost at 1,000-10,000 simulated targets on loopback: ``per_process`` agent
    servers multiplexed in each process (``tests/netbed.py agents``; they share one engine,
    so a module is reloaded by the first of them and ``unchanged`` for the rest: this
    measures the client and the transport, not the engine). Prints wall time and the CLI's
    CPU per target for ``reloadctl reload`` of every target, and, interleaved in the same
    run, the floor of the chosen stack: the ``PING`` process (connect, HMAC handshake, rpyc
    ``ping()`` per target, the same pool) on the same targets."""
    root = Path(tempfile.mkdtemp(prefix="rcscale-", dir="/tmp"))
    (root / "fleetmod.py").write_text("VALUE = 0\n")
    secret = root / "secret"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELOADCTL_")}
    env.update(
        PYTHONPATH=str(root),
        RELOADCTL_SECRET_FILE=str(secret),
        XDG_RUNTIME_DIR=str(root),
        XDG_CONFIG_HOME=str(root / "cfg"),
    )
    core = Path(__file__).resolve().parents[1] / "tests" / "netbed.py"
    procs: list[subprocess.Popen[bytes]] = []
    total = max(sizes)
    first = 20_000
    rows = []
    try:
        for at in range(0, total, per_process):
            ports = ",".join(str(first + p) for p in range(at, min(total, at + per_process)))
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(core), "agents", "--ports", ports, "--import", "fleetmod"],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
            )
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise SystemExit("an agent process did not start")
        addresses = [f"tcp://127.0.0.1:{first + i}" for i in range(total)]
        for n in sizes:
            argv = [RELOADCTL, "reload", "-q", "-o", "ndjson"]
            argv += [a for t in addresses[:n] for a in ("-H", t)] + ["fleetmod"]
            # The floor of the chosen stack, same run, same pool: connect + the mandatory
            # HMAC handshake + rpyc's ping() per target, nothing of reloadctl's client.
            floor = [sys.executable, "-c", PING, str(SCALE_POOL), SECRET, *addresses[:n]]
            run(argv, env)  # warm-up: every agent's first contact builds its server
            walls, cpus, floor_walls, floor_cpus = [], [], [], []
            for i in range(runs):
                (root / "fleetmod.py").write_text(f"VALUE = {n * 100 + i}\n")
                wall, cpu = run(argv, env)
                walls.append(wall)
                cpus.append(cpu)
                wall, cpu = run(floor, env)
                floor_walls.append(wall)
                floor_cpus.append(cpu)
            wall, cpu = statistics.median(walls), statistics.median(cpus)
            floor_wall, floor_cpu = statistics.median(floor_walls), statistics.median(floor_cpus)
            rows.append({"n": n, "wall_ms": round(wall, 1), "cli_cpu_ms": round(cpu, 1),
                         "cli_cpu_per_target_ms": round(cpu / n, 3),
                         "floor_wall_ms": round(floor_wall, 1),
                         "floor_cpu_per_target_ms": round(floor_cpu / n, 3)})  # fmt: skip
        (root / "fleetmod.py").write_text("VALUE = -1\n")
        live = streaming([*argv[:2], *argv[3:]], env)  # the same run without -q
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(30)
            if proc.stdout is not None:
                proc.stdout.close()
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"simulated targets on loopback, {per_process} agent servers per process, "
        f"pool {SCALE_POOL}, median of {runs}; floor = connect + HMAC handshake + rpyc "
        "ping() per target, in one Python process (interpreter start-up included in both)\n"
    )
    print(
        f"{'N':>6} {'wall ms':>9} {'CLI CPU ms':>11} {'CLI CPU/target ms':>18} "
        f"{'floor wall ms':>14} {'floor CPU/target ms':>20}"
    )
    for r in rows:
        print(
            f"{r['n']:>6} {r['wall_ms']:9.1f} {r['cli_cpu_ms']:11.1f} "
            f"{r['cli_cpu_per_target_ms']:18.3f} {r['floor_wall_ms']:14.1f} "
            f"{r['floor_cpu_per_target_ms']:20.3f}"
        )
    print(
        f"\nNDJSON at N={max(sizes)} ({live['records']} records): first after "
        f"{live['first_ms']:.0f} ms, half after {live['median_ms']:.0f} ms, last after "
        f"{live['last_ms']:.0f} ms, exit after {live['exit_ms']:.0f} ms"
    )
    print(json.dumps({"scale": rows, "per_process": per_process, "runs": runs, "ndjson": live}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale",
        metavar="N,N",
        help="instead: the client's cost at N simulated targets on loopback (e.g. 1000,10000)",
    )
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--rtt-ms", type=float, default=25.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--per-process", type=int, default=1, help="agents per process (>1: no classic)"
    )
    args = parser.parse_args()
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (8192, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    )
    if args.scale:
        sizes = sorted(int(n) for n in args.scale.split(","))
        scale(sizes, args.per_process if args.per_process > 1 else 200, args.runs)
        return
    reason = unavailable()
    if reason:
        raise SystemExit(f"fleet_wan needs network namespaces: {reason}")
    if args.agents % args.hosts:
        raise SystemExit("--agents must be a multiple of --hosts")
    per_host = args.agents // args.hosts
    classic = args.per_process == 1
    root = Path(tempfile.mkdtemp(prefix="rcwan-", dir="/tmp"))
    fleetmod = root / "fleetmod.py"
    fleetmod.write_text("VALUE = 0\n")
    app = root / "app.py"
    app.write_text(APP.format(offset=CLASSIC_OFFSET))
    secret = root / "secret"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELOADCTL_")}
    env.update(
        PYTHONPATH=str(root),
        RELOADCTL_SECRET_FILE=str(secret),
        XDG_RUNTIME_DIR=str(root),
        XDG_CONFIG_HOME=str(root / "cfg"),
        PYTHONPYCACHEPREFIX=str(root / "pycache"),
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    samples: dict[str, list[tuple[float, float, float]]] = {}
    with NetBed(args.hosts, rtt_ms=args.rtt_ms) as bed:
        t0 = time.monotonic()
        for host in bed.hosts:
            ports = range(FIRST_PORT, FIRST_PORT + per_host)
            bed.start_agents(
                host,
                per_host,
                app=app,
                env=env,
                per_process=args.per_process,
                first_port=FIRST_PORT,
                imports=["fleetmod"],
                also_forward=[p + CLASSIC_OFFSET for p in ports] if classic else [],
            )
        started_s = time.monotonic() - t0
        targets = bed.addresses()
        # every process in the hosts but the proxies (ip netns exec execs: same pid)
        agent_pids = [p.pid for h in bed.hosts for p in h.procs[:-1]]
        classic_targets = [
            t.rsplit(":", 1)[0] + f":{int(t.rsplit(':', 1)[1]) + CLASSIC_OFFSET}" for t in targets
        ]
        parallel = 64  # the CLI's default for tcp targets (reloadctl.client.cli)
        kinds = ["reloadctl", "rpyc ping"] + (["rpyc.classic"] if classic else [])
        order = kinds * args.runs
        random.shuffle(order)
        version = 0
        for kind in [*kinds, *order]:  # the first round: warm-up (first contact), kept apart
            if kind == "reloadctl":
                version += 1
                fleetmod.write_text(f"VALUE = {version}\n")
                argv = [RELOADCTL, "reload", "-q", "-o", "ndjson"]
                argv += [a for t in targets for a in ("-H", t)] + ["fleetmod"]
            elif kind == "rpyc ping":
                argv = [sys.executable, "-c", PING, str(parallel), SECRET, *targets]
            else:
                version += 1
                fleetmod.write_text(f"VALUE = {version}\n")
                argv = [sys.executable, "-c", CLASSIC, str(parallel), *classic_targets]
            before = cpu_ms(agent_pids)
            wall, cpu = run(argv, env)
            samples.setdefault(kind, []).append((wall, cpu, cpu_ms(agent_pids) - before))
        rt = round_trips(bed.hosts[0].addresses[0], bed.rtt_s, fleetmod)
    shutil.rmtree(root, ignore_errors=True)

    def median(kind: str, i: int) -> float:
        return statistics.median(s[i] for s in samples[kind][1:])

    print(
        f"{len(targets)} agents on {args.hosts} hosts at {args.rtt_ms:g} ms RTT "
        f"({args.per_process} per process), started in {started_s:.1f} s; "
        f"pool {parallel}; {args.runs} runs each (median)\n"
    )
    print(
        f"{'fan-out':16} {'wall ms':>9} {'client CPU ms':>14} {'per target':>11} "
        f"{'agents CPU per target ms':>25} {'reload is':>10}"
    )
    ours = median("reloadctl", 0)
    result: dict[str, object] = {
        "agents": len(targets),
        "hosts": args.hosts,
        "rtt_ms": args.rtt_ms,
        "per_process": args.per_process,
        "parallel": parallel,
        "runs": args.runs,
    }
    for kind in kinds:
        wall, cpu, agents_cpu = median(kind, 0), median(kind, 1), median(kind, 2)
        print(
            f"{kind:16} {wall:9.1f} {cpu:14.1f} {cpu / len(targets):11.3f} "
            f"{agents_cpu / len(targets):25.3f} {ours / wall:9.2f}x"
        )
        key = kind.replace(" ", "_").replace(".", "_")
        result[f"{key}_ms"] = round(wall, 1)
        result[f"{key}_cpu_ms"] = round(cpu, 1)
        result[f"{key}_agents_cpu_per_target_ms"] = round(agents_cpu / len(targets), 3)
    print(
        f"\nround trips (best of 7, one target): reload {rt['reload']:.2f}, "
        f"status {rt['status']:.2f} (target <= {TARGET_ROUND_TRIPS})"
    )
    result["round_trips_reload"] = round(rt["reload"], 2)
    result["round_trips_status"] = round(rt["status"], 2)
    vs_ping = ours / median("rpyc ping", 0)
    result["ratio_to_ping"] = round(vs_ping, 2)
    line = f"reload = {vs_ping:.2f}x the bare rpyc ping fan-out (target <= {TARGET_PING}x)"
    if classic:
        vs_classic = ours / median("rpyc.classic", 0)
        result["ratio_to_classic"] = round(vs_classic, 2)
        line += f", {vs_classic:.2f}x rpyc.classic importlib.reload (target <= {TARGET_CLASSIC}x)"
    print(line)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
