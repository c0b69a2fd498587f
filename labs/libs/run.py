"""The real-code lab: upgrade real libraries to their next release inside a live process.

For each library: download two consecutive sdists (cached), import release 1 in a fresh
interpreter from a source tree, overwrite the tree with release 2, upgrade the process once
(one call with every module name, sorted), probe the references held from before, and run
release 2's own test suite in that same process. The same suite in a fresh release-2
process is the ceiling. Methods, each in its own fresh process, measured in the same run:
reloadctl's engine, ``importlib.reload`` (sorted, and in dependency order), IPython's
``superreload`` and jurigged (where installable).

Usage::

    python labs/libs/run.py [--quick] [--methods M,...] [--json OUT] [--write-docs] [LIB...]

Downloads and the lab's own venv (pytest and each library's test deps) are cached under
``${XDG_CACHE_HOME:-~/.cache}/reloadctl-labs``. Exit status 0 when every library's hot
upgrade with reloadctl passed as many tests as the ceiling and every probe held.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

from libraries import BASE, LIBRARIES, QUICK, Library, by_name  # noqa: E402

METHODS = ("ceiling", "reloadctl", "importlib-sorted", "importlib-deps", "superreload", "jurigged")
DOCS = REPO / "docs" / "real-libraries.md"
#: Seconds one worker (one library, one method, its whole suite) may take.
WORKER_TIMEOUT = 600
#: Exit status when nothing could be downloaded or installed (no registry reachable).
UNAVAILABLE = 75
BEGIN, END = "<!-- lab:begin -->", "<!-- lab:end -->"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    path = Path(base) / "reloadctl-labs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- downloads and the lab venv -------------------------------------------------------------


class Unavailable(RuntimeError):
    """A download or an install was impossible (no registry reachable)."""


def pip(python: str, *args: str, timeout: float = 900) -> None:
    cmd = [python, "-m", "pip", "--disable-pip-version-check", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise Unavailable(f"{' '.join(cmd)} failed:\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}")


def sdist(name: str, version: str) -> Path:
    """The unpacked sdist of ``name==version`` (downloaded once)."""
    where = cache_dir() / "sdists" / f"{name}-{version}"
    done = where / ".unpacked"
    if done.exists():
        return Path(done.read_text().strip())
    where.mkdir(parents=True, exist_ok=True)
    archives = [p for p in where.iterdir() if p.suffix in (".gz", ".zip") and p.is_file()]
    if not archives:
        log(f"  downloading {name}=={version} (sdist)")
        pip(
            sys.executable,
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
            str(where),
            f"{name}=={version}",
        )
        archives = [p for p in where.iterdir() if p.suffix in (".gz", ".zip") and p.is_file()]
    if not archives:
        raise Unavailable(f"no sdist of {name}=={version}")
    target = where / "src"
    shutil.rmtree(target, ignore_errors=True)
    if archives[0].suffix == ".zip":
        shutil.unpack_archive(archives[0], target)
    else:
        with tarfile.open(archives[0]) as tar:
            if sys.version_info >= (3, 12):
                tar.extractall(target, filter="data")
            else:
                tar.extractall(target)
    (root,) = [p for p in target.iterdir() if p.is_dir()]
    done.write_text(str(root))
    return root


def lab_python(libs: list[Library], methods: list[str]) -> str:
    """The lab venv's interpreter, with pytest, the comparison tools and every test dep."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    venv = cache_dir() / f"venv-{version}"
    python = str(venv / "bin" / "python")
    if not Path(python).exists():
        log(f"  creating the lab venv {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if not (venv / ".pytest-installed").exists():
        # Unavailable: the lab cannot run
        pip(python, "install", "-q", "pytest>=8,<9", "pytest-timeout>=2.3,<3")
        (venv / ".pytest-installed").write_text("")
    wanted: list[str] = []
    wanted += [
        b
        for b in BASE
        if b.split(">")[0].split("=")[0] in ("ipython", "jurigged")
        and (
            (b.startswith("ipython") and "superreload" in methods)
            or (b.startswith("jurigged") and "jurigged" in methods)
        )
    ]
    for lib in libs:
        wanted += list(lib.deps)
    stamp = venv / ".lab-installed"
    have = set(stamp.read_text().split("\n")) if stamp.exists() else set()
    missing = [w for w in dict.fromkeys(wanted) if w not in have]
    for item in missing:
        try:
            pip(python, "install", "-q", item)
            have.add(item)
        except Unavailable as exc:
            log(f"  could not install {item} in the lab venv: {str(exc)[-300:]}")
    stamp.write_text("\n".join(sorted(have)))
    return python


# -- one library ---------------------------------------------------------------------------


def prepare_tree(lib: Library, work: Path, method: str) -> tuple[Path, Path, Path]:
    """A work tree: release 2's sdist (its tests and config), with release 1's library
    files in place (release 2's for the ceiling). Returns (tree, live root, release-2 root)."""
    old, new = sdist(lib.name, lib.old), sdist(lib.name, lib.new)
    tree = work / f"{lib.name}-{method}"
    shutil.copytree(new, tree, ignore=shutil.ignore_patterns("__pycache__"))
    live = tree / lib.root
    if method != "ceiling":
        for top in lib.packages:
            for suffix in ("", ".py"):
                shutil.rmtree(live / f"{top}{suffix}", ignore_errors=True)
                if (live / f"{top}{suffix}").is_file():
                    (live / f"{top}{suffix}").unlink()
                src = old / lib.root / f"{top}{suffix}"
                if src.is_dir():
                    shutil.copytree(src, live / top, ignore=shutil.ignore_patterns("__pycache__"))
                elif src.is_file():
                    shutil.copyfile(src, live / f"{top}{suffix}")
    # packages that read their own version (importlib.metadata) need distribution metadata
    info = live / f"{lib.name}-{lib.new}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {lib.name}\nVersion: {lib.new}\n")
    return tree, live, new / lib.root


