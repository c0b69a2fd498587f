"""Celery tasks run by a real worker (a solo-pool worker thread in the same process,
consuming from an in-memory broker; results in an in-memory cache backend)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from edits import Edit

MODULES = ("jobs", "jobs.app", "jobs.tasks", "jobs.extra")
QUICK = "task body"
CALLS = [
    ("jobs.tasks.add", (2, 3)),
    ("jobs.scale", (5,)),
    ("jobs.tasks.retries", ()),
    ("jobs.tasks.sub", (5, 3)),
    ("jobs.extra.ping", ()),
]


def start(root: Path) -> dict[str, Any]:
    from celery.contrib.testing.worker import start_worker
    from jobs import tasks
    from jobs.app import app

    stack = contextlib.ExitStack()
    stack.enter_context(
        start_worker(
            app, pool="solo", perform_ping_check=False, loglevel="ERROR", shutdown_timeout=10
        )
    )
    held = {"add": tasks.add, "scale": app.tasks["jobs.scale"]}
    return {"stack": stack, "app": app, "held": held}


def probe(state: dict[str, Any]) -> dict[str, Any]:
    app = state["app"]
    answers: dict[str, Any] = {}
    for name, args in CALLS:
        try:
            answers[name] = app.send_task(name, args=args, queue="jobs").get(timeout=2)
        except Exception as exc:  # unregistered task, timeout: the answer
            answers[name] = type(exc).__name__
    answers["held add.delay"] = (
        state["held"]["add"].apply_async((1, 1), queue="jobs").get(timeout=5)
    )
    answers["held scale()"] = state["held"]["scale"](4)
    answers["registered"] = sorted(n for n in app.tasks if n.startswith("jobs."))
    return answers


def stop(state: dict[str, Any]) -> None:
    state["stack"].close()


EDITS = [
    Edit(
        "task body",
        "edit a handler body",
        {"jobs/tasks.py": ("return x + y", "return x + y + 100")},
    ),
    Edit("constant", "change a constant", {"jobs/tasks.py": ("RATE = 2", "RATE = 3")}),
    Edit(
        "task options",
        "change a decorator's arguments",
        {"jobs/tasks.py": ("max_retries=3", "max_retries=5")},
    ),
    Edit(
        "add task",
        "add a task",
        {
            "jobs/tasks.py": (
                "RATE = 2",
                "RATE = 2\n\n\n@app.task\ndef sub(x, y):\n    return x - y",
            )
        },
    ),
    Edit(
        "rename task function",
        "rename a function",
        {"jobs/tasks.py": ("def scale(x):", "def multiply(x):")},
    ),
    Edit(
        "add module",
        "add a module to a package",
        {
            "jobs/extra.py": "from jobs.app import app\n\n\n@app.task\ndef ping():\n    return 'pong'\n",
            "jobs/tasks.py": ("RATE = 2", "from jobs import extra  # noqa: F401\n\nRATE = 2"),
        },
    ),
]
