"""IPython autoreload: reloadctl.ipython vs IPython's own extension, in the same process.

Both extensions' ``AutoreloadMagics`` are built on one real ``InteractiveShell`` (neither is
registered, so they do not compete for ``%autoreload``) and put in mode 2.

1. Per-cell cost of the changed-file check (``pre_run_cell`` + ``post_execute`` hooks, as
   IPython calls them around every cell) when nothing changed, with 1,000 imported modules:
   a) 1,000 modules of which about 50 are the project's (the rest: the standard library, IPython,
      numpy, pygments...); b) worst case: 1,000 more project modules, every one watched.
   Target: <= 1x IPython's.
2. Reload of a changed module (50 functions, 10 classes, every definition changed):
   IPython's ``superreload`` vs ``reload_modules``, and each extension's whole cell (check +
   reload) in mode 2 (IPython's mode 2 first tries its "deduper" partial reload).
   Target: faster than superreload.

Prints a table and a JSON line; about a minute. Usage: python
benchmarks/ipython_autoreload.py [--cells N] [--reloads N]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import pkgutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_CHECK = 1.0
TARGET_RELOAD = 1.0
PROJECT_SMALL = 50
PROJECT_LARGE = 1000
TOTAL = 1000
FILL_PACKAGES = ("numpy", "IPython", "jupyter_client", "ipykernel", "pygments", "email", "xml")
FUNCTIONS = 50
CLASSES = 10


def source(version: int) -> str:
    """The reloaded module's source (as benchmarks/engine_reload.py); every definition
    depends on ``version``."""
    lines = [f"VERSION = {version}", ""]
    for i in range(FUNCTIONS):
        lines += [f"def func_{i}(x, y={version}):", f"    return x * {i} + y + {version}", ""]
    for c in range(CLASSES):
        lines += [f"class Klass{c}:", f"    LIMIT = {c * 10 + version}"]
        lines += ["    def __init__(self, v=0):", "        self.v = v"]
        for k in range(4):
            lines += [f"    def meth_{k}(self, a):", f"        return self.v + a * {k} + {version}"]
        lines += [
            "    @property",
            "    def doubled(self):",
            f"        return self.v * 2 + {version}",
        ]
        lines += [""]
    return "\n".join(lines) + "\n"


def write(path: Path, text: str, tick: list[int]) -> None:
    """Save ``text`` with an mtime later than any before (both extensions see it)."""
    path.write_text(text)
    tick[0] += 2
    st = path.stat()
    os.utime(path, (st.st_atime + tick[0], st.st_mtime + tick[0]))


def fill_library_modules(limit: int) -> None:
    """Import library modules (submodules of FILL_PACKAGES) until ``limit`` are loaded."""
    for package_name in FILL_PACKAGES:
        if len(sys.modules) >= limit:
            return
        try:
            package = importlib.import_module(package_name)
        except ImportError:
            continue
        for info in pkgutil.walk_packages(package.__path__, package_name + "."):
            if len(sys.modules) >= limit:
                return
            if any(
                part in {"tests", "testing", "_pyinstaller", "f2py"}
                for part in info.name.split(".")
            ):
                continue
            try:
                importlib.import_module(info.name)
            except Exception:  # optional dependencies of some submodules
                continue


def project_modules(root: Path, prefix: str, count: int) -> list[str]:
    """Write and import ``count`` small project modules under ``root``."""
    names = []
    for i in range(count):
        name = f"{prefix}{i}"
        (root / f"{name}.py").write_text(f"VALUE = {i}\n\ndef f(x):\n    return x + VALUE\n")
        names.append(name)
    importlib.invalidate_caches()
    for name in names:
        importlib.import_module(name)
    return names


def cell_cost(magics: list[Any], info: Any, cells: int, blocks: int = 15) -> list[float]:
    """Median over ``blocks`` of the mean seconds per cell (pre_run_cell + post_execute)
    for each of ``magics``, interleaved block by block."""
    per: list[list[float]] = [[] for _ in magics]
    for _ in range(blocks):
        for i, m in enumerate(magics):
            pre, post = m.pre_run_cell, m.post_execute_hook
            start = time.perf_counter()
            for _ in range(cells):
                pre(info)
                post()
            per[i].append((time.perf_counter() - start) / cells)
    return [statistics.median(p) for p in per]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200, help="cells per timed block")
    parser.add_argument("--reloads", type=int, default=20, help="reloads per case")
    args = parser.parse_args()
    sys.dont_write_bytecode = True

    from IPython.core.interactiveshell import ExecutionInfo, InteractiveShell
    from IPython.extensions import autoreload as ipython_ext

    from reloadctl.agent import reload_modules
    from reloadctl.ipython.magics import AutoreloadMagics

    # the shell's profile and history go to a scratch directory, not ~/.ipython
    ipython_dir = tempfile.TemporaryDirectory(prefix="rl_ipydir_")
    os.environ["IPYTHONDIR"] = ipython_dir.name
    shell = InteractiveShell.instance()
    info = ExecutionInfo(
        raw_cell="x = 1",
        transformed_cell="x = 1\n",
        store_history=False,
        silent=False,
        shell_futures=True,
        cell_id=None,
    )
    out: dict[str, Any] = {"benchmark": "ipython_autoreload", "python": sys.version.split()[0]}
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="rl_ipy_") as tmp:
        root = Path(tmp)
        sys.path.insert(0, tmp)
        fill_library_modules(TOTAL - PROJECT_SMALL)
        project_modules(root, "proj_small_", TOTAL - len(sys.modules))
        out["modules_a"] = len(sys.modules)

        def pair() -> tuple[Any, Any]:
            theirs = ipython_ext.AutoreloadMagics(shell=shell)
            ours = AutoreloadMagics(shell=shell)
            for m in (theirs, ours):
                m.autoreload("2")
            return theirs, ours

        theirs, ours = pair()
        t_a, o_a = cell_cost([theirs, ours], info, args.cells)
        watched_a = len(ours._reloader.stamps.watched())
        rows += [
            (f"check, {out['modules_a']} modules: IPython", t_a * 1e6, "us/cell"),
            (f"check, {out['modules_a']} modules: ours", o_a * 1e6, f"{o_a / t_a:.3f}x IPython"),
        ]

        project_modules(root, "proj_large_", PROJECT_LARGE)
        out["modules_b"] = len(sys.modules)
        theirs, ours = pair()
        t_b, o_b = cell_cost([theirs, ours], info, max(20, args.cells // 4))
        watched_b = len(ours._reloader.stamps.watched())
        rows += [
            (f"check, {out['modules_b']} modules: IPython", t_b * 1e6, "us/cell"),
            (f"check, {out['modules_b']} modules: ours", o_b * 1e6, f"{o_b / t_b:.3f}x IPython"),
        ]

        # -- 2. reload of a changed module ------------------------------------------------
        tick = [0]
        paths = {n: root / f"{n}.py" for n in ("r_super", "r_ours", "r_cell_ip", "r_cell_ours")}
        for path in paths.values():
            write(path, source(0), tick)
        importlib.invalidate_caches()
        mods = {n: importlib.import_module(n) for n in paths}
        held = {n: (m.func_0, m.Klass0(1)) for n, m in mods.items()}
        theirs, ours = pair()  # both now know the four modules' stamps
        # each cell reloads its own module only (the others are timed on their own)
        theirs._reloader.skip_modules.update(
            dict.fromkeys(("r_super", "r_ours", "r_cell_ours"), True)
        )
        ours._reloader.skip_modules.update(dict.fromkeys(("r_super", "r_ours", "r_cell_ip"), True))
        old_objects: dict[Any, Any] = {}
        times: dict[str, list[float]] = {k: [] for k in paths}
        for version in range(1, args.reloads + 1):
            text = source(version)
            for path in paths.values():
                write(path, text, tick)
            # each timed step starts without the garbage of the previous one
            gc.collect()
            start = time.perf_counter()
            ipython_ext.superreload(mods["r_super"], importlib.reload, old_objects)
            times["r_super"].append(time.perf_counter() - start)
            gc.collect()
            start = time.perf_counter()
            (result,) = reload_modules(["r_ours"])
            times["r_ours"].append(time.perf_counter() - start)
            assert result.status == "reloaded", result
            gc.collect()
            start = time.perf_counter()
            theirs.pre_run_cell(info)
            theirs.post_execute_hook()
            times["r_cell_ip"].append(time.perf_counter() - start)
            gc.collect()
            start = time.perf_counter()
            ours.pre_run_cell(info)
            ours.post_execute_hook()
            times["r_cell_ours"].append(time.perf_counter() - start)
        for name, (func, obj) in held.items():
            v = args.reloads
            assert func(1) == 2 * v and obj.meth_1(1) == 1 + 1 + v, (name, func(1))
        sys.path.remove(tmp)

    shell.history_manager.end_session()
    ipython_dir.cleanup()
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio_reload = med["r_ours"] / med["r_super"]
    rows += [
        ("reload: IPython superreload", med["r_super"] * 1e6, "us"),
        ("reload: reload_modules", med["r_ours"] * 1e6, f"{ratio_reload:.3f}x superreload"),
        ("cell with reload: IPython mode 2", med["r_cell_ip"] * 1e6, "us"),
        (
            "cell with reload: ours mode 2",
            med["r_cell_ours"] * 1e6,
            f"{med['r_cell_ours'] / med['r_cell_ip']:.3f}x IPython",
        ),
    ]
    import IPython

    print(
        f"IPython {IPython.__version__} autoreload vs reloadctl.ipython "
        f"(median; {args.cells} cells per block, {args.reloads} reloads)"
    )
    print(f"{'case':40} {'median':>10}  note")
    for name, value, note in rows:
        print(f"{name:40} {value:10.1f}  {note}")
    ok = o_a <= TARGET_CHECK * t_a and o_b <= TARGET_CHECK * t_b and ratio_reload < TARGET_RELOAD

    out.update(
        {
            "ipython": IPython.__version__,
            "watched_a": watched_a,
            "check_us_ipython_a": round(t_a * 1e6, 2),
            "check_us_ours_a": round(o_a * 1e6, 2),
            "ratio_check_a": round(o_a / t_a, 4),
            "watched_b": watched_b,
            "check_us_ipython_b": round(t_b * 1e6, 2),
            "check_us_ours_b": round(o_b * 1e6, 2),
            "ratio_check_b": round(o_b / t_b, 4),
            "target_check": TARGET_CHECK,
            "reload_us_superreload": round(med["r_super"] * 1e6, 1),
            "reload_us_reload_modules": round(med["r_ours"] * 1e6, 1),
            "ratio_reload": round(ratio_reload, 3),
            "target_reload": TARGET_RELOAD,
            "cell_reload_us_ipython": round(med["r_cell_ip"] * 1e6, 1),
            "cell_reload_us_ours": round(med["r_cell_ours"] * 1e6, 1),
            "ok": ok,
        }
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
