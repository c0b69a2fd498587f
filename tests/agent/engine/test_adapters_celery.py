"""Celery tasks edited live: the registered task object (the one a worker and callers hold)
runs the new body and options, under the same name."""

from __future__ import annotations

import warnings

import pytest
from conftest import Kit

celery = pytest.importorskip("celery")

APP = """
from celery import Celery
app = Celery("__P__capp", broker="memory://", backend="cache+memory://")
app.conf.task_always_eager = True
app.conf.task_store_eager_result = True
"""

TASKS = """
from __P__capp import app

@app.task(max_retries=3)
def add(x, y):
    return x + y
"""


def test_edited_task_is_the_registered_object_with_new_code(kit: Kit) -> None:
    kit.write("capp", APP)
    kit.write("tasks", TASKS)
    capp = kit.load("capp")
    tasks = kit.load("tasks")
    name = f"{tasks.__name__}.add"
    held = capp.app.tasks[name]  # finalizes the app, as a worker does at start
    assert held.delay(2, 5).get() == 7
    kit.write(
        "tasks",
        TASKS.replace("x + y", "x * y").replace("max_retries=3", "max_retries=7")
        + "\n@app.task\ndef sub(x, y):\n    return x - y\n",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = kit.ok("tasks")
        assert capp.app.tasks[name] is held and tasks.add is held
        assert held.delay(2, 5).get() == 10 and held.max_retries == 7
        assert capp.app.tasks[f"{tasks.__name__}.sub"].delay(5, 2).get() == 3
        celery.Celery("another", set_as_current=False).finalize()  # no duplicate warning
    assert any("sub is new" in w and "worker" in w for w in result.warnings)
    kit.write("tasks", TASKS)
    kit.ok("tasks")
    assert held.delay(2, 5).get() == 7 and f"{tasks.__name__}.sub" not in capp.app.tasks


def test_failed_body_leaves_the_registry(kit: Kit) -> None:
    kit.write("capp", APP)
    kit.write("tasks", TASKS)
    capp = kit.load("capp")
    tasks = kit.load("tasks")
    name = f"{tasks.__name__}.add"
    held = capp.app.tasks[name]
    kit.write("tasks", TASKS.replace("x + y", "x * y") + "\nraise ValueError('no')\n")
    assert kit.reload_one("tasks").status == "failed"
    assert capp.app.tasks[name] is held and held.delay(2, 5).get() == 7


def test_app_module_reloaded_with_tasks_keeps_the_held_app(kit: Kit) -> None:
    """The app module's body makes a new Celery app: the held one (a worker's) stays, takes
    the new settings, and the tasks reloaded after it register on it."""
    kit.write("capp", APP)
    kit.write("tasks", TASKS)
    capp = kit.load("capp")
    tasks = kit.load("tasks")
    held_app = capp.app
    held = held_app.tasks[f"{tasks.__name__}.add"]
    kit.write("capp", APP + "app.conf.task_default_rate_limit = '10/s'\n")
    kit.write("tasks", TASKS.replace("x + y", "x - y"))
    results = kit.reload("capp", "tasks")
    assert [r.status for r in results] == ["reloaded", "reloaded"], results
    assert capp.app is held_app and held_app.conf.task_default_rate_limit == "10/s"
    assert held_app.tasks[f"{tasks.__name__}.add"] is held and held.delay(5, 2).get() == 3
