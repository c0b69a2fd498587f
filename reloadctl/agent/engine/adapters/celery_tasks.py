"""Celery tasks: an edited task is re-registered under the same name, as the same object.

Celery's ``@app.task`` returns the task already registered under a name, ignoring the new
function: without this adapter a reload left every task running its old body.

Rules:
1. Before the body runs, the module's tasks (task objects at top level whose function the
   module defines) are taken out of their app's registry, so the body's ``@app.task``
   creates them again from the new code and options.
2. Afterwards each old task object takes the new one's definition (run function,
   options such as ``max_retries`` or ``rate_limit``) and goes back into the registry
   under its name; the module name is bound to it. The worker's and every caller's
   reference is that object, so they run the new body at once.
3. A task the new source no longer defines stays out of the registry (as after a
   restart; reported ``removed``). A task added by the reload is registered; a warning
   says that a worker process started before the reload does not consume it until it
   restarts (its consumer's task table was built at startup); eager and in-process calls
   work.
4. Celery's shared-task callbacks of the old version (run when any app is finalized later)
   are dropped; the new body's replace them. A task still pending in an app that was not
   finalized yet (no worker started, ``app.tasks`` never read) is not claimed: finalize
   the app first (a worker does at start).
"""

from __future__ import annotations

import sys

from reloadctl.agent.engine.adapters import Adapter, Session

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

_NEVER: Final = frozenset({"__dict__", "__weakref__"})


def _task_class() -> Any:
    """Celery's ``Task`` class (None when ``celery.app.task`` is not loaded)."""
    task = getattr(sys.modules.get("celery.app.task"), "Task", None)
    return task if isinstance(task, type) else None


def _evaluated(value: Any) -> Any:
    """The task behind a Celery proxy (``@app.task`` before the app is finalized) once it
    was evaluated; ``value`` itself otherwise (a pending proxy is never forced)."""
    local = sys.modules.get("celery.local")
    proxy = getattr(local, "PromiseProxy", None)
    if not isinstance(proxy, type) or type(value) is not proxy:
        return value
    pending: Any = value
    return pending._get_current_object() if pending.__evaluated__() else value


class CeleryTasks(Adapter):
    """Celery task objects of the module (see the module rules)."""

    def begin(self, session: Session) -> bool:
        task_class = _task_class()
        if task_class is None:
            return False
        self.tasks: dict[str, Any] = {}
        self.names: dict[str, str] = {}
        self.apps: dict[int, Any] = {}
        for key, bound in session.snapshot.items():
            value: Any = _evaluated(bound)
            if type(value).__module__ != session.name or not isinstance(value, task_class):
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
        return bool(self.tasks)

    def _forget_finalizers(self, session: Session) -> None:
        """Rule 4: the old version's "register me on every app" callbacks go (the body
        adds the new version's), or an app finalized later warns of duplicate names."""
        state = sys.modules.get("celery._state")
        callbacks = getattr(state, "_on_app_finalizers", None)
        if not isinstance(callbacks, set):
            return
        mine = set()
        for callback in list(callbacks):
            for cell in getattr(callback, "__closure__", None) or ():
                try:
                    fun = cell.cell_contents
                except ValueError:
                    continue
                if getattr(fun, "__module__", None) == session.name:
                    mine.add(callback)
        if not mine:
            return
        session.undo.record(lambda: callbacks.update(mine), f"{session.name} (Celery)")
        callbacks.difference_update(mine)

    def finish(self, session: Session) -> None:
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
                task = app._tasks[name]
                if type(task).__module__ != session.name:
                    continue
                session.warn(
                    f"task {name} is new: a worker process started before this reload "
                    "rejects its messages as unregistered until it restarts (eager and "
                    "in-process calls work)"
                )

    def _take(self, session: Session, old: Any, new: Any, label: str) -> None:
        """Rule 2: ``old`` (its class and instance dict) becomes ``new``."""
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
        for key, value in vars(new_cls).items():
            if key not in _NEVER:
                type.__setattr__(cls, key, value)
        vars(old).update(vars(new))
        session.retract(label)
        session.act("patched", label, f"task {old.name} re-registered")
