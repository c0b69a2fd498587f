"""Celery tasks: an edited task is re-registered under the same name, as the same object.

Celery's ``@app.task`` returns the task already registered under a name, ignoring the new
function: without this adapter a reload left every task running its old body.

Rules:
1. Before the body runs, the module's tasks (task objects at top level whose function the
   module defines) are taken out of their app's registry, so the body's ``@app.task``
   creates them again from the new code and options.
2. Afterwards each old task object takes the new one's definition (its run function
   patched in place, since a worker's tracer holds it; options such as ``max_retries``
   or ``rate_limit`` from the new class) and goes back into the registry under its
   name; the module name is bound to it. The worker's and every caller's reference is
   that object, so they run the new body at once.
3. A task the new source no longer defines stays out of the registry (as after a
   restart; reported ``removed``). A task added by the reload is registered; a warning
   says that a worker process started before the reload does not consume it until it
   restarts (its consumer's task table was built at startup); eager and in-process calls
   work.
4. Celery's shared-task callbacks of the old version (run when any app is finalized later)
   are dropped; the new body's replace them. A task still pending in an app that was not
   finalized yet (no worker started, ``app.tasks`` never read) is not claimed: finalize
   the app first (a worker does at start).
5. A Celery app re-created by the body (its module reloaded) is not swapped: the held
   app, the one the worker consumes with, stays bound and takes the new body's settings
   (a changed broker or backend URL warns: the worker keeps its connection), so the
   tasks modules reloaded after it register on the held app.
"""

from __future__ import annotations

import sys
from types import FunctionType

from reloadctl.agent.engine.adapters import Adapter, Session, is_instance
from reloadctl.agent.engine.adopt import adopt

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

_NEVER: Final = frozenset({"__dict__", "__weakref__"})
_MISSING: Final = object()


def _task_class() -> Any:
    """Celery's ``Task`` class (None when ``celery.app.task`` is not loaded)."""
    task = getattr(sys.modules.get("celery.app.task"), "Task", None)
    return task if is_instance(task, type) else None


def _evaluated(value: Any) -> Any:
    """The task behind a Celery proxy (``@app.task`` before the app is finalized) once it
    was evaluated; ``value`` itself otherwise (a pending proxy is never forced)."""
    local = sys.modules.get("celery.local")
    proxy = getattr(local, "PromiseProxy", None)
    if not is_instance(proxy, type) or type(value) is not proxy:
        return value
    pending: Any = value
    return pending._get_current_object() if pending.__evaluated__() else value


