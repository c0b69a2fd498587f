"""The CLI's dependency floor across typer versions: is there a typer that makes 6x possible?

For each typer release below, a scratch virtualenv (same interpreter, pinned rpyc and
msgpack from constraints.txt) times, interleaved and as medians:

- ``python -c pass`` (the baseline of the CLI start-up target, in that same environment);
- ``python -c "import typer"``;
- ``python -c "import typer, rpyc, msgpack"``: what ``reloadctl reload`` must load at the
  least, whatever reloadctl itself does.

The ratio of the last to the first is the best ``reloadctl reload`` could do with that
typer (``benchmarks/cli_startup.py`` measures the real command). Needs the package index
(pip); about a minute with pip's cache warm. Prints a table and a JSON line.

Usage: python benchmarks/typer_versions.py [--runs N] [SPEC ...]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: typer-slim (no rich, no shellingham) where it exists as its own package, then typer.
SPECS = (
    "typer-slim==0.12.5 click==8.1.7",
    "typer-slim==0.16.1",
    "typer==0.24.1",
    "typer==0.27.3",
    "typer==0.28.0",
    "typer==0.29.2",
)
CASES = {
    "python -c pass": "pass",
    "import typer": "import typer",
    "import typer, rpyc, msgpack": "import typer, rpyc, msgpack",
}


def pins(*names: str) -> list[str]:
    """``name==version`` from constraints.txt for each of ``names``."""
    wanted = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and name.lower() in names:
            wanted[name.lower()] = f"{name}=={version}"
    return [wanted[n] for n in names]


def environment(where: Path, spec: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    python = where / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *spec.split(), *pins("rpyc", "msgpack")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return python


def timed(python: Path, code: str) -> float:
    started = time.perf_counter()
    subprocess.run([str(python), "-c", code], check=True)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("specs", nargs="*", default=list(SPECS))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rc-typer-") as tmp:
        for i, spec in enumerate(args.specs):
            python = environment(Path(tmp) / str(i), spec)
            version = subprocess.run(
                [str(python), "-c", "import typer; print(typer.__version__)"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            for code in CASES.values():  # warm the page cache and write bytecode
                timed(python, code)
            order = list(CASES.items()) * args.runs
            random.shuffle(order)
            samples: dict[str, list[float]] = {}
            for name, code in order:
                samples.setdefault(name, []).append(timed(python, code))
            medians = {name: statistics.median(v) for name, v in samples.items()}
            floor = medians["import typer, rpyc, msgpack"] / medians["python -c pass"]
            rows.append({"spec": spec, "typer": version, **medians, "floor_ratio": floor})
    header = ("install", "typer", "pass ms", "typer ms", "+rpyc ms", "floor")
    print("{:34} {:>7} {:>8} {:>9} {:>9} {:>6}".format(*header))
    for row in rows:
        print(
            f"{row['spec']:34} {row['typer']:>7} {row['python -c pass']:8.1f} "
            f"{row['import typer']:9.1f} {row['import typer, rpyc, msgpack']:9.1f} "
            f"{row['floor_ratio']:5.2f}x"
        )
    best = min(rows, key=lambda r: float(r["floor_ratio"]))
    print(
        f"\nlowest floor: {best['floor_ratio']:.2f}x with {best['spec']} "
        "(reloadctl reload can be no faster than this ratio; the target is 6x)"
    )
    print(json.dumps({"benchmark": "typer_versions", "runs": args.runs, "rows": rows}))


if __name__ == "__main__":
    main()
