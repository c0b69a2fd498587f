"""One running app for the apps lab: start it from a source directory, then obey commands.

Usage: python labs/apps/host.py FRAMEWORK SOURCE_DIR

The framework's driver (``labs/apps/<framework>/driver.py``) starts the app from
SOURCE_DIR (serving it for real where the framework serves: an HTTP server on 127.0.0.1,
a Celery worker thread, a session on an SQLite file) and creates the state a running
process holds (instances, the served app object, the program's command group). Then
each line on stdin is a command, each answer one JSON line on stdout:

- ``probe``: what the running app does now (``driver.probe``), as JSON;
- ``reload ["m1", "m2"]``: ``reload_modules`` of these modules in this process;
- ``quit``.

With ``APPS_LAB_NO_ADAPTERS=1`` the engine runs without its framework adapters (to
measure what they change).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def load_driver(framework: str) -> Any:
    """The driver module of ``framework`` (``labs/apps/<framework>/driver.py``)."""
    path = HERE / framework / "driver.py"
    spec = importlib.util.spec_from_file_location(f"apps_lab_driver_{framework}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def safe_probe(driver: Any, state: Any) -> dict[str, Any]:
    """``driver.probe`` with any exception reported as a value (a broken app is a result)."""
    try:
        return {"ok": True, "answers": driver.probe(state)}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def main() -> int:
    framework, source = sys.argv[1], Path(sys.argv[2])
    sys.dont_write_bytecode = True  # every edit must be read from source
    sys.path.insert(0, str(source))
    driver = load_driver(framework)
    out = sys.stdout
    with contextlib.redirect_stdout(io.StringIO()):  # the app's own chatter stays out
        state = driver.start(source)
    print(json.dumps({"ready": True}), file=out, flush=True)
    from reloadctl.agent import reload_modules

    if os.environ.get("APPS_LAB_NO_ADAPTERS") == "1":  # the engine without adapters
        from reloadctl.agent.engine import adapters

        adapters.ADAPTERS = ()

    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "quit":
            break
        with contextlib.redirect_stdout(io.StringIO()):
            if command == "probe":
                answer: Any = safe_probe(driver, state)
            elif command == "reload":
                try:
                    results = reload_modules(json.loads(argument))
                    answer = [
                        {
                            "module": r.module,
                            "status": r.status,
                            "error": None
                            if r.error is None
                            else f"{r.error.type}: {r.error.message}",
                            "warnings": list(r.warnings),
                        }
                        for r in results
                    ]
                except Exception:
                    answer = {"crash": traceback.format_exc()}
            else:
                answer = {"error": f"unknown command {command!r}"}
        print(json.dumps(answer, default=str), file=out, flush=True)
    stop = getattr(driver, "stop", None)
    if callable(stop):
        stop(state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
