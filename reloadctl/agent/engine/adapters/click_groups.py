"""click groups and typer apps: the group object the program holds keeps its commands and
gains the new ones.

Rules:
1. A ``click.Group`` (or ``click.Command``) re-created by the body at top level is merged
   into the one held from before: its parameters, callback and help become the new
   body's, its commands become the new body's commands plus those other modules added to
   the held group; the module name is bound to the held object again. Commands added or
   removed are reported.
2. A ``typer.Typer`` app re-created by the body is merged the same way (its registered
   commands, groups and callback), so the program's ``app()`` builds the new command
   tree at its next call.
"""

from __future__ import annotations

import sys

from reloadctl.agent.engine.adapters import Adapter, Session, is_instance

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _callback_module(command: Any) -> Any:
    return getattr(getattr(command, "callback", None), "__module__", None)


class ClickGroups(Adapter):
    """click commands/groups and typer apps of the module (see the module rules)."""

    def begin(self, session: Session) -> bool:
        click = sys.modules["click"]
        typer = sys.modules.get("typer")
        kinds: tuple[type, ...] = (click.Command,)
        if typer is not None and is_instance(getattr(typer, "Typer", None), type):
            kinds = (*kinds, typer.Typer)
        self.kinds = kinds
        self.held = {k: v for k, v in session.snapshot.items() if is_instance(v, kinds)}
        return bool(self.held)

    def finish(self, session: Session) -> None:
        click = sys.modules["click"]
        done: set[int] = set()
        for key, old in self.held.items():
            new = session.namespace.get(key)
            if new is old or type(new) is not type(old) or id(old) in done:
                continue
            done.add(id(old))
            label = f"{session.name}.{key}"
            saved = dict(vars(old))

            def undo(obj: Any = old, state: dict[str, Any] = saved) -> None:
                vars(obj).clear()
                vars(obj).update(state)

            session.undo.record(undo, label)
            if is_instance(old, click.Group):
                self._merge_group(session, label, old, new)
            elif is_instance(old, click.Command):
                vars(old).update(vars(new))
            else:
                self._merge_typer(session, old, new)
            session.namespace[key] = old
            session.act("merged", label, "the held object takes the new definition")

    def _merge_group(self, session: Session, label: str, old: Any, new: Any) -> None:
        others = {
            name: cmd
            for name, cmd in old.commands.items()
            if name not in new.commands and _callback_module(cmd) != session.name
        }
        before = set(old.commands)
        vars(old).update(vars(new))
        old.commands = {**new.commands, **others}
        for name in sorted(set(old.commands) - before):
            session.act("added", f"{label} command {name}")
        for name in sorted(before - set(old.commands)):
            session.act("removed", f"{label} command {name}")

    def _merge_typer(self, session: Session, old: Any, new: Any) -> None:
        ctx = session.context
        vars(old).update(vars(new))
        for info in [*old.registered_commands, old.registered_callback]:
            callback = getattr(info, "callback", None)
            if ctx is not None and callback is not None:
                info.callback = ctx.resolved(callback)
