"""What the agent costs its host: idle CPU, memory and start-up time, each against a baseline.

Run: ``python benchmarks/agent_footprint.py`` (about 40 s). Every figure is measured in the
same run as its baseline, on the same interpreter:

- idle CPU: on-CPU time of every thread of a process with a started agent, over 10 idle
  seconds (from /proc/PID/task/*/schedstat), against the same process without the agent;
  target < 1 ms in total (rpyc's default listener would wake twice a second);
- memory: RSS of a process with a started agent against one that only imports rpyc and
  msgpack, and against a bare interpreter (medians of 5 fresh processes each, bytecode
  cached as when installed); target: agent <= imports + 2 MiB;
- start-up: launch to the program's first line under ``python -m reloadctl.agent script.py``
  against ``python script.py``, for a bare script and for one that imports argparse,
  dataclasses, logging and socket first, as services do (the agent needs those too, so
  there only the agent's own cost is left).

Prints a table, then one JSON line.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IDLE_SECONDS = 10.0
RSS_ROUNDS = 5
RUNS = 7

HOLD = """
import sys, time
{prelude}
sys.stdout.write("ready " + address + "\\n"); sys.stdout.flush()
time.sleep(3600)
"""
WARM_UP = """
import subprocess, sys, rpyc, msgpack, reloadctl.agent as a
import reloadctl.agent.server, reloadctl.agent.service, reloadctl.agent.launcher
import reloadctl.client.connection
"""
PRELUDES = {
    "bare": "address = ''",
    "imports": "import rpyc, msgpack; address = ''",
    # the agent loads rpyc and its server only when the first client connects: measure it
    # idle (never contacted) and after serving one status request
    "agent_idle": "import reloadctl.agent as a; address = a.start().address",
    "agent_served": "import reloadctl.agent as a; address = a.start().address",
}


def cpu_ns(pid: int) -> int:
    """On-CPU nanoseconds of every thread of ``pid`` so far."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # thread ended
            total += int((task / "schedstat").read_text().split()[0])
    return total


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def spawn_holder(kind: str, env: dict[str, str]) -> subprocess.Popen[str]:
    code = HOLD.format(prelude=PRELUDES[kind])
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    word, _, address = proc.stdout.readline().strip().partition(" ")
    if word != "ready":
        proc.kill()
        raise RuntimeError(f"{kind} holder did not start")
    if kind == "agent_served":
        from reloadctl.client.connection import execute
        from reloadctl.proto.messages import AgentInfo, StatusRequest

        info = execute(address, StatusRequest(), secret=None, connect_timeout=5, timeout=10)
        assert isinstance(info, AgentInfo) and info.pid == proc.pid
    return proc


def measure_holders(env: dict[str, str], idle_seconds: float) -> dict[str, dict[str, float]]:
    procs = {kind: spawn_holder(kind, env) for kind in PRELUDES}
    try:
        time.sleep(1.0)  # let start-up work settle
        before = {k: cpu_ns(p.pid) for k, p in procs.items()}
        time.sleep(idle_seconds)
        after = {k: cpu_ns(p.pid) for k, p in procs.items()}
        return {
            k: {
                "idle_cpu_ms": (after[k] - before[k]) / 1e6,
                "rss_mib": rss_kib(p.pid) / 1024,
                "threads": len(list(Path(f"/proc/{p.pid}/task").iterdir())),
            }
            for k, p in procs.items()
        }
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
            if p.stdout:
                p.stdout.close()


