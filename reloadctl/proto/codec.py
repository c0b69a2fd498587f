"""The msgpack codec for every message in ``proto.messages``: versioned envelope, exact schemas.

Rules:
1. A message on the wire is ``msgpack({"v": <version>, "t": <tag>, "b": <body>})``;
   ``<tag>`` comes from ``TAGS`` ({MessageType: tag}) and ``<body>`` is a map with exactly
   the fields that version's schema gives that dataclass, in any order. Nested values
   (``ModuleResult``, ``ErrorInfo``, ``Action``, ``PatchedModule``) are maps with exactly
   their fields; tuples are arrays.
2. Decoding is strict: the input must be ``bytes`` of at most ``MAX_MESSAGE_BYTES``; one
   msgpack object, no trailing bytes; ``v`` must be one of ``VERSIONS`` (an int, not a
   bool); unknown tags, missing or extra keys, and wrong types are rejected. A bool is
   never an int, an int is accepted where a float is expected, floats must be finite.
3. Value rules: statuses are ``ENGINE_STATUSES``, ``ErrorReply.code`` is one of
   ``ERROR_CODES``, counts/cursors/pids are non-negative ints, deadlines are positive, a
   request names 1..``MAX_MODULES`` non-empty modules of at most ``MAX_NAME`` characters.
4. Anything wrong in what a peer sent raises ``RemoteProtocolError`` and nothing else;
   anything wrong in what we try to send raises ``LocalProtocolError`` (the same rules apply
   both ways, so we never emit what we would reject).
5. ``decode_request`` / ``decode_reply`` additionally enforce the direction: an agent only
   accepts requests, a client only accepts replies.
6. Versions: protocol 1 is exactly the original protocol; protocol 2 adds the fields in
   ``V2_FIELDS`` (the submit wait and verify). A protocol-1 body has none of them and
   decodes to their defaults; a message whose new fields are not at their defaults cannot
   be encoded as protocol 1 (``LocalProtocolError``: the request is not expressible there).
   An agent answers in the version of the request; an envelope version it does not speak
   gets ``unsupported protocol version V (this side speaks 1, 2)``, which
   ``spoken_versions`` reads back (a protocol-1 agent says ``(this side speaks 1)``).
"""

from __future__ import annotations

import math

import msgpack

from reloadctl.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from reloadctl.proto.messages import (
    ERROR_CODES,
    AgentInfo,
    ErrorReply,
    JobAccepted,
    JobEvents,
    PollRequest,
    ReloadRequest,
    Reply,
    Request,
    RollbackRequest,
    StatusRequest,
)
from reloadctl.results import ENGINE_STATUSES, Action, ErrorInfo, ModuleResult, PatchedModule

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

#: The newest protocol version (what this side sends unless told otherwise).
VERSION: Final = 2
#: Every version this side reads and writes (rule 6).
VERSIONS: Final = (1, 2)
#: Largest encoded message either side sends or accepts (the transport caps frames above it).
MAX_MESSAGE_BYTES: Final = 1024 * 1024
MAX_MODULES: Final = 1000
MAX_NAME: Final = 512
MAX_RESULTS: Final = 10_000
MAX_JOB_ID: Final = 64

_Err = type[ProtocolError]


class _Kind:
    """One field type: ``check`` validates (and normalises) a value in either direction."""

    __slots__ = ()

    def check(self, value: object, where: str, err: _Err, wire: bool) -> object:
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

    def check(self, value: object, where: str, err: _Err, wire: bool) -> object:
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

    def check(self, value: object, where: str, err: _Err, wire: bool) -> object:
        if value is None and self.optional:
            return None
        if type(value) is not bool:
            raise _fail(err, where, "bool or nil" if self.optional else "bool", value)
        return value


class _Int(_Kind):
    __slots__ = ()

    def check(self, value: object, where: str, err: _Err, wire: bool) -> object:
        if type(value) is not int:
            raise _fail(err, where, "int", value)
        if not 0 <= value < 2**63:
            raise err(f"{where}: {value} out of range")
        return value


class _Float(_Kind):
    __slots__ = ("positive",)

    def __init__(self, *, positive: bool = False) -> None:
        self.positive = positive

    def check(self, value: object, where: str, err: _Err, wire: bool) -> object:
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

    def check(self, value: object, where: str, err: _Err, wire: bool) -> object:
        expected_type = list if wire else tuple
        if type(value) is not expected_type:
            raise _fail(err, where, "array" if wire else "tuple", value)
        assert isinstance(value, (list, tuple))
        if not self.min_len <= len(value) <= self.max_len:
            raise err(f"{where}: needs {self.min_len}..{self.max_len} items, got {len(value)}")
        items = [self.item.check(v, f"{where}[{i}]", err, wire) for i, v in enumerate(value)]
        return tuple(items) if wire else items