class CeleryTasks(Adapter):
    """Celery task objects of the module (see the module rules)."""

    def begin(self, session: Session) -> bool:
        task_class = _task_class()
        if task_class is None:
            return False
        celery_class = getattr(sys.modules.get("celery.app.base"), "Celery", None)
        self.held_apps = {
            k: v
            for k, v in session.snapshot.items()
            if is_instance(celery_class, type) and is_instance(v, celery_class)
        }
        self.tasks: dict[str, Any] = {}
        self.names: dict[str, str] = {}
        self.apps: dict[int, Any] = {}
        for key, bound in session.snapshot.items():
            value: Any = _evaluated(bound)
            if type(value).__module__ != session.name or not is_instance(value, task_class):
                continue
            app = value._get_app()
            registry = app._tasks
            if registry.get(value.name) is not value:
                continue
            self.tasks[value.name] = value
            self.names[value.name] = key
            self.apps[id(app)] = app

            def undo(reg: Any = registry, name: str = value.name, task: Any = value) -> None:
                reg[name] = task

            session.undo.record(undo, f"{session.name}.{key} (Celery task)")
            registry.pop(value.name, None)  # rule 1
        self.before = {id(a): set(a._tasks) for a in self.apps.values()}
        if self.tasks:
            self._forget_finalizers(session)
        return bool(self.tasks or self.held_apps)

    def _forget_finalizers(self, session: Session) -> None:
        """Rule 4: the old version's "register me on every app" callbacks go (the body
        adds the new version's), or an app finalized later warns of duplicate names."""
        state = sys.modules.get("celery._state")
        callbacks = getattr(state, "_on_app_finalizers", None)
        if not is_instance(callbacks, set):
            return
        before = set(callbacks)
        mine = {c for c in before if _registers(c, session.name)}
        name = session.name

        def undo() -> None:
            # a failed body may have added its own callbacks: they register discarded code
            callbacks.difference_update(
                {c for c in callbacks if c not in before and _registers(c, name)}
            )
            callbacks.update(mine)

        session.undo.record(undo, f"{session.name} (Celery)")
        callbacks.difference_update(mine)

    def finish(self, session: Session) -> None:
        for key, app in self.held_apps.items():
            new_app = session.namespace.get(key)
            if new_app is not app and type(new_app) is type(app):
                self._keep_app(session, key, app, new_app)
        for name, old in self.tasks.items():
            registry = old._get_app()._tasks
            new = registry.get(name)
            label = f"{session.name}.{self.names[name]}"
            if new is None:
                session.act("removed", label, f"task {name} unregistered")
                continue
            if new is not old:
                self._take(session, old, new, label)
            registry[name] = old
            for key, value in list(session.namespace.items()):
                if value is new or (_evaluated(value) is new and key in self.names.values()):
                    session.namespace[key] = old
        for app in self.apps.values():
            for name in sorted(set(app._tasks) - self.before[id(app)] - set(self.tasks)):
                session.warn(
                    f"task {name} is new: a worker process started before this reload "
                    "rejects its messages as unregistered until it restarts (eager and "
                    "in-process calls work)"
                )

    def _keep_app(self, session: Session, key: str, app: Any, new: Any) -> None:
        """Rule 5: the held app stays (the worker consumes with it); the new body's
        settings go into its configuration; tasks the body registered on the new app are
        registered on the held one."""
        label = f"{session.name}.{key}"
        changes = app.conf.changes
        saved = dict(changes)
        tasks = dict(app._tasks)

        def undo() -> None:
            changes.clear()
            changes.update(saved)
            app._tasks.clear()
            app._tasks.update(tasks)

        session.undo.record(undo, label)
        new_changes = dict(new.conf.changes)
        moved = {k: v for k, v in new_changes.items() if saved.get(k, _MISSING) != v}
        app.conf.update(moved)
        for name, task in list(new._tasks.items()):
            if name not in app._tasks:
                app._tasks[name] = task
        session.namespace[key] = app
        session.act("kept", label, "the running Celery app takes the new settings")
        for setting in ("broker_url", "result_backend", "broker", "backend"):
            if setting in moved:
                session.warn(
                    f"{label}: {setting} changed; a running worker keeps its connection "
                    "until it restarts"
                )

    def _take(self, session: Session, old: Any, new: Any, label: str) -> None:
        """Rule 2: ``old`` takes ``new``'s definition. Its run function is patched in place
        (a worker's tracer, built at startup, holds that function), its options are the
        new class's."""
        cls, new_cls = type(old), type(new)
        saved_cls = {k: v for k, v in vars(cls).items() if k not in _NEVER}
        saved = dict(vars(old))

        def undo() -> None:
            for key in [k for k in vars(cls) if k not in saved_cls and k not in _NEVER]:
                type.__delattr__(cls, key)
            for key, value in saved_cls.items():
                type.__setattr__(cls, key, value)
            vars(old).clear()
            vars(old).update(saved)

        session.undo.record(undo, label)
        old_fun, new_fun = _function(saved_cls.get("run")), _function(vars(new_cls).get("run"))
        kept = new_fun
        if session.context is not None and old_fun is not None and new_fun is not None:
            kept = adopt(session.context, new_fun, old_fun)
        same_function = kept is old_fun and old_fun is not None
        for key, value in vars(new_cls).items():
            if key in _NEVER or (same_function and key in _RUN):
                continue
            type.__setattr__(cls, key, value)
        if "__qualname__" in vars(new):
            old.__qualname__ = new.__qualname__
        if not same_function and "__trace__" in vars(old):
            session.warn(
                f"{label}: the task function could not be patched in place; a worker "
                "started before this reload runs the old body until it restarts"
            )
        session.retract(label)
        session.act("patched", label, f"task {old.name} re-registered")


def _registers(callback: Any, module: str) -> bool:
    """True for a shared-task callback that registers a function of ``module``."""
    for cell in getattr(callback, "__closure__", None) or ():
        try:
            fun = cell.cell_contents
        except ValueError:
            continue
        if getattr(fun, "__module__", None) == module:
            return True
    return False


#: Class attributes that hold the task's function (kept when it was patched in place).
_RUN: Final = frozenset({"run", "__wrapped__", "_decorated_fun"})


def _function(member: Any) -> FunctionType | None:
    inner = member.__func__ if is_instance(member, staticmethod) else member
    return inner if is_instance(inner, FunctionType) else None