def measure(lib: Library, method: str, python: str, work: Path) -> dict[str, Any]:
    tree, live, new_root = prepare_tree(lib, work, method)
    out = work / f"{lib.name}-{method}.json"
    spec = {
        "method": method,
        "tree": str(tree),
        "live": str(live),
        "new": str(new_root),
        "packages": list(lib.packages),
        "tests": list(lib.tests),
        "pytest_args": list(lib.pytest_args),
        "out": str(out),
    }
    spec_path = work / f"{lib.name}-{method}.spec.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    # reloadctl comes from this checkout; nothing of the project's venv leaks in
    env["PYTHONPATH"] = str(REPO) if method == "reloadctl" else ""
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [python, str(HERE / "worker.py"), str(spec_path)],
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT,
            env=env,
            check=False,
        )
        detail = proc.stderr[-2000:]
    except subprocess.TimeoutExpired:
        detail = f"timed out after {WORKER_TIMEOUT} s"
    if not out.exists():
        return {"method": method, "crash": f"worker died: {detail}"}
    result: dict[str, Any] = json.loads(out.read_text())
    result["wall_s"] = round(time.perf_counter() - started, 1)
    shutil.rmtree(tree, ignore_errors=True)
    return result


def run_library(lib: Library, methods: list[str], python: str, work: Path) -> dict[str, Any]:
    log(f"{lib.name} {lib.old} -> {lib.new}")
    sdist(lib.name, lib.old), sdist(lib.name, lib.new)
    results = {}
    for method in methods:
        results[method] = measure(lib, method, python, work)
        log(f"  {method:17} {summary(results[method], results.get('ceiling'))}")
    return {"library": lib.name, "old": lib.old, "new": lib.new, "methods": results}


# -- reporting -----------------------------------------------------------------------------


def passed(result: dict[str, Any] | None) -> int | None:
    if not result or "tests" not in result:
        return None
    return int(result["tests"]["passed"])


