"""The multi-host bed for benchmarks: ``tests/netbed.py`` (namespaces, latency), re-exported.

Usage as a script, to look at a bed by hand or clean up after a killed run:
    python benchmarks/netbed.py sweep
    python benchmarks/netbed.py up --hosts 3 --rtt-ms 25   (Ctrl-C tears it down)
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

# Loaded under its own name: this file is "netbed" too when benchmarks/ is on the path.
_CORE = Path(__file__).resolve().parents[1] / "tests" / "netbed.py"
_spec = importlib.util.spec_from_file_location("reloadctl_test_netbed", _CORE)
assert _spec is not None and _spec.loader is not None
core = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = core  # dataclasses look their module up while it executes
_spec.loader.exec_module(core)

Host = core.Host
NetBed = core.NetBed
make_tls = core.make_tls
sweep_stale = core.sweep_stale
unavailable = core.unavailable

__all__ = ["Host", "NetBed", "make_tls", "sweep_stale", "unavailable"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("sweep", help="remove namespaces and links of runs that are gone")
    up = sub.add_parser("up", help="create a bed (no agents) until Ctrl-C")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument("--rtt-ms", type=float, default=25.0)
    args = parser.parse_args()
    if args.cmd == "sweep":
        print("\n".join(sweep_stale()) or "nothing stale")
        return
    reason = unavailable()
    if reason:
        raise SystemExit(f"cannot build a bed: {reason}")
    with NetBed(args.hosts, rtt_ms=args.rtt_ms) as bed:
        for host in bed.hosts:
            print(f"{host.ns}: {host.ip}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
