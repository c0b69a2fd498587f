"""Fleet fan-out: ``reloadctl reload`` on N local agents vs a bare rpyc ping fan-out.

Starts 200 real agent processes (``python -m reloadctl.agent app.py``, one unix socket each,
a private XDG_RUNTIME_DIR), then for N in 1, 10, 50, 200 and in interleaved random order:

- ``reloadctl reload -q -o ndjson -H A1 ... -H AN mod`` after an edit of ``mod.py`` (so
  every run really reloads the module in every agent, which all import the same file);
- the baseline: a Python process that connects to the same N agents with the same pool
  size (the CLI's default ``-P``), runs the agent's mandatory handshake, opens an rpyc
  connection and calls rpyc's own ``ping()``, then closes: the transport floor with no
  reload, no CLI and no rendering. The target is against this one;
- for context, the same process calling one method the ordinary rpyc way instead
  (``conn.root.poll(b"")``: GETROOT, INSPECT, GETATTR, CALL round trips), what a plain
  rpyc RPC fan-out costs (the agent answers it with a protocol error).

Both are whole processes started the same way, so both include interpreter start-up.
Before the timed runs, one reload of all N agents (reported as "first reload") is each
agent's first contact: it loads rpyc and the agent's server (~50 ms of CPU; the agent defers
them so that hosts start fast) and then the engine (~10 ms). Otherwise whichever run first
reached an agent would pay it, and the medians would depend on the shuffle. On this 2-core
machine 200 fresh agents pay it one after another; on separate machines they pay it once
each, in parallel.
Target: reload within 1.3x the baseline at N=200. Also reports the CLI's peak RSS at 200
(``ru_maxrss`` of the child). Prints a table and a JSON line. About a minute; every agent is
killed and the directory removed at the end, also on Ctrl-C.

Usage: python benchmarks/fleet.py [--runs N] [--agents N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RELOADCTL = shutil.which("reloadctl", path=str(Path(sys.executable).parent)) or "reloadctl"
SIZES = (1, 10, 50, 200)
TARGET_RATIO = 1.3

WARM_UP = "import rpyc, reloadctl.agent.engine, reloadctl.agent.server, reloadctl.client.cli"

BASELINE = r"""
import socket, sys
from concurrent.futures import ThreadPoolExecutor
from rpyc.core.channel import Channel
from rpyc.core.stream import SocketStream
from rpyc.utils.factory import connect_channel
from reloadctl.proto import auth