class _Struct(_Kind):
    __slots__ = ("cls", "optional")

    def __init__(self, cls: type[Any], *, optional: bool = False) -> None:
        self.cls = cls
        self.optional = optional

    def check(self, value: object, where: str, err: _Err, wire: bool) -> object:
        if value is None and self.optional:
            return None
        if wire:
            return _from_body(self.cls, value, where, err)
        if type(value) is not self.cls:
            raise _fail(err, where, self.cls.__name__, value)
        return _to_body(value, where, err)


_MODULE_NAME: Final = _Str(nonempty=True, max_len=MAX_NAME)
_JOB_ID: Final = _Str(nonempty=True, max_len=MAX_JOB_ID)
_TEXT: Final = _Str()

#: Every message and nested value: its fields, in dataclass order, with their kinds.
SCHEMAS: Final[dict[type[Any], tuple[tuple[str, _Kind], ...]]] = {
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
    ),
    ReloadRequest: (
        ("modules", _Seq(_MODULE_NAME, min_len=1, max_len=MAX_MODULES)),
        ("dry_run", _Bool()),
        ("dependents", _Bool()),
        ("deadline_s", _Float(positive=True)),
        ("wait_s", _Float()),
        ("verify", _Str(max_len=MAX_NAME)),
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

#: Rule 6: the fields protocol 2 added, per message type, with their defaults.
V2_FIELDS: Final[dict[type[Any], dict[str, object]]] = {
    ReloadRequest: {"wait_s": 0.0, "verify": ""},
    RollbackRequest: {"wait_s": 0.0},
}

#: The schemas of each version (protocol 1: without ``V2_FIELDS``).
VERSION_SCHEMAS: Final[dict[int, dict[type[Any], tuple[tuple[str, _Kind], ...]]]] = {
    1: {
        cls: tuple((n, k) for n, k in schema if n not in V2_FIELDS.get(cls, {}))
        for cls, schema in SCHEMAS.items()
    },
    2: SCHEMAS,
}

REQUEST_TAGS: Final[dict[type[Any], str]] = {
    ReloadRequest: "reload",
    RollbackRequest: "rollback",
    StatusRequest: "status",
    PollRequest: "poll",
}
REPLY_TAGS: Final[dict[type[Any], str]] = {
    JobAccepted: "accepted",
    JobEvents: "events",
    AgentInfo: "info",
    ErrorReply: "error",
}
TAGS: Final[dict[type[Any], str]] = {**REQUEST_TAGS, **REPLY_TAGS}
_BY_TAG: Final[dict[str, type[Any]]] = {tag: cls for cls, tag in TAGS.items()}


def _to_body(
    value: object, where: str, err: _Err, schemas: dict[type[Any], Any] = SCHEMAS
) -> dict[str, object]:
    schema = schemas[type(value)]
    return {
        name: kind.check(getattr(value, name), f"{where}.{name}", err, False)
        for name, kind in schema
    }


def _from_body(
    cls: type[Any], body: object, where: str, err: _Err, schemas: dict[type[Any], Any] = SCHEMAS
) -> object:
    if type(body) is not dict:
        raise _fail(err, where, "map", body)
    schema = schemas[cls]
    names = {name for name, _ in schema}
    keys = set(body)
    if keys != names:
        missing = sorted(names - keys)
        extra = sorted(repr(k)[:40] for k in keys - names)
        raise err(f"{where}: wrong fields for {cls.__name__} (missing {missing}, extra {extra})")
    kwargs = {name: kind.check(body[name], f"{where}.{name}", err, True) for name, kind in schema}
    return cls(**kwargs)


def _speaks() -> str:
    return ", ".join(str(v) for v in VERSIONS)


def encode(message: Request | Reply, version: int = VERSION) -> bytes:
    """Encode one message by rule 1, as protocol ``version`` (rule 6).

    Raises:
        LocalProtocolError: not a message type, a field violates rule 2/3, ``version`` is
            not one of ``VERSIONS``, the message is not expressible in ``version``, or the
            result is larger than ``MAX_MESSAGE_BYTES``.
    """
    tag = TAGS.get(type(message))
    if tag is None:
        raise LocalProtocolError(f"cannot encode {type(message).__name__}: not a message")
    schemas = VERSION_SCHEMAS.get(version) if type(version) is int else None
    if schemas is None:
        raise LocalProtocolError(f"cannot encode protocol version {version!r}")
    if version == 1:
        for name, default in V2_FIELDS.get(type(message), {}).items():
            if getattr(message, name) != default:
                raise LocalProtocolError(
                    f"cannot encode {tag} as protocol 1: {name} needs protocol 2"
                )
    body = _to_body(message, tag, LocalProtocolError, schemas)
    try:
        data: bytes = msgpack.packb({"v": version, "t": tag, "b": body}, use_bin_type=True)
    except (ValueError, TypeError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode {tag}: {exc}") from exc
    if len(data) > MAX_MESSAGE_BYTES:
        raise LocalProtocolError(
            f"{tag} message is {len(data)} bytes, over the {MAX_MESSAGE_BYTES} byte limit"
        )
    return data


def decode_versioned(data: object) -> tuple[Request | Reply, int]:
    """Decode one message by rules 1-3 and 6; return it with its envelope version.

    Raises:
        RemoteProtocolError: for every possible defect of ``data`` (rule 4).
    """
    if type(data) is not bytes:
        raise RemoteProtocolError(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise RemoteProtocolError(
            f"message is {len(data)} bytes, over the {MAX_MESSAGE_BYTES} byte limit"
        )
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        raise RemoteProtocolError(f"malformed message: {type(exc).__name__}") from None
    except RecursionError:
        raise RemoteProtocolError("malformed message: nested too deeply") from None
    if type(obj) is not dict:
        raise _fail(RemoteProtocolError, "envelope", "map", obj)
    if set(obj) != {"v", "t", "b"}:
        raise RemoteProtocolError("envelope: expected exactly the keys v, t, b")
    version = obj["v"]
    if type(version) is not int or version not in VERSION_SCHEMAS:
        raise RemoteProtocolError(
            f"unsupported protocol version {str(version)[:20]!r} (this side speaks {_speaks()})"
        )
    tag = obj["t"]
    cls = _BY_TAG.get(tag) if type(tag) is str else None
    if cls is None:
        raise RemoteProtocolError(f"unknown message type {str(tag)[:40]!r}")
    result = _from_body(cls, obj["b"], tag, RemoteProtocolError, VERSION_SCHEMAS[version])
    return result, version  # type: ignore[return-value]


def decode(data: object) -> Request | Reply:
    """Decode one message of any version in ``VERSIONS`` by rules 1-3 and 6.

    Raises:
        RemoteProtocolError: for every possible defect of ``data`` (rule 4).
    """
    return decode_versioned(data)[0]


def _decode_direction(data: object, allowed: dict[type[Any], str], what: str) -> Any:
    message, version = decode_versioned(data)
    if type(message) not in allowed:
        raise RemoteProtocolError(f"expected a {what}, got {TAGS[type(message)]!r}")
    return message, version


def decode_request(data: object) -> Request:
    """Decode a message that must be a request (what an agent receives)."""
    return decode_request_versioned(data)[0]


def decode_request_versioned(data: object) -> tuple[Request, int]:
    """``decode_request`` and the envelope version (the agent answers in it, rule 6)."""
    result: tuple[Request, int] = _decode_direction(data, REQUEST_TAGS, "request")
    return result


def decode_reply(data: object) -> Reply:
    """Decode a message that must be a reply (what a client receives)."""
    return decode_reply_versioned(data)[0]


def decode_reply_versioned(data: object) -> tuple[Reply, int]:
    """``decode_reply`` and the envelope version."""
    result: tuple[Reply, int] = _decode_direction(data, REPLY_TAGS, "reply")
    return result


_SPEAKS_MARK: Final = "(this side speaks "


def spoken_versions(message: str) -> tuple[int, ...] | None:
    """The versions an agent says it speaks in its ``unsupported protocol version`` error
    message (rule 6), or None when ``message`` is not that error."""
    if not message.startswith("unsupported protocol version "):
        return None
    at = message.rfind(_SPEAKS_MARK)
    if at < 0 or not message.endswith(")"):
        return None
    versions: list[int] = []
    for raw in message[at + len(_SPEAKS_MARK) : -1].split(","):
        part = raw.strip()
        if not part.isdigit() or len(part) > 6:
            return None
        versions.append(int(part))
    return tuple(versions) or None
