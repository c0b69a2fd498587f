"""The field kinds and the exact schema of every message and nested value, per protocol version.

Rules:
1. ``SCHEMAS`` gives each type its fields, in dataclass order, with their kinds; a kind's
   ``check`` validates (and normalises) a value in either direction: ``wire`` True reads
   what a peer sent (arrays become tuples), False writes what we send. A nested value is
   read and written with the schemas of the message's version.
2. ``V2_FIELDS`` lists the fields protocol 2 added (the submit wait, verify, the push
   fields, a patched module's origin and digest), per type, with their defaults;
   ``VERSION_SCHEMAS[1]`` is ``SCHEMAS`` without them, so a protocol-1 body has exactly
   the original fields and decodes to those defaults.
3. Limits: a request names 1..``MAX_MODULES`` modules of at most ``MAX_NAME`` characters;
   a push carries at most ``MAX_PUSH_FILES`` files whose paths are at most ``MAX_PATH``.
"""

from __future__ import annotations

import math

from reloadctl.errors import ProtocolError
from reloadctl.proto.messages import (
    ERROR_CODES,
    AgentInfo,
    ErrorReply,
    JobAccepted,
    JobEvents,
    PollRequest,
    PushedSource,
    ReloadRequest,
    RollbackRequest,
    StatusRequest,
)
from reloadctl.results import ENGINE_STATUSES, Action, ErrorInfo, ModuleResult, PatchedModule

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final, TypeAlias

MAX_PUSH_FILES: Final = 5000
MAX_PATH: Final = 1024
MAX_MODULES: Final = 1000
MAX_NAME: Final = 512
MAX_RESULTS: Final = 10_000
MAX_JOB_ID: Final = 64

_Err = type[ProtocolError]
#: Each type's fields and kinds (one version's view).
Schemas: TypeAlias = "dict[type[Any], tuple[tuple[str, _Kind], ...]]"


class _Kind:
    """One field type: ``check`` validates (and normalises) a value in either direction."""

    __slots__ = ()

    def check(self, value: object, where: str, err: _Err, wire: bool, schemas: Schemas) -> object:
        raise NotImplementedError


def _fail(err: _Err, where: str, expected: str, value: object) -> ProtocolError:
    return err(f"{where}: expected {expected}, got {type(value).__name__}")


class _Str(_Kind):
    __slots__ = ("choices", "max_len", "nonempty")

    def __init__(
        self,
        *,
        nonempty: bool = False,
        max_len: int | None = None,
        choices: frozenset[str] | None = None,
    ) -> None:
        self.nonempty = nonempty
        self.max_len = max_len
        self.choices = choices

    def check(self, value: object, where: str, err: _Err, wire: bool, schemas: Schemas) -> object:
        if type(value) is not str:
            raise _fail(err, where, "str", value)
        if self.nonempty and not value:
            raise err(f"{where}: must not be empty")
        if self.max_len is not None and len(value) > self.max_len:
            raise err(f"{where}: longer than {self.max_len} characters")
        if self.choices is not None and value not in self.choices:
            raise err(f"{where}: {value[:40]!r} is not one of {sorted(self.choices)}")
        return value


class _Bool(_Kind):
    __slots__ = ("optional",)

    def __init__(self, *, optional: bool = False) -> None:
        self.optional = optional

    def check(self, value: object, where: str, err: _Err, wire: bool, schemas: Schemas) -> object:
        if value is None and self.optional:
            return None
        if type(value) is not bool:
            raise _fail(err, where, "bool or nil" if self.optional else "bool", value)
        return value


class _Int(_Kind):
    __slots__ = ()

    def check(self, value: object, where: str, err: _Err, wire: bool, schemas: Schemas) -> object:
        if type(value) is not int:
            raise _fail(err, where, "int", value)
        if not 0 <= value < 2**63:
            raise err(f"{where}: {value} out of range")
        return value


class _Float(_Kind):
    __slots__ = ("positive",)

    def __init__(self, *, positive: bool = False) -> None:
        self.positive = positive

    def check(self, value: object, where: str, err: _Err, wire: bool, schemas: Schemas) -> object:
        if type(value) is not float and type(value) is not int:
            raise _fail(err, where, "float", value)
        try:
            f = float(value)
        except OverflowError:
            raise err(f"{where}: number out of range") from None
        if not math.isfinite(f):
            raise err(f"{where}: must be finite")
        if self.positive and f <= 0.0:
            raise err(f"{where}: must be positive")
        if f < 0.0:
            raise err(f"{where}: must not be negative")
        return f


class _Seq(_Kind):
    __slots__ = ("item", "max_len", "min_len")

    def __init__(self, item: _Kind, *, max_len: int, min_len: int = 0) -> None:
        self.item = item
        self.max_len = max_len
        self.min_len = min_len

    def check(self, value: object, where: str, err: _Err, wire: bool, schemas: Schemas) -> object:
        expected_type = list if wire else tuple
        if type(value) is not expected_type:
            raise _fail(err, where, "array" if wire else "tuple", value)
        assert isinstance(value, (list, tuple))
        if not self.min_len <= len(value) <= self.max_len:
            raise err(f"{where}: needs {self.min_len}..{self.max_len} items, got {len(value)}")
        items = [
            self.item.check(v, f"{where}[{i}]", err, wire, schemas) for i, v in enumerate(value)
        ]
        return tuple(items) if wire else items


