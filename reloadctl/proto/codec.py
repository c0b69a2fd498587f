"""The msgpack codec for every message in ``proto.messages``: versioned envelope, exact schemas.

Rules:
1. A message on the wire is ``msgpack({"v": <version>, "t": <tag>, "b": <body>})``;
   ``<tag>`` comes from ``TAGS`` ({MessageType: tag}) and ``<body>`` is a map with exactly
   the fields that version's schema gives that dataclass, in any order. Nested values
   (``ModuleResult``, ``ErrorInfo``, ``Action``, ``PatchedModule``) are maps with exactly
   their fields; tuples are arrays.
2. Decoding is strict: the input must be ``bytes`` of at most ``MAX_MESSAGE_BYTES`` (a
   ``ReloadRequest`` carrying a push: ``MAX_PUSH_MESSAGE_BYTES``); one msgpack object, no
   trailing bytes; ``v`` must be one of ``VERSIONS`` (an int, not a bool); unknown tags,
   missing or extra keys (``proto.schema``), and wrong types are rejected. A bool is
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
   ``schema.V2_FIELDS`` (the submit wait, verify, the push fields, a patched module's
   origin and digest). A protocol-1 body has none of them and decodes to their defaults. A
   request whose new fields are not at their defaults cannot be encoded as protocol 1
   (``LocalProtocolError``: it is not expressible there); a reply encoded as protocol 1
   leaves out its nested values' new fields (a protocol-1 client never knew them).
   An agent answers in the version of the request; an envelope version it does not speak
   gets ``unsupported protocol version V (this side speaks 1, 2)``, which
   ``spoken_versions`` reads back (a protocol-1 agent says ``(this side speaks 1)``).
"""

from __future__ import annotations

import msgpack

from reloadctl.errors import LocalProtocolError, RemoteProtocolError
from reloadctl.proto.messages import (
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
from reloadctl.proto.schema import (
    MAX_JOB_ID,
    MAX_MODULES,
    MAX_NAME,
    MAX_PATH,
    MAX_PUSH_FILES,
    MAX_RESULTS,
    SCHEMAS,
    V2_FIELDS,
    VERSION_SCHEMAS,
    from_body,
    to_body,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = [  # the schema's limits are read here too, by the codec's users
    "MAX_JOB_ID",
    "MAX_MESSAGE_BYTES",
    "MAX_MODULES",
    "MAX_NAME",
    "MAX_PATH",
    "MAX_PUSH_FILES",
    "MAX_PUSH_MESSAGE_BYTES",
    "MAX_PUSH_SOURCE_BYTES",
    "MAX_RESULTS",
    "REPLY_TAGS",
    "REQUEST_TAGS",
    "SCHEMAS",
    "TAGS",
    "VERSION",
    "VERSIONS",
    "decode",
    "decode_reply",
    "decode_reply_versioned",
    "decode_request",
    "decode_request_versioned",
    "decode_versioned",
    "encode",
    "spoken_versions",
]

#: The newest protocol version (what this side sends unless told otherwise).
VERSION: Final = 2
#: Every version this side reads and writes (rule 6).
VERSIONS: Final = (1, 2)
#: Largest encoded message either side sends or accepts (the transport caps frames above it).
MAX_MESSAGE_BYTES: Final = 1024 * 1024
#: Source text one push may carry (``ReloadRequest.push``, UTF-8 bytes, all files together).
MAX_PUSH_SOURCE_BYTES: Final = 16 * 1024 * 1024
#: Largest encoded ``ReloadRequest`` that carries a push: the source, plus room for names,
#: paths and digests. Only such a request may exceed ``MAX_MESSAGE_BYTES``. A larger cap,
#: not chunking: the agent reads rpyc frames only after the HMAC handshake (pre-auth frames
#: stay capped at ``auth.MAX_FRAME``, 4 KiB), so only an authenticated peer, which may
#: already run code in the agent, can make it allocate this much, and one message keeps a
#: push all-or-nothing with no staging state to expire on the agent.
MAX_PUSH_MESSAGE_BYTES: Final = MAX_PUSH_SOURCE_BYTES + 4 * 1024 * 1024

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
    body = to_body(message, tag, LocalProtocolError, schemas)
    try:
        data: bytes = msgpack.packb({"v": version, "t": tag, "b": body}, use_bin_type=True)
    except (ValueError, TypeError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode {tag}: {exc}") from exc
    limit = _limit(message)
    if len(data) > limit:
        raise LocalProtocolError(f"{tag} message is {len(data)} bytes, over the {limit} byte limit")
    return data


def _limit(message: object) -> int:
    """The size cap of ``message``: only a push may exceed ``MAX_MESSAGE_BYTES``."""
    if type(message) is ReloadRequest and message.push:
        return MAX_PUSH_MESSAGE_BYTES
    return MAX_MESSAGE_BYTES


def decode_versioned(data: object) -> tuple[Request | Reply, int]:
    """Decode one message by rules 1-3 and 6; return it with its envelope version.

    Raises:
        RemoteProtocolError: for every possible defect of ``data`` (rule 4).
    """
    if type(data) is not bytes:
        raise RemoteProtocolError(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_PUSH_MESSAGE_BYTES:
        raise RemoteProtocolError(
            f"message is {len(data)} bytes, over the {MAX_PUSH_MESSAGE_BYTES} byte limit"
        )
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        raise RemoteProtocolError(f"malformed message: {type(exc).__name__}") from None
    except RecursionError:
        raise RemoteProtocolError("malformed message: nested too deeply") from None
    if type(obj) is not dict:
        raise RemoteProtocolError(f"envelope: expected map, got {type(obj).__name__}")
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
    result = from_body(cls, obj["b"], tag, RemoteProtocolError, VERSION_SCHEMAS[version])
    if len(data) > _limit(result):
        raise RemoteProtocolError(
            f"{tag} message is {len(data)} bytes, over the {MAX_MESSAGE_BYTES} byte limit"
        )
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