def ping(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(10)
        sock.connect(path)
        def recv_exact(n):
            data = b""
            while len(data) < n:
                chunk = sock.recv(n - len(data))
                if not chunk:
                    raise EOFError
                data += chunk
            return data
        client = auth.ClientHandshake(None, require_mac=False)
        sock.sendall(client.answer(auth.read_frame(recv_exact)))
        client.finish(auth.read_frame(recv_exact))
        conn = connect_channel(Channel(SocketStream(sock), compress=False), config={})
        try:
            if CALL:
                conn.root.poll(b"")  # rpyc's ordinary path: GETROOT, INSPECT, GETATTR, CALL
            else:
                conn.ping()
        finally:
            conn.close()
    finally:
        sock.close()

CALL = sys.argv[2:3] == ["call"]
paths = sys.argv[3:]
with ThreadPoolExecutor(int(sys.argv[1])) as pool:
    list(pool.map(ping, paths))
"""


def start_agents(root: Path, count: int, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    (root / "mod.py").write_text("def value():\n    return 0\n")
    (root / "app.py").write_text("import time, mod\nwhile True:\n    time.sleep(3600)\n")
    procs = []
    for _ in range(count):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "reloadctl.agent", "app.py"],
                cwd=root,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    sockdir = Path(env["XDG_RUNTIME_DIR"]) / "reloadctl"
    deadline = time.monotonic() + 120
    want = {f"app-{p.pid}.sock" for p in procs}
    while not want <= set(os.listdir(sockdir) if sockdir.exists() else ()):
        if time.monotonic() > deadline:
            raise SystemExit("agents did not start in time")
        time.sleep(0.1)
    return procs


def run(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(wall ms, peak RSS KiB) of one child; blocking waitpid, bounded by a watchdog."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        watchdog.cancel()
    elapsed = (time.perf_counter() - started) * 1000
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:3]}... exited {proc.returncode}: {err[-500:]}")
    return elapsed, usage.ru_maxrss


def agent_cpu_ms(pid: int) -> float:
    """User + system CPU of process ``pid`` so far (clock ticks, from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def per_target(
    root: Path, agent: subprocess.Popen[bytes], path: str, calls: int
) -> dict[str, float]:
    """CPU per target on each side, one agent, ``calls`` sequential calls of each kind.

    - ``ping``: the baseline's connect + handshake + rpyc ping + close;
    - ``reload``: ``connection.execute`` of a real reload (the file edited before each call,
      outside the timing), what ``reloadctl reload`` does per target;
    - ``engine``: ``reload_modules`` of the same module in this process (no transport), and
      ``importlib.reload`` of it, for the floor of a reload's cost.
    """
    import importlib

    from reloadctl.agent import reload_modules
    from reloadctl.client.connection import execute
    from reloadctl.proto.messages import ReloadRequest

    namespace: dict[str, object] = {}
    exec(BASELINE.split("CALL = ", maxsplit=1)[0], namespace)  # the baseline's own ping()
    namespace["CALL"] = False
    ping = namespace["ping"]
    mod_py = root / "mod.py"
    version = [10**6]

    def edit() -> None:
        version[0] += 1
        mod_py.write_text(f"def value():\n    return {version[0]}\n")

    def reload() -> None:
        results = execute(
            f"unix://{path}", ReloadRequest(("mod",)), secret=None, connect_timeout=5, timeout=10
        )
        assert [r.status for r in results] == ["reloaded"], results  # type: ignore[union-attr]

    out: dict[str, float] = {}
    for name, call in (("ping", lambda: ping(path)), ("reload", reload)):  # type: ignore[operator]
        wall = cpu = 0.0
        agent_before = agent_cpu_ms(agent.pid)
        for _ in range(calls):
            if name == "reload":
                edit()
            t0, c0 = time.perf_counter(), time.thread_time()
            call()
            wall += time.perf_counter() - t0
            cpu += time.thread_time() - c0
        time.sleep(0.2)  # the agent closes its side
        out[f"{name}_wall_ms"] = wall * 1000 / calls
        out[f"{name}_client_cpu_ms"] = cpu * 1000 / calls
        out[f"{name}_agent_cpu_ms"] = (agent_cpu_ms(agent.pid) - agent_before) / calls
    sys.path.insert(0, str(root))
    try:
        import mod  # type: ignore[import-not-found]

        for name, fn in (
            ("engine", lambda: reload_modules(["mod"])),
            ("importlib", lambda: importlib.reload(mod)),
        ):
            spent = []
            for _ in range(calls):
                edit()
                importlib.invalidate_caches()
                c0 = time.thread_time()
                fn()
                spent.append(time.thread_time() - c0)
            out[f"{name}_cpu_ms"] = statistics.median(spent) * 1000
    finally:
        sys.path.remove(str(root))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--agents", type=int, default=max(SIZES))
    args = parser.parse_args()
    sizes = [n for n in SIZES if n <= args.agents]
    root = Path(tempfile.mkdtemp(prefix="rcf-", dir="/tmp"))
    env = {
        **os.environ,
        "XDG_RUNTIME_DIR": str(root / "run"),
        "XDG_CONFIG_HOME": str(root / "cfg"),
        "PYTHONPYCACHEPREFIX": str(root / "pycache"),  # as installed: bytecode cached
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for var in ("RELOADCTL_HOST", "RELOADCTL_SECRET", "RELOADCTL_SECRET_FILE"):
        env.pop(var, None)
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    )
    procs: list[subprocess.Popen[bytes]] = []
    parallel = min(32, 4 * (os.cpu_count() or 1))
    samples: dict[tuple[str, int], list[float]] = {}
    first_reload: dict[tuple[str, int], float] = {}  # the warm-up runs, kept apart
    peak_rss: dict[int, int] = {}
    try:
        # bytecode written once, as pip does at install; else the first agents to load the
        # engine would compile it, and "first reload" would measure the compiler
        subprocess.run([sys.executable, "-c", WARM_UP], env=env, check=True)
        t0 = time.monotonic()
        procs = start_agents(root, args.agents, env)
        started_s = time.monotonic() - t0
        paths = [str(root / "run" / "reloadctl" / f"app-{p.pid}.sock") for p in procs]
        version = 0
        kinds = ("reloadctl", "rpyc ping", "rpyc call")
        order = [(kind, n) for kind in kinds for n in sizes] * args.runs
        random.shuffle(order)
        warmup = [(kind, len(paths)) for kind in kinds]
        for kind, n in [*warmup, *order]:
            chosen = paths[:n]
            if kind == "reloadctl":
                version += 1
                (root / "mod.py").write_text(f"def value():\n    return {version}\n")
                argv = [RELOADCTL, "reload", "-q", "-o", "ndjson"]
                for p in chosen:
                    argv += ["-H", f"unix://{p}"]
                argv.append("mod")
            else:
                mode = kind.split()[1]  # "ping" or "call"
                argv = [sys.executable, "-c", BASELINE, str(parallel), mode, *chosen]
            elapsed, rss = run(argv, env)
            if warmup:
                first_reload[warmup.pop(0)] = elapsed
                continue
            samples.setdefault((kind, n), []).append(elapsed)
            if kind == "reloadctl":
                peak_rss[n] = max(peak_rss.get(n, 0), rss)
        target = per_target(root, procs[0], paths[0], calls=300)
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait(30)
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"{len(procs)} agents started in {started_s:.1f} s; "
        f"pool size {parallel}; {args.runs} runs each\n"
    )
    print(
        f"{'N':>4} {'reloadctl ms':>13} {'rpyc ping ms':>13} {'ratio':>6} "
        f"{'rpyc call ms':>13} {'ratio':>6} {'CLI peak RSS MiB':>17}"
    )
    result: dict[str, object] = {"agents": len(procs), "parallel": parallel, "runs": args.runs}
    rows = []
    for n in sizes:
        ours = statistics.median(samples[("reloadctl", n)])
        base = statistics.median(samples[("rpyc ping", n)])
        call = statistics.median(samples[("rpyc call", n)])
        ratio = ours / base
        print(
            f"{n:>4} {ours:13.1f} {base:13.1f} {ratio:6.2f} {call:13.1f} {ours / call:6.2f} "
            f"{peak_rss[n] / 1024:17.1f}"
        )
        rows.append(
            {
                "n": n,
                "reloadctl_ms": round(ours, 1),
                "rpyc_ping_ms": round(base, 1),
                "ratio": round(ratio, 2),
                "rpyc_call_ms": round(call, 1),
                "ratio_to_call": round(ours / call, 2),
                "cli_peak_rss_mib": round(peak_rss[n] / 1024, 1),
            }
        )
    result["rows"] = rows
    cold = first_reload[("reloadctl", len(procs))]
    print(f"\nfirst reload of all {len(procs)} agents (each loads the engine): {cold:.1f} ms")
    result["first_reload_ms"] = round(cold, 1)
    ping_cpu = target["ping_client_cpu_ms"] + target["ping_agent_cpu_ms"]
    reload_cpu = target["reload_client_cpu_ms"] + target["reload_agent_cpu_ms"]
    print("\nper target, one agent, 300 sequential calls each (CPU: client + agent):")
    print(f"{'':28} {'wall ms':>8} {'client CPU':>11} {'agent CPU':>10} {'total CPU':>10}")
    for name, label in (
        ("ping", "handshake + rpyc ping"),
        ("reload", "reloadctl reload (execute)"),
    ):
        print(
            f"{label:28} {target[name + '_wall_ms']:8.3f} "
            f"{target[name + '_client_cpu_ms']:11.3f} {target[name + '_agent_cpu_ms']:10.3f} "
            f"{target[name + '_client_cpu_ms'] + target[name + '_agent_cpu_ms']:10.3f}"
        )
    floor = ping_cpu + target["engine_cpu_ms"]
    print(
        f"the reload itself, in-process: engine {target['engine_cpu_ms']:.3f} ms CPU, "
        f"importlib.reload {target['importlib_cpu_ms']:.3f} ms\n"
        f"a reload can cost no less than ping + engine = {floor:.3f} ms CPU per target, "
        f"{floor / ping_cpu:.2f}x the ping; ours: {reload_cpu:.3f} ms, {reload_cpu / ping_cpu:.2f}x"
    )
    result["per_target"] = {k: round(v, 3) for k, v in target.items()}
    top = rows[-1]
    verdict = "meets" if top["ratio"] <= TARGET_RATIO else "MISSES"  # type: ignore[operator]
    print(
        f"\nat N={top['n']}: {top['ratio']}x the bare rpyc ping fan-out "
        f"({verdict} <= {TARGET_RATIO}x)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