class _Struct(_Kind):
    __slots__ = ("cls", "optional")

    def __init__(self, cls: type[Any], *, optional: bool = False) -> None:
        self.cls = cls
        self.optional = optional

    def check(self, value: object, where: str, err: _Err, wire: bool, schemas: Schemas) -> object:
        if value is None and self.optional:
            return None
        if wire:
            return from_body(self.cls, value, where, err, schemas)
        if type(value) is not self.cls:
            raise _fail(err, where, self.cls.__name__, value)
        return to_body(value, where, err, schemas)


_MODULE_NAME: Final = _Str(nonempty=True, max_len=MAX_NAME)
_JOB_ID: Final = _Str(nonempty=True, max_len=MAX_JOB_ID)
_TEXT: Final = _Str()

#: Every message and nested value: its fields, in dataclass order, with their kinds.
SCHEMAS: Final[Schemas] = {
    ErrorInfo: (
        ("type", _Str(nonempty=True, max_len=MAX_NAME)),
        ("message", _TEXT),
        ("traceback", _TEXT),
    ),
    Action: (("kind", _Str(nonempty=True, max_len=64)), ("name", _TEXT), ("detail", _TEXT)),
    ModuleResult: (
        ("module", _MODULE_NAME),
        ("status", _Str(choices=ENGINE_STATUSES)),
        ("error", _Struct(ErrorInfo, optional=True)),
        ("actions", _Seq(_Struct(Action), max_len=100_000)),
        ("warnings", _Seq(_TEXT, max_len=10_000)),
        ("duration_ms", _Float()),
    ),
    PatchedModule: (
        ("module", _MODULE_NAME),
        ("reloads", _Int()),
        ("last_reload", _Float()),
        ("diverged", _Bool(optional=True)),
        ("origin", _Str(max_len=80)),
        ("digest", _Str(max_len=64)),
    ),
    PushedSource: (
        ("module", _MODULE_NAME),
        ("path", _Str(nonempty=True, max_len=MAX_PATH)),
        ("source", _TEXT),
        ("sha256", _Str(nonempty=True, max_len=64)),
        ("is_package", _Bool()),
    ),
    ReloadRequest: (
        ("modules", _Seq(_MODULE_NAME, min_len=1, max_len=MAX_MODULES)),
        ("dry_run", _Bool()),
        ("dependents", _Bool()),
        ("deadline_s", _Float(positive=True)),
        ("wait_s", _Float()),
        ("verify", _Str(max_len=MAX_NAME)),
        ("push", _Seq(_Struct(PushedSource), max_len=MAX_PUSH_FILES)),
        ("push_trees", _Seq(_MODULE_NAME, max_len=MAX_MODULES)),
        ("write", _Bool()),
        ("allow_new_top_level", _Bool()),
    ),
    RollbackRequest: (
        ("modules", _Seq(_MODULE_NAME, min_len=1, max_len=MAX_MODULES)),
        ("deadline_s", _Float(positive=True)),
        ("wait_s", _Float()),
    ),
    StatusRequest: (),
    PollRequest: (("job", _JOB_ID), ("cursor", _Int()), ("wait_s", _Float())),
    JobAccepted: (("job", _JOB_ID),),
    JobEvents: (
        ("job", _JOB_ID),
        ("cursor", _Int()),
        ("results", _Seq(_Struct(ModuleResult), max_len=MAX_RESULTS)),
        ("done", _Bool()),
    ),
    AgentInfo: (
        ("pid", _Int()),
        ("program", _TEXT),
        ("python", _TEXT),
        ("version", _TEXT),
        ("started_at", _Float()),
        ("uptime_s", _Float()),
        ("address", _TEXT),
        ("read_only", _Bool()),
        ("patched", _Seq(_Struct(PatchedModule), max_len=MAX_RESULTS)),
    ),
    ErrorReply: (("code", _Str(choices=ERROR_CODES)), ("message", _TEXT)),
}

#: Rule 2: the fields protocol 2 added, per type (nested values included), with their
#: defaults.
V2_FIELDS: Final[dict[type[Any], dict[str, object]]] = {
    ReloadRequest: {
        "wait_s": 0.0,
        "verify": "",
        "push": (),
        "push_trees": (),
        "write": False,
        "allow_new_top_level": False,
    },
    RollbackRequest: {"wait_s": 0.0},
    PatchedModule: {"origin": "", "digest": ""},
}

#: The schemas of each version (protocol 1: without ``V2_FIELDS``).
VERSION_SCHEMAS: Final[dict[int, Schemas]] = {
    1: {
        cls: tuple((n, k) for n, k in schema if n not in V2_FIELDS.get(cls, {}))
        for cls, schema in SCHEMAS.items()
    },
    2: SCHEMAS,
}


def to_body(value: object, where: str, err: _Err, schemas: Schemas) -> dict[str, object]:
    """The wire map of ``value`` by its schema in ``schemas`` (nested values too)."""
    schema = schemas[type(value)]
    return {
        name: kind.check(getattr(value, name), f"{where}.{name}", err, False, schemas)
        for name, kind in schema
    }


def from_body(cls: type[Any], body: object, where: str, err: _Err, schemas: Schemas) -> object:
    """A ``cls`` from its wire map, exactly its fields in ``schemas`` (nested values too);
    a field the schema lacks takes its dataclass default."""
    if type(body) is not dict:
        raise _fail(err, where, "map", body)
    schema = schemas[cls]
    names = {name for name, _ in schema}
    keys = set(body)
    if keys != names:
        missing = sorted(names - keys)
        extra = sorted(repr(k)[:40] for k in keys - names)
        raise err(f"{where}: wrong fields for {cls.__name__} (missing {missing}, extra {extra})")
    kwargs = {
        name: kind.check(body[name], f"{where}.{name}", err, True, schemas) for name, kind in schema
    }
    return cls(**kwargs)
