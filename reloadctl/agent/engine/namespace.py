"""Applying one module's new code to its live namespace, as a reversible transaction.

Rules:
1. The live module dict is never cleared: the new body runs in it after a snapshot; on any
   exception (``BaseException`` included) the snapshot is restored (update, then delete
   added names) and every object change is undone.
2. After the body ran, each new definition is matched to the old object of the same
   qualname (``adopt``) and the module name is bound to the object kept.
3. Names the old version bound and the new one does not are pruned; names created at run
   time by others stay (once the engine has seen the module's previous execution), and so
   do submodule attributes of a package.
4. ``__before_reload__()`` of the old version runs first (if it raises, nothing changed).
5. A package body runs with its loaded submodules bound as attributes (a fresh import binds
   ``core`` in ``pkg`` when the body imports ``pkg.core``; an already loaded submodule is
   not bound again by the import system).
6. Matching each top-level name is guarded on its own (``faults`` rule 2); an engine error
   anywhere else after the body ran undoes the module and raises ``EngineError``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType, FunctionType, ModuleType

from reloadctl.agent.engine import adapters
from reloadctl.agent.engine.adopt import adopt, adopt_attributes
from reloadctl.agent.engine.classes import fix_instance
from reloadctl.agent.engine.closures import patch_live_closures
from reloadctl.agent.engine.context import (
    AMBIGUOUS,
    Context,
    defined_in,
    is_definition,
    is_translatable,
)
from reloadctl.agent.engine.faults import EngineError, describe
from reloadctl.agent.engine.resolve import Target
from reloadctl.agent.engine.source import class_stores, definition_qualnames
from reloadctl.agent.engine.undo import UndoLog
from reloadctl.results import Action

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

#: Module attributes owned by the import system, never pruned.
SPECIAL: Final = frozenset(
    {
        "__name__",
        "__doc__",
        "__package__",
        "__loader__",
        "__spec__",
        "__file__",
        "__cached__",
        "__builtins__",
        "__path__",
    }
)


class HookFailed(Exception):
    """``__before_reload__`` raised; ``__cause__`` is its exception."""


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one module did: how to undo it and what to report."""

    undo: UndoLog
    snapshot: dict[str, Any]
    defined: frozenset[str]
    actions: tuple[Action, ...]
    warnings: tuple[str, ...]


def old_definitions(
    module: str, snapshot: dict[str, Any], ids: set[int] | None = None
) -> dict[str, Any]:
    filename = snapshot.get("__file__")
    return _old_definitions(module, snapshot, ids, filename if isinstance(filename, str) else None)


def _old_definitions(
    module: str, snapshot: dict[str, Any], ids: set[int] | None, filename: str | None
) -> dict[str, Any]:
    """Index the old version's functions and classes (and class members) by qualname
    (``AMBIGUOUS`` where several share one); add the id of each to ``ids``."""
    found: dict[str, Any] = {}
    todo = [value for value in snapshot.values() if defined_in(value, module, filename)]
    seen: set[int] = set()
    while todo:
        obj = todo.pop(0)
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        qualname = getattr(obj, "__qualname__", None)
        if isinstance(qualname, str) and found.setdefault(qualname, obj) is not obj:
            found[qualname] = AMBIGUOUS  # two old objects, one qualname: match by binding
        if isinstance(obj, type):
            for member in list(vars(obj).values()):
                inners: list[Any]
                if isinstance(member, (classmethod, staticmethod)):
                    inners = [member.__func__]
                elif isinstance(member, property):
                    inners = [member.fget, member.fset, member.fdel]
                else:
                    inners = [member]
                todo.extend(i for i in inners if i is not None and defined_in(i, module, filename))
    if ids is not None:
        ids.update(seen)
    return found


