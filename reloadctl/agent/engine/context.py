"""The working state of one module's reload: old objects by qualname, choices made, report."""

from __future__ import annotations

import contextlib
import enum
import functools
from types import CodeType, FunctionType, GetSetDescriptorType, MemberDescriptorType

from reloadctl.agent.engine.faults import describe
from reloadctl.agent.engine.undo import UndoLog
from reloadctl.results import Action

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

#: Stands in the old-object index for a qualname that several old objects share.
AMBIGUOUS: Final = object()


def is_code_kind(obj: Any) -> bool:
    """True for a function or a class, by the object's real type (``isinstance`` would ask
    the object's own ``__class__``, which a proxy may fake or make raise)."""
    return issubclass(type(obj), (FunctionType, type))


def is_definition(obj: Any, module: str) -> bool:
    """True for a function, class or wrapper object defined by ``module``'s source."""
    if not is_code_kind(obj) and not hasattr_safe(obj, "__wrapped__"):
        return False
    try:
        return getattr(obj, "__module__", None) == module and isinstance(
            getattr(obj, "__qualname__", None), str
        )
    except Exception:  # noqa: BLE001 - a hostile __getattr__ must not break a reload
        return False


def defined_in(obj: Any, module: str, filename: str | None) -> bool:
    """``is_definition``, or an old object whose ``__module__`` was rewritten after import
    (packages re-export classes as ``pkg.Class``): its code lives in ``filename``, or its
    ``__module__`` names a parent package of ``module``. (Only a new object of the same
    qualname made by the new body is ever matched with it, so a name merely imported from
    the parent is never touched.)"""
    if is_definition(obj, module):
        return True
    if not is_code_kind(obj):
        return False
    try:
        owner = getattr(obj, "__module__", None)
        if isinstance(owner, str) and module.startswith(owner + "."):
            return True
        if filename is None:
            return False
        if isinstance(obj, FunctionType):
            return obj.__code__.co_filename == filename
        for member in vars(obj).values():
            fn = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
            fn = fn.fget if isinstance(fn, property) else fn
            if isinstance(fn, FunctionType) and fn.__code__.co_filename == filename:
                return True
        return False
    except Exception:  # noqa: BLE001 - a hostile class dict: not ours
        return False


def is_typing_alias(obj: Any) -> bool:
    """True for a subscripted ``typing`` generic alias (``Box[int]``, ``List[Box]``); not
    for the bare special forms (``List``, ``Callable``), which have no ``__args__``."""
    if type(obj).__module__ != "typing":
        return False
    try:
        attrs = object.__getattribute__(obj, "__dict__")
    except Exception:  # noqa: BLE001 - no instance dict (TypeAliasType...): not an alias
        return False
    return type(attrs) is dict and "__origin__" in attrs and type(attrs.get("__args__")) is tuple


#: How deep ``Context.translated`` looks into nested containers (state-machine tables nest).
_MAX_DEPTH: Final = 5
#: Types ``Context.translated`` never looks into.
_ATOMS: Final = frozenset({str, bytes, int, float, bool, type(None), complex})


def is_translatable(obj: Any) -> bool:
    """True for a new object that ``Context.translate_containers`` can re-point in place: a
    plain dict, list or set, a ``functools.partial``, a ``typing`` generic alias."""
    return type(obj) in (dict, list, set, functools.partial) or is_typing_alias(obj)


def static_attr(obj: Any, name: str) -> Any:
    """``obj.name`` found without running any of the object's own code (its instance dict,
    then its class's MRO; descriptors only when built in), or None. ``getattr`` would run
    a ``__getattr__``, and a lazy object's imports the module it stands for (six's moved
    modules import ``dbm.gnu``, a proxy forwards to what it wraps)."""
    kind = type(obj)
    if kind in _ATOMS:
        return None
    if kind.__dictoffset__:
        try:
            attrs = object.__getattribute__(obj, "__dict__")
        except Exception:  # noqa: BLE001 - a property that raises
            attrs = None
        if type(attrs) is dict and name in attrs:
            return attrs[name]
    for klass in kind.__mro__:
        value = klass.__dict__.get(name, _ABSENT)
        if value is _ABSENT:
            continue
        if isinstance(value, (GetSetDescriptorType, MemberDescriptorType)):
            try:
                return value.__get__(obj, type(obj))
            except Exception:  # noqa: BLE001 - an empty slot
                return None
        return None if hasattr(type(value), "__get__") else value
    return None


