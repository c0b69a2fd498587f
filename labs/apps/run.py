"""The apps lab: edit real framework apps in a running process, compare with a restart.

Usage: python labs/apps/run.py [--quick] [--json] [APP...]

For each app (``labs/apps/<app>/``: ``src/`` is the app, ``driver.py`` starts it, probes
it and lists the edits) and each of its edits, one at a time from the original source:

1. a live process (``host.py``) starts the app from a fresh copy, serves it and creates
   the state a running process holds; it is probed once (``before``);
2. the edit is written to the copy and the live process reloads the app's modules with
   ``reload_modules``, then is probed again (``live``);
3. a fresh process starts the edited copy and is probed (``restart``).

Each edit is classified:
- ``matches restart``: live == restart (``(warned)`` when the reload also warned);
- ``refused``: the reload was refused with a reason and the app is unchanged (live ==
  before); ``failed`` likewise for a failure that changed nothing;
- ``warned``: live differs from restart and the reload said why;
- ``SILENTLY DIFFERENT``: ``reloaded`` without a warning, yet live differs from restart
  (the bug this lab hunts), or a refusal/failure that changed the app.

``--quick`` runs each app's ``QUICK`` edit only. Exit status 1 when any edit is silently
different or a process misbehaved, else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from host import load_driver  # noqa: E402

APPS = ("sqlalchemy", "flask", "pydantic", "click", "fastapi", "celery", "django", "domain")
TIMEOUT = 60.0


@dataclass
class Outcome:
    """One edit's classification and evidence."""

    app: str
    edit: str
    kind: str
    outcome: str
    reason: str = ""
    statuses: dict[str, str] = field(default_factory=dict)
    live: Any = None
    restart: Any = None
    seconds: float = 0.0


class Host:
    """A ``host.py`` subprocess running one app."""

    def __init__(self, app: str, source: Path) -> None:
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "host.py"), app, str(source)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(source),
        )
        ready = self._read()
        if ready != {"ready": True}:
            raise RuntimeError(f"{app} host did not start: {ready!r}")

    def _read(self) -> Any:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + TIMEOUT
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"host exited: {err[-2000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError("host too slow")
        return json.loads(line)

    def ask(self, command: str) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(timeout=10)
        finally:
            for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()


def apply_edit(root: Path, changes: dict[str, Any]) -> None:
    """Write one edit: ``path -> (old, new)`` (or a list of them) replaces text (``old``
    must occur), ``path -> str`` writes a whole file, ``path -> None`` deletes it."""
    for rel, change in changes.items():
        path = root / rel
        if change is None:
            path.unlink()
        elif isinstance(change, str):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(change)
        else:
            text = path.read_text()
            for old, new in change if isinstance(change, list) else [change]:
                if old not in text:
                    raise ValueError(f"edit does not apply to {rel}: {old!r} not found")
                text = text.replace(old, new, 1)
            path.write_text(text)
        # a new mtime, well after the import (the engine reads the source anyway)
        stamp = time.time() + 10
        if path.exists():
            os.utime(path, (stamp, stamp))


def classify(app: str, edit: Any, before: Any, results: Any, live: Any, restart: Any) -> Outcome:
    name, kind = edit.name, edit.kind
    if not isinstance(results, list):
        return Outcome(app, name, kind, "SILENTLY DIFFERENT", f"engine crashed: {results}")
    statuses = {r["module"]: r["status"] for r in results}
    warnings = [w for r in results for w in r["warnings"]]
    refused = [r for r in results if r["status"] == "refused"]
    failed = [
        r for r in results if r["status"] == "failed" and "RolledBack" not in (r["error"] or "")
    ]
    out = Outcome(app, name, kind, "", statuses=statuses, live=live, restart=restart)
    if refused or failed:
        first = (refused or failed)[0]
        verdict = "refused" if refused else "failed"
        out.reason = first["error"] or ""
        out.outcome = verdict if live == before else f"{verdict.upper()} BUT APP CHANGED"
        if out.outcome != verdict:
            out.outcome = "SILENTLY DIFFERENT"
            out.reason = f"{verdict}, yet the app changed: {out.reason}"
        return out
    if live == restart:
        out.outcome = "matches restart (warned)" if warnings else "matches restart"
        out.reason = "; ".join(warnings)
    elif warnings:
        out.outcome = "warned"
        out.reason = "; ".join(warnings)
    else:
        out.outcome = "SILENTLY DIFFERENT"
        out.reason = f"live {json.dumps(live)[:300]} != restart {json.dumps(restart)[:300]}"
    return out


def run_edit(app: str, driver: Any, edit: Any) -> Outcome:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"appslab-{app}-") as tmp:
        root = Path(tmp) / "src"
        shutil.copytree(HERE / app / "src", root)
        live_host = Host(app, root)
        try:
            before = live_host.ask("probe")
            apply_edit(root, edit.changes)
            results = live_host.ask("reload " + json.dumps(list(driver.MODULES)))
            live = live_host.ask("probe")
        finally:
            live_host.close()
        fresh = Host(app, root)
        try:
            restart = fresh.ask("probe")
        finally:
            fresh.close()
    out = classify(app, edit, before, results, live, restart)
    out.seconds = round(time.perf_counter() - started, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("apps", nargs="*", metavar="APP", help=f"any of {', '.join(APPS)}")
    parser.add_argument("--quick", action="store_true", help="one edit per app")
    parser.add_argument("--json", action="store_true", help="one JSON line per edit")
    args = parser.parse_args(argv)
    apps = args.apps or list(APPS)
    unknown = [a for a in apps if a not in APPS]
    if unknown:
        parser.error(f"unknown app(s): {', '.join(unknown)}")
    outcomes: list[Outcome] = []
    for app in apps:
        driver = load_driver(app)
        edits = [e for e in driver.EDITS if not args.quick or e.name == driver.QUICK]
        for edit in edits:
            try:
                out = run_edit(app, driver, edit)
            except Exception as exc:  # a host that misbehaved is a finding, not a crash
                out = Outcome(
                    app, edit.name, edit.kind, "LAB ERROR", f"{type(exc).__name__}: {exc}"
                )
            outcomes.append(out)
            if args.json:
                print(json.dumps(out.__dict__, default=str), flush=True)
            else:
                reason = out.reason.replace("\n", " ")
                print(f"{app:<10} {edit.name:<28} {out.outcome:<26} {reason[:160]}", flush=True)
    bad = [o for o in outcomes if o.outcome in ("SILENTLY DIFFERENT", "LAB ERROR")]
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.outcome] = counts.get(o.outcome, 0) + 1
    print(json.dumps({"summary": counts, "edits": len(outcomes)}), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