def apply_module(
    target: Target,
    previously_defined: frozenset[str] | None,
    previous_code: CodeType | None = None,
) -> Applied:
    """Run ``target``'s new code in its live module (rules 1-4); raise on failure.

    ``previously_defined`` is the set of names the engine's previous execution of this
    module bound, or None when the engine never ran it (then every name the new version
    does not bind is taken as the old source's and pruned, except submodules).
    ``previous_code`` is the module code the running version came from, when known: its
    class bodies tell which class attributes the old source bound (others were set at run
    time and survive).
    On failure everything is restored before the exception propagates.
    """
    module = target.module
    name = target.name
    ns = module.__dict__
    actions: list[Action] = []
    before = ns.get("__before_reload__")
    if callable(before):
        try:
            before()
        except BaseException as exc:
            raise HookFailed(f"{name}.__before_reload__() raised {type(exc).__name__}") from exc
        actions.append(Action("hook", f"{name}.__before_reload__"))
    undo = UndoLog()
    snapshot = dict(ns)
    _record_entry(undo, name)
    undo.namespace(ns, snapshot, name)
    try:
        _set_spec(module, target)
        # A body with annotations reuses an existing ``__annotations__`` dict (SETUP_ANNOTATIONS),
        # which would keep the old version's entries and look unbound (and so be pruned):
        # start without one, as a fresh import does.
        ns.pop("__annotations__", None)
        if "__doc__" not in target.code.stores:
            ns["__doc__"] = None
        submodules = _bind_submodules(target, ns)
        # framework adapters claim the old version's objects (loaded only when their
        # framework is imported: one dict lookup each otherwise)
        claims = adapters.begin(name, ns, snapshot, undo)
        exec(target.code.code, ns)  # noqa: S102 - executing the module's own source is the job
    except BaseException:
        undo.revert()
        raise
    try:
        replaced_entry = sys.modules.get(name) is not module
        ctx, defined, more = _patch(
            target, snapshot, previously_defined, previous_code, undo, claims=claims
        )
    except (adapters.AdapterRefused, adapters.AdapterFailed):
        undo.revert()  # an adapter's refusal or failure is reported as such (adapters rule 2)
        raise
    except Exception as exc:
        # faults rule 1: the body ran, the engine failed on what it made
        undo.revert()
        raise EngineError(
            f"the engine failed while patching {name} ({describe(exc)}); nothing was changed"
        ) from exc
    except BaseException:
        undo.revert()
        raise
    actions.extend(a for a in more if not (a.kind == "added" and a.name in submodules))
    if replaced_entry:
        ctx.warn(
            f"{name}: the new body put another object in sys.modules[{name!r}]; imports now "
            "get that object (as after a fresh import), references to the module object "
            "keep the patched module"
        )
    return Applied(undo, snapshot, defined, tuple(actions), tuple(ctx.warnings))


_MISSING: Final = object()


def _unowned_twin(new: Any, old: Any) -> bool:
    """True when ``new`` and ``old`` are classes of the same qualname claiming a module that
    does not hold them (classes made by functions: ``make_dataclass`` before 3.12 says
    ``types``): the module binding them owns them, so they are matched like definitions."""
    if not (isinstance(new, type) and isinstance(old, type)) or new is old:
        return False
    try:
        owner = new.__module__
        if owner != old.__module__ or new.__qualname__ != old.__qualname__:
            return False
        claimed = sys.modules.get(owner) if isinstance(owner, str) else None
        held = getattr(claimed, new.__qualname__.partition(".")[0], None)
    except Exception:  # noqa: BLE001 - a hostile class or module: not matched
        return False
    return claimed is not None and held is not new and held is not old


def _value_changed(key: str, old: object, new: object) -> bool:
    """Whether top-level ``key`` now holds a different plain value (definitions, modules and
    dunders are reported elsewhere or not at all); an ``__eq__`` that raises counts as
    changed."""
    if key.startswith("__") and key.endswith("__"):
        return False
    if _is_definition_kind(new) or callable(new):
        return False
    if type(old) is not type(new):
        return True
    try:
        return not bool(old == new)
    except Exception:  # noqa: BLE001 - a user __eq__ may raise (numpy arrays do)
        return True


def _record_entry(undo: UndoLog, name: str) -> None:
    """Record ``sys.modules[name]``: a body may replace (or delete) its own entry."""
    entry = sys.modules.get(name)

    def restore() -> None:
        if sys.modules.get(name) is not entry:
            if entry is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = entry

    undo.record(restore, name)


def _set_spec(module: ModuleType, target: Target) -> None:
    """Point the module's import attributes at the freshly found spec (a module may have
    become a package); recorded by the namespace snapshot like everything else."""
    spec = target.spec
    ns = module.__dict__
    ns["__spec__"] = spec
    ns["__loader__"] = spec.loader
    ns["__package__"] = spec.parent
    if spec.has_location and spec.origin is not None:
        ns["__file__"] = spec.origin
        if spec.cached is not None:
            ns["__cached__"] = spec.cached
    if spec.submodule_search_locations is not None:
        ns["__path__"] = spec.submodule_search_locations
    else:
        ns.pop("__path__", None)