def first_line_ms(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    proc.stdout.readline()
    elapsed = (time.perf_counter() - t0) * 1000
    proc.wait()
    proc.stdout.close()
    return elapsed


#: Start-up is measured for a bare script and for one that first imports what a typical
#: service imports anyway (and the agent needs): there the agent's own cost shows.
SCRIPTS = {
    "": "print('first line', flush=True)\n",
    "service_": "import argparse, dataclasses, logging, socket\nprint('first line', flush=True)\n",
}


def measure_startup(env: dict[str, str], workdir: Path) -> dict[str, float]:
    out = {}
    for prefix, text in SCRIPTS.items():
        script = workdir / f"{prefix or 'hello_'}script.py"
        script.write_text(text)
        plain = [sys.executable, str(script)]
        agent = [sys.executable, "-m", "reloadctl.agent", str(script)]
        for _ in range(2):  # warm the page cache
            first_line_ms(plain, env)
            first_line_ms(agent, env)
        a, b = [], []
        for _ in range(RUNS * 2):
            a.append(first_line_ms(plain, env))
            b.append(first_line_ms(agent, env))
        out[f"{prefix}plain_ms"] = statistics.median(a)
        out[f"{prefix}agent_ms"] = statistics.median(b)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="rlbench-") as tmp:
        runtime = Path(tmp) / "run"
        runtime.mkdir(mode=0o700)
        env = {
            **os.environ,
            "XDG_RUNTIME_DIR": str(runtime),
            # as installed: bytecode cached. Without this, PYTHONDONTWRITEBYTECODE=1 or a
            # stale __pycache__ makes every holder compile the modules it imports, and the
            # compiler's high-water mark would be counted as the agent's memory.
            "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache"),
        }
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run(  # write that bytecode once, before anything is measured
            [sys.executable, "-c", WARM_UP], env=env, check=True, stdout=subprocess.DEVNULL
        )
        # idle CPU over one long quiet period; RSS as the median of RSS_ROUNDS fresh holders
        rounds = [measure_holders(env, IDLE_SECONDS)]
        rounds += [measure_holders(env, 0.0) for _ in range(RSS_ROUNDS - 1)]
        holders = rounds[0]
        for kind, figures in holders.items():
            figures["rss_mib"] = statistics.median(r[kind]["rss_mib"] for r in rounds)
        startup = measure_startup(env, Path(tmp))
    agent, imports, bare = holders["agent_served"], holders["imports"], holders["bare"]
    idle = holders["agent_idle"]
    rows = [
        ("idle CPU over 10 s, agent", f"{agent['idle_cpu_ms']:.3f} ms", "target < 1 ms"),
        ("idle CPU over 10 s, no agent", f"{bare['idle_cpu_ms']:.3f} ms", "baseline"),
        ("RSS bare interpreter", f"{bare['rss_mib']:.1f} MiB", ""),
        ("RSS import rpyc+msgpack", f"{imports['rss_mib']:.1f} MiB", "baseline"),
        ("RSS agent started, never contacted", f"{idle['rss_mib']:.1f} MiB", "rpyc not loaded yet"),
        (
            "RSS agent after serving one client",
            f"{agent['rss_mib']:.1f} MiB",
            f"+{agent['rss_mib'] - imports['rss_mib']:.2f} MiB over imports (target <= 2)",
        ),
        ("threads with agent", f"{agent['threads']:.0f}", f"bare: {bare['threads']:.0f}"),
        ("first line, python script.py", f"{startup['plain_ms']:.1f} ms", "baseline"),
        (
            "first line, python -m reloadctl.agent script.py",
            f"{startup['agent_ms']:.1f} ms",
            f"{startup['agent_ms'] / startup['plain_ms']:.2f}x",
        ),
        (
            "first line, a script importing logging etc.",
            f"{startup['service_plain_ms']:.1f} ms",
            "baseline: imports argparse, dataclasses, logging, socket",
        ),
        (
            "the same under python -m reloadctl.agent",
            f"{startup['service_agent_ms']:.1f} ms",
            f"+{startup['service_agent_ms'] - startup['service_plain_ms']:.1f} ms, "
            f"{startup['service_agent_ms'] / startup['service_plain_ms']:.2f}x",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>12}  {note}")
    print(json.dumps({"benchmark": "agent_footprint", "holders": holders, "startup": startup}))


if __name__ == "__main__":
    main()