def summary(result: dict[str, Any], ceiling: dict[str, Any] | None) -> str:
    if "crash" in result and "tests" not in result:
        return "CRASH " + result["crash"].strip().splitlines()[-1][:150]
    tests = f"{passed(result)}/{passed(ceiling) if ceiling else '?'} tests"
    if "probes" in result:
        probes = result["probes"]
        tests += f", probes {probes['ok']}/{probes['total']}, {result['reload_ms']:.0f} ms"
    return tests


def cell(result: dict[str, Any] | None, ceiling: dict[str, Any] | None) -> str:
    if result is None:
        return "-"
    if "tests" not in result:
        return "crash"
    text = f"{passed(result)}/{passed(ceiling)}"
    if "probes" in result:
        text += f" · {result['probes']['ok']}/{result['probes']['total']}"
    return text


def table(runs: list[dict[str, Any]], methods: list[str]) -> str:
    cols = [m for m in methods if m != "ceiling"]
    head = ["library", "releases", "reloadctl ms", *cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        res = run["methods"]
        ceiling = res.get("ceiling")
        engine = res.get("reloadctl", {})
        ms = f"{engine['reload_ms']:.0f}" if "reload_ms" in engine else "-"
        row = [run["library"], f"{run['old']} → {run['new']}", ms]
        row += [cell(res.get(m), ceiling) for m in cols]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def verdict(run: dict[str, Any]) -> bool:
    res = run["methods"]
    engine, ceiling = res.get("reloadctl"), res.get("ceiling")
    if not engine or not ceiling or "tests" not in engine or "tests" not in ceiling:
        return False
    probes = engine.get("probes", {})
    return passed(engine) == passed(ceiling) and probes.get("ok") == probes.get("total")


def write_docs(text: str) -> None:
    page = DOCS.read_text() if DOCS.exists() else f"{BEGIN}\n{END}\n"
    before, _, rest = page.partition(BEGIN)
    _, _, after = rest.partition(END)
    DOCS.write_text(f"{before}{BEGIN}\n{text}\n{END}{after}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("libs", nargs="*", help="library names (default: all)")
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    parser.add_argument("--json", help="write every measurement to this file")
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOCS.name}")
    args = parser.parse_args(argv)
    known = by_name()
    names = args.libs or (list(QUICK) if args.quick else [lib.name for lib in LIBRARIES])
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown libraries: {', '.join(unknown)} (known: {', '.join(known)})")
    methods = [m for m in args.methods.split(",") if m]
    if "ceiling" not in methods:
        methods.insert(0, "ceiling")
    libs = [known[n] for n in names]
    try:
        python = lab_python(libs, methods)
    except Unavailable as exc:
        log(f"the lab venv cannot be set up: {str(exc)[-500:]}")
        return UNAVAILABLE
    runs = []
    unavailable = 0
    with tempfile.TemporaryDirectory(prefix="reloadctl-lab-") as tmp:
        for lib in libs:
            try:
                runs.append(run_library(lib, methods, python, Path(tmp)))
            except Unavailable as exc:
                unavailable += 1
                log(f"  {lib.name}: unavailable: {str(exc)[-300:]}")
    if not runs and unavailable:
        return UNAVAILABLE
    text = table(runs, methods)
    py = f"{sys.version_info[0]}.{sys.version_info[1]}"
    footer = (
        f"\nPython {py}; cells: tests passed after the hot upgrade / in a fresh release-2 "
        "process · held references running release 2's code / probed."
    )
    print(text + footer)
    if args.json:
        Path(args.json).write_text(json.dumps({"python": py, "runs": runs}, indent=1))
    if args.write_docs:
        write_docs(f"Python {py}, measured by `python labs/libs/run.py`:\n\n{text}\n{footer}")
    good = [run for run in runs if verdict(run)]
    print(f"reloadctl matched the ceiling with every probe on {len(good)}/{len(runs)} libraries")
    return 0 if runs and len(good) == len(runs) == len(libs) else 1


if __name__ == "__main__":
    sys.exit(main())