def _defined(target: Target, snapshot: dict[str, Any], ns: dict[str, Any]) -> frozenset[str]:
    """The names this execution of the body bound: static stores, plus whatever appeared or
    changed during the run, plus (for a body that binds names dynamically) every name."""
    names = set(target.code.stores)
    # anything that appeared or changed during the run was bound by it, however it was
    names.update(key for key, value in ns.items() if snapshot.get(key, _MISSING) is not value)
    exported = star_exports(target.code.star_from) if target.code.star_import else None
    if exported is not None:
        # ``from x import *`` is the only dynamic binding: it bound exactly what ``x``
        # exports now, so a name ``x`` no longer exports is pruned like in a fresh import
        names.update(exported)
    elif target.code.dynamic:
        # ``exec("execute = exec")`` may bind the very object the old run bound: in a body
        # that binds names dynamically, an unchanged name may be its own, so none is pruned
        names.update(ns)
    return frozenset(names & ns.keys())


def star_exports(sources: frozenset[str] | None) -> set[str] | None:
    """The names ``from x import *`` binds now for every ``x`` in ``sources`` (its
    ``__all__``, else its public names), or None when one cannot be told."""
    if sources is None:
        return None
    names: set[str] = set()
    for source in sources:
        module = sys.modules.get(source)
        if module is None:
            return None
        try:
            public = vars(module).get("__all__")
            if public is None:
                names.update(k for k in vars(module) if not k.startswith("_"))
            else:
                names.update(str(k) for k in public)
        except Exception:  # noqa: BLE001 - a hostile __all__: fall back to "every name"
            return None
    return names


def _prune(
    target: Target,
    previously_defined: frozenset[str] | None,
    snapshot: dict[str, Any],
    defined: frozenset[str],
    ns: dict[str, Any],
) -> list[str]:
    """Rule 3: delete the names the old version bound that the new one did not."""
    old_names = previously_defined if previously_defined is not None else frozenset(snapshot)
    pruned: list[str] = []
    prefix = target.name + "."
    for key in sorted(old_names - defined - SPECIAL):
        if key not in ns or ns[key] is not snapshot.get(key, _MISSING):
            continue  # rebound by someone during the run: not ours to remove
        value = ns[key]
        if isinstance(value, ModuleType) and sys.modules.get(prefix + key) is value:
            continue  # a submodule attribute set by the import system
        del ns[key]
        pruned.append(key)
    return pruned


def _bind_submodules(target: Target, ns: dict[str, Any]) -> frozenset[str]:
    """A package body runs with its loaded submodules bound as attributes, as in a fresh
    import, where importing ``pkg.core`` binds ``core`` in ``pkg`` (the body may rely on it
    after ``from .core import x``, and an earlier version may have deleted it). Returns the
    labels of the names bound (not reported as added)."""
    if target.spec.submodule_search_locations is None:
        return frozenset()
    prefix = target.name + "."
    bound: set[str] = set()
    for key, value in list(sys.modules.items()):
        if not key.startswith(prefix) or not isinstance(value, ModuleType):
            continue
        child = key[len(prefix) :]
        if "." not in child and child not in ns:
            ns[child] = value
            bound.add(key)
    return frozenset(bound)


