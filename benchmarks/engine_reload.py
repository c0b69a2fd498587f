"""Engine reload cost: ``reload_modules`` vs ``importlib.reload``, and with a big heap.

A generated module with 50 functions and 10 classes (4 methods, a property, a class
attribute each); every definition differs between v1 and v2, and each timed reload
alternates between them, so every reload really applies new code. Both engines compile
from source (``sys.dont_write_bytecode``), in the same process, interleaved.

1. median ``reload_modules`` / median ``importlib.reload`` of the same source (target <= 3x);
2. median ``reload_modules`` with 1,000,000 extra live gc-tracked objects / without
   (target <= 1.1x: the default path never walks the heap).

Prints a table and a JSON line; a few seconds. Usage: python benchmarks/engine_reload.py
[--runs N]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from reloadctl.agent.engine import reload_modules

TARGET_VS_IMPORTLIB = 3.0
TARGET_HEAP = 1.1
FUNCTIONS = 50
CLASSES = 10


def source(version: int) -> str:
    """The benchmark module's source; every definition depends on ``version``."""
    lines = ["import functools", f"VERSION = {version}", ""]
    for i in range(FUNCTIONS):
        lines += [f"def func_{i}(x, y={version}):", f"    return x * {i} + y + {version}", ""]
    for c in range(CLASSES):
        lines += [
            f"class Klass{c}:",
            f"    LIMIT = {c * 10 + version}",
            "    def __init__(self, v=0):",
            "        self.v = v",
        ]
        for k in range(4):
            lines += [f"    def meth_{k}(self, a):", f"        return self.v + a * {k} + {version}"]
        lines += [
            "    @property",
            "    def doubled(self):",
            f"        return self.v * 2 + {version}",
            "",
        ]
    return "\n".join(lines) + "\n"


def write(path: Path, text: str, tick: list[int]) -> None:
    path.write_text(text)
    tick[0] += 2
    st = path.stat()
    os.utime(path, (st.st_atime + tick[0], st.st_mtime + tick[0]))


def measure(runs: int, root: Path, blocks: int = 4) -> dict[str, float]:
    """Median seconds per reload: ``ours``/``importlib`` with an empty heap, and
    ``ours_heap``/``importlib_heap`` with 1,000,000 extra live gc-tracked objects. The two
    heaps alternate in ``blocks`` blocks so machine noise hits both alike."""
    tick = [0]
    ours, theirs = root / "bench_ours.py", root / "bench_theirs.py"
    write(ours, source(0), tick)
    write(theirs, source(0), tick)
    importlib.invalidate_caches()
    mod_ours = importlib.import_module("bench_ours")
    mod_theirs = importlib.import_module("bench_theirs")
    held = [mod_ours.func_0, mod_ours.Klass0(1)]
    times: dict[str, list[float]] = {
        k: [] for k in ("ours", "importlib", "ours_heap", "importlib_heap")
    }
    version = 0
    per_block = max(1, runs // blocks)
    for block in range(blocks * 2):
        heavy = block % 2 == 1
        ballast = [[i] for i in range(1_000_000)] if heavy else []
        gc.collect()
        suffix = "_heap" if heavy else ""
        for _ in range(per_block):
            version += 1
            text = source(version)
            write(ours, text, tick)
            write(theirs, text, tick)
            start = time.perf_counter()
            (result,) = reload_modules(["bench_ours"])
            times["ours" + suffix].append(time.perf_counter() - start)
            assert result.status == "reloaded", result
            start = time.perf_counter()
            importlib.reload(mod_theirs)
            times["importlib" + suffix].append(time.perf_counter() - start)
        del ballast
    assert held[0](1) == 2 * version and held[1].meth_1(1) == 1 + 1 + version
    for name in ("bench_ours", "bench_theirs"):
        sys.modules.pop(name, None)
    gc.collect()
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60, help="reloads per heap size")
    args = parser.parse_args()
    sys.dont_write_bytecode = True
    with tempfile.TemporaryDirectory(prefix="rl_bench_") as tmp:
        sys.path.insert(0, tmp)
        try:
            m = measure(args.runs, Path(tmp))
        finally:
            sys.path.remove(tmp)
    ratio_importlib = m["ours"] / m["importlib"]
    ratio_heap = m["ours_heap"] / m["ours"]
    rows = [
        ("importlib.reload (baseline)", m["importlib"] * 1000, ""),
        ("reload_modules", m["ours"] * 1000, f"{ratio_importlib:.2f}x importlib"),
        ("importlib.reload, 1M objects", m["importlib_heap"] * 1000, ""),
        ("reload_modules, 1M objects", m["ours_heap"] * 1000, f"{ratio_heap:.2f}x empty heap"),
    ]
    print(f"engine reload: {FUNCTIONS} functions + {CLASSES} classes, median of {args.runs} runs")
    print(f"{'case':32} {'median ms':>10}  ratio")
    for name, ms, note in rows:
        print(f"{name:32} {ms:10.2f}  {note}")
    ok = ratio_importlib <= TARGET_VS_IMPORTLIB and ratio_heap <= TARGET_HEAP
    print(
        json.dumps(
            {
                "benchmark": "engine_reload",
                "python": sys.version.split()[0],
                "runs": args.runs,
                "importlib_ms": round(m["importlib"] * 1000, 3),
                "reload_modules_ms": round(m["ours"] * 1000, 3),
                "ratio_vs_importlib": round(ratio_importlib, 3),
                "target_vs_importlib": TARGET_VS_IMPORTLIB,
                "reload_modules_1m_objects_ms": round(m["ours_heap"] * 1000, 3),
                "ratio_1m_objects": round(ratio_heap, 3),
                "target_1m_objects": TARGET_HEAP,
                "ok": ok,
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