def _is_named_tuple(kind: type) -> bool:
    fields = kind.__dict__.get("_fields")
    return isinstance(fields, tuple) and callable(getattr(kind, "_make", None))


def hasattr_safe(obj: Any, name: str) -> bool:
    """True when ``static_attr`` finds ``name`` on ``obj`` (and it is not None)."""
    return static_attr(obj, name) is not None


_ABSENT: Final = object()


class Context:
    """State shared by the patchers while one module's new objects are matched to old ones.

    ``memo`` maps ``id(new object)`` to the object that now stands for it (the old object
    when it was patched in place, else the new one); ``keep`` holds every new object looked
    at so those ids stay valid for the whole reload.
    """

    def __init__(self, module: str, old_objects: dict[str, Any], undo: UndoLog) -> None:
        self.module = module
        self.old = old_objects
        #: ids of every old definition (also those whose qualname is AMBIGUOUS in ``old``).
        self.old_ids = {id(obj) for obj in old_objects.values()}
        self.undo = undo
        self.memo: dict[int, Any] = {}
        #: ids of old objects already standing for a new object.
        self.claimed: set[int] = set()
        #: new dicts/lists whose items may refer to new objects that old ones stand for.
        self.containers: list[Any] = []
        #: ids of new classes matched although their ``__module__`` is another module's
        #: (see ``namespace._unowned_twin``).
        self.unowned: set[int] = set()
        #: (kept class, attribute) holding a new tuple/frozenset, rebuilt and set again.
        self.class_immutables: list[tuple[type, str]] = []
        #: class qualname -> names the old class body bound, when the old code is known.
        self.old_members: dict[str, frozenset[str]] | None = None
        #: qualnames the new module code defines with ``def``/``class`` (static analysis).
        self.defines: frozenset[str] = frozenset()
        #: ids of functions whose cells were already re-pointed (see ``repoint_cells``).
        self.repointed: set[int] = set()
        #: functions patched or added: their defaults may hold new objects.
        self.functions: list[FunctionType] = []
        #: objects the new body created that may be instances of a class that was kept.
        self.instances: list[Any] = []
        self.keep: list[Any] = []
        self.actions: list[Action] = []
        self.warnings: list[str] = []
        #: class id -> (new instance, old value bound under the same name) for the objects
        #: the new body bound at top level whose layout cannot take another class.
        self.stuck: dict[int, list[tuple[Any, Any]]] = {}
        #: (old nested code, new nested code, qualified name): closures that may be live.
        self.closures: list[tuple[CodeType, CodeType, str]] = []

    def checkpoint(self) -> tuple[int, ...]:
        """A mark to ``restore`` to if the next step fails (see ``faults``, rule 2)."""
        return (
            len(self.undo),
            len(self.memo),
            len(self.actions),
            len(self.functions),
            len(self.containers),
            len(self.instances),
            len(self.closures),
            len(self.class_immutables),
        )

    def restore(self, mark: tuple[int, ...]) -> None:
        """Undo what was changed and decided since ``mark`` (``checkpoint``)."""
        undo, memo, acts, functions, containers, instances, closures, immutables = mark
        self.undo.revert_to(undo)
        if len(self.memo) > memo:
            # dicts keep insertion order: the decisions made since the mark come last
            for key in list(self.memo)[memo:]:
                chosen = self.memo.pop(key)
                if key != id(chosen):
                    self.claimed.discard(id(chosen))
        del self.actions[acts:]
        del self.functions[functions:]
        del self.containers[containers:]
        del self.instances[instances:]
        del self.closures[closures:]
        del self.class_immutables[immutables:]

    def label(self, qualname: str) -> str:
        """The name under which an object of this module is reported (``m.C.meth``)."""
        return f"{self.module}.{qualname}"

    def act(self, kind: str, qualname: str, detail: str = "") -> None:
        """Report one action on an object of this module."""
        self.actions.append(Action(kind, self.label(qualname), detail))

    def warn(self, message: str) -> None:
        """Report something the user must know."""
        if message not in self.warnings:
            self.warnings.append(message)

    def choose(self, new: Any, chosen: Any) -> Any:
        """Remember that ``chosen`` stands for ``new`` from now on; return ``chosen``."""
        self.keep.append(new)
        self.memo[id(new)] = chosen
        if chosen is not new:
            self.claimed.add(id(chosen))
        return chosen

    def resolved(self, obj: Any) -> Any:
        """The object standing for ``obj`` (``obj`` itself when it was not matched)."""
        return self.memo.get(id(obj), obj)

    def translate_containers(self) -> None:
        """Make new containers, and function defaults, refer to the objects kept instead of
        the new objects they stand for (``ROUTES = {"/": index}`` then holds the live
        ``index``, ``def g(cb=f)`` the live ``f``, ``{Color.RED: 1}`` the live member as
        its key)."""
        for container in self.containers:
            try:
                self.translated(container)
            except Exception as exc:  # noqa: BLE001 - faults rule 2: an optional step
                self.warn(
                    f"{self.module}: a {type(container).__name__} made by the new body may "
                    f"still refer to discarded new objects ({describe(exc)})"
                )
        for cls, key in self.class_immutables:
            # the class dict was recorded before its first change: undo restores this too
            value = cls.__dict__.get(key)
            try:
                rebuilt = self.translated(value)
            except Exception as exc:  # noqa: BLE001 - same
                label = f"{self.label(cls.__qualname__)}.{key}"
                self.warn(f"{label} was not re-pointed ({describe(exc)})")
                continue
            if rebuilt is not value:
                type.__setattr__(cls, key, rebuilt)
        for fn in self.functions:
            try:
                self._translate_defaults(fn)
            except Exception as exc:  # noqa: BLE001 - same
                label = self.label(fn.__qualname__)
                self.warn(f"defaults of {label} were not re-pointed ({describe(exc)})")

    def _translate_defaults(self, fn: FunctionType) -> None:
        """``def f(x=DEFAULT)``: a default the new body made is the kept object, or an
        instance of the kept class (``translated`` does both)."""
        defaults = fn.__defaults__
        if defaults:
            rebuilt = self.translated(defaults)
            if rebuilt is not defaults:
                fn.__defaults__ = rebuilt
        kwdefaults = fn.__kwdefaults__
        if kwdefaults and any(id(v) in self.memo for v in kwdefaults.values()):
            fn.__kwdefaults__ = {k: self.resolved(v) for k, v in kwdefaults.items()}
        elif kwdefaults:
            for value in kwdefaults.values():
                self.translated(value, 1)

    def translated(self, obj: Any, depth: int = 0) -> Any:
        """``obj`` referring to the objects kept: a new object is replaced by the one
        standing for it; lists, dicts (values and keys), sets, partials and typing aliases
        are changed in place; tuples and frozensets are rebuilt and the rebuilt one is
        returned (the caller rebinds it). ``_MAX_DEPTH`` levels deep at most."""
        chosen = self.memo.get(id(obj))
        if chosen is not None:
            return chosen
        kind = type(obj)
        if depth > _MAX_DEPTH or kind in _ATOMS:
            return obj
        kept = self.memo.get(id(kind))
        named = issubclass(kind, tuple) and _is_named_tuple(kind)
        if named:
            # a named tuple (tabulate's ``TableFormat(lineabove=_html_begin, ...)``) must
            # hold the live functions (the module compares with ``==``), of the live class
            items = [self.translated(value, depth + 1) for value in obj]
            live = kept if isinstance(kept, type) else kind
            if live is not kind or any(a is not b for a, b in zip(items, obj, strict=True)):
                return live._make(items)  # type: ignore[attr-defined]
            return obj
        if isinstance(kept, type) and kept is not kind and not issubclass(kind, enum.Enum):
            # ``DEFAULTS = [P(1)]``: an instance the new body made of a class that was kept
            # (same layout, so ``__class__`` may be assigned)
            with contextlib.suppress(Exception):
                object.__setattr__(obj, "__class__", kept)
            return obj
        if kind is list:
            for index, value in enumerate(obj):
                new = self.translated(value, depth + 1)
                if new is not value:
                    obj[index] = new
        elif kind is dict:
            for key, value in list(obj.items()):
                new = self.translated(value, depth + 1)
                if new is not value:
                    obj[key] = new
            # keys too: ``{(Request, CLIENT): ...}`` must be found with the kept classes
            memo = self.memo
            if any(id(key) in memo or type(key) in (tuple, frozenset) for key in obj):
                keys = [
                    self.translated(key, depth + 1) if type(key) in (tuple, frozenset) else key
                    for key in obj
                ]
                if any(a is not b or id(a) in memo for a, b in zip(keys, obj, strict=True)):
                    pairs = [(self.resolved(k), v) for k, v in zip(keys, obj.values(), strict=True)]
                    obj.clear()  # keeps the order; the dict is the new body's own
                    obj.update(pairs)
        elif kind is set:
            if any(id(item) in self.memo for item in obj):
                members = [self.resolved(item) for item in obj]
                obj.clear()
                obj.update(members)
        elif kind is tuple:
            rebuilt = tuple(self.translated(value, depth + 1) for value in obj)
            if any(a is not b for a, b in zip(rebuilt, obj, strict=True)):
                return rebuilt
        elif kind is frozenset:
            if any(id(item) in self.memo for item in obj):
                return frozenset(self.resolved(item) for item in obj)
        elif kind is functools.partial:
            # ``p = partial(f, 1)``: the partial made by the new body holds the live ``f``;
            # its ``func`` is read-only, ``__setstate__`` is how pickle sets it
            func = self.memo.get(id(obj.func))
            if func is not None and func is not obj.func:
                state = obj.__reduce__()[2]
                obj.__setstate__((func, *state[1:]))
        elif is_typing_alias(obj):
            # ``IntBox = Box[int]``: the alias must build instances of the live ``Box``
            # (typing's aliases accept their dunders being set; is_typing_alias checked
            # that both live in the instance dict)
            attrs = object.__getattribute__(obj, "__dict__")
            old_origin, old_args = attrs["__origin__"], attrs["__args__"]
            origin = self.memo.get(id(old_origin))
            args = tuple(self.resolved(arg) for arg in old_args)
            with contextlib.suppress(AttributeError, TypeError):
                if origin is not None and origin is not old_origin:
                    obj.__origin__ = origin
                if any(a is not b for a, b in zip(args, old_args, strict=True)):
                    obj.__args__ = args
        return obj

    def made_here(self, obj: Any) -> bool:
        """True for a function or class this reload's execution created from the module's
        own source, even when it claims another ``__module__`` (``__module__ = "builtins"``
        in a class body)."""
        if not is_code_kind(obj) or not self.is_new(obj):
            return False
        try:
            if getattr(obj, "__module__", None) == self.module or id(obj) in self.unowned:
                return True
            qualname = getattr(obj, "__qualname__", None)
        except Exception:  # noqa: BLE001 - a hostile metaclass __getattr__: not ours
            return False
        return isinstance(qualname, str) and qualname in self.defines

    def is_new(self, obj: Any) -> bool:
        """True when ``obj`` was created by this reload's execution (not an old object)."""
        return id(obj) not in self.old_ids