def _patch(
    target: Target,
    snapshot: dict[str, Any],
    previously_defined: frozenset[str] | None,
    previous_code: CodeType | None,
    undo: UndoLog,
    *,
    claims: adapters.Claims | None = None,
) -> tuple[Context, frozenset[str], list[Action]]:
    """After the body ran: match new definitions to old ones (rule 2) and prune (rule 3).
    Each definition and each optional pass is guarded (faults rule 2)."""
    name = target.name
    ns = target.module.__dict__
    actions: list[Action] = []
    all_old: set[int] = set()
    ctx = Context(name, old_definitions(name, snapshot, all_old), undo)
    ctx.old_ids.update(all_old)
    ctx.defines = frozenset(definition_qualnames(target.code.code))
    if previous_code is not None:
        ctx.old_members = class_stores(previous_code)
    old_values = {id(value) for value in snapshot.values()}
    for key, value in ns.items():
        kind = type(value)
        if kind.__itemsize__ and kind.__dictoffset__ and id(value) not in old_values:
            ctx.stuck.setdefault(id(kind), []).append((value, snapshot.get(key)))
    for key, value in list(ns.items()):
        old = snapshot.get(key, _MISSING)
        if old is value:
            continue
        mark = ctx.checkpoint()
        try:
            _match(ctx, ns, key, old, old_values)
        except Exception as exc:  # noqa: BLE001 - faults rule 2: the new object stays
            ctx.restore(mark)
            ns[key] = value
            ctx.act("replaced", key, "the engine could not patch it in place")
            ctx.warn(
                f"{ctx.label(key)}: the engine could not patch the old object in place "
                f"({describe(exc)}); the new object replaces it, references held from "
                "before keep the old code"
            )
        if old is _MISSING and key not in SPECIAL:
            actions.append(Action("added", f"{name}.{key}"))
        elif old is not _MISSING and _value_changed(key, old, value):
            # a plain value the body set again (``PRICES = {...}``, ``CACHE = {}``): tell the
            # user, since this is where state is reset or configuration changes
            actions.append(Action("replaced", f"{name}.{key}", "new value"))
    for key, value in list(ns.items()):
        if snapshot.get(key, _MISSING) is not value and not _is_definition_kind(value):
            _optional(ctx, "an instance of a kept class", fix_instance, ctx, value)
    for value in ctx.instances:
        _optional(ctx, "an instance of a kept class", fix_instance, ctx, value)
    for key, value in list(ns.items()):
        # e.g. ``DEFAULT = Color.RED``: the new member stands for the live one
        chosen = ctx.memo.get(id(value))
        if chosen is not None and chosen is not value:
            ns[key] = chosen
    ctx.translate_containers()
    for key, value in list(ns.items()):
        # ``ERRORS = (Err, KeyError)``: immutable containers are rebuilt and rebound
        if type(value) in (tuple, frozenset) and id(value) not in old_values:
            rebuilt = _optional(ctx, ctx.label(key), ctx.translated, value)
            if rebuilt is not None and rebuilt is not value:
                ns[key] = rebuilt
    if claims is not None:
        claims.finish(ctx)  # keep, re-register or refuse (adapters/__init__.py)
    _optional(ctx, "live closures", patch_live_closures, ctx)
    defined = _defined(target, snapshot, ns)
    pruned = _prune(target, previously_defined, snapshot, defined, ns)
    actions.extend(ctx.actions)
    actions.extend(Action("removed", f"{name}.{key}") for key in pruned)
    return ctx, defined, actions


def _match(ctx: Context, ns: dict[str, Any], key: str, old: Any, old_values: set[int]) -> None:
    """Rule 2 for one top-level name the body bound."""
    value = ns[key]
    if old is not _MISSING and _unowned_twin(value, old):
        # ``D = make_dataclass('D', ...)`` before 3.12 claims ``__module__ = 'types'``
        ctx.old_ids.add(id(old))
        ctx.unowned.add(id(value))
    if is_definition(value, ctx.module) or ctx.made_here(value):
        chosen = adopt(ctx, value, None if old is _MISSING else old)
        if chosen is not value:
            ns[key] = chosen
    elif is_translatable(value) and id(value) not in old_values:
        ctx.containers.append(value)
    elif id(value) not in old_values and not isinstance(value, ModuleType):
        held = adopt_attributes(ctx, value, None if old is _MISSING else old)
        if held is not None:
            ctx.containers.append(held)


def _is_definition_kind(value: Any) -> bool:
    try:
        return isinstance(value, (type, FunctionType, ModuleType))
    except Exception:  # noqa: BLE001 - a hostile __class__: not a definition
        return False


def _optional(ctx: Context, what: str, step: Callable[..., Any], *args: Any) -> Any:
    """Run an optional step; on an exception undo it and warn (faults rule 2)."""
    mark = ctx.checkpoint()
    try:
        return step(*args)
    except Exception as exc:  # noqa: BLE001 - the reload itself does not depend on it
        ctx.restore(mark)
        ctx.warn(f"{ctx.module}: the engine skipped {what} ({describe(exc)})")
        return None
