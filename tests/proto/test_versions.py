"""Protocol versions: protocol 1 exactly as before, protocol 2's new fields, what each reads."""

from __future__ import annotations

import hashlib

import msgpack
import pytest

from reloadctl.errors import LocalProtocolError, RemoteProtocolError
from reloadctl.proto import codec
from reloadctl.proto.messages import (
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
from reloadctl.results import PatchedModule

V1_RELOAD_BODY = {"modules": ["m"], "dry_run": False, "dependents": False, "deadline_s": 2.0}
#: Protocol 2's push fields (issue 15) of a reload that pushes nothing.
NO_PUSH = {"push": [], "push_trees": [], "write": False, "allow_new_top_level": False}
V2_RELOAD_BODY = {**V1_RELOAD_BODY, "wait_s": 0.0, "verify": "", **NO_PUSH}
PUSHED = PushedSource("m", "m.py", "X = 1\n", hashlib.sha256(b"X = 1\n").hexdigest())
PUSHED_BODY = {
    "module": "m",
    "path": "m.py",
    "source": "X = 1\n",
    "sha256": PUSHED.sha256,
    "is_package": False,
}


def _wire(data: bytes) -> dict[str, object]:
    obj = msgpack.unpackb(data, raw=False)
    assert isinstance(obj, dict)
    return obj


# (message, version) -> the exact body on the wire
ENCODINGS = [
    (ReloadRequest(("m",), deadline_s=2.0), 1, V1_RELOAD_BODY),
    (
        ReloadRequest(("m",), deadline_s=2.0),
        2,
        {**V1_RELOAD_BODY, "wait_s": 0.0, "verify": "", **NO_PUSH},
    ),
    (
        ReloadRequest(("m",), deadline_s=2.0, wait_s=1.5, verify="m.checks:ok"),
        2,
        {**V1_RELOAD_BODY, "wait_s": 1.5, "verify": "m.checks:ok", **NO_PUSH},
    ),
    (
        ReloadRequest(("m",), deadline_s=2.0, push=(PUSHED,), write=True, allow_new_top_level=True),
        2,
        {
            **V2_RELOAD_BODY,
            "push": [PUSHED_BODY],
            "write": True,
            "allow_new_top_level": True,
        },
    ),
    (RollbackRequest(("m",), deadline_s=2.0), 1, {"modules": ["m"], "deadline_s": 2.0}),
    (
        RollbackRequest(("m",), deadline_s=2.0, wait_s=0.5),
        2,
        {"modules": ["m"], "deadline_s": 2.0, "wait_s": 0.5},
    ),
    (StatusRequest(), 1, {}),
    (StatusRequest(), 2, {}),
    (PollRequest("j", 1, 0.5), 1, {"job": "j", "cursor": 1, "wait_s": 0.5}),
    (JobAccepted("j"), 1, {"job": "j"}),
    (ErrorReply("busy", "x"), 2, {"code": "busy", "message": "x"}),
]


@pytest.mark.parametrize(("message", "version", "body"), ENCODINGS)
def test_encoding_per_version(message: object, version: int, body: dict[str, object]) -> None:
    data = codec.encode(message, version)  # type: ignore[arg-type]
    assert _wire(data) == {"v": version, "t": codec.TAGS[type(message)], "b": body}
    assert codec.decode_versioned(data) == (message, version)


def test_default_version_is_the_newest() -> None:
    assert codec.VERSION == 2
    assert codec.VERSIONS == (1, 2)
    assert _wire(codec.encode(StatusRequest()))["v"] == 2


NOT_IN_V1 = [
    ReloadRequest(("m",), wait_s=1.0),
    ReloadRequest(("m",), verify="m:f"),
    RollbackRequest(("m",), wait_s=0.1),
    ReloadRequest(("m",), push=(PUSHED,)),
    ReloadRequest(("m",), push_trees=("m",)),
    ReloadRequest(("m",), write=True),
    ReloadRequest(("m",), allow_new_top_level=True),
]


@pytest.mark.parametrize("message", NOT_IN_V1)
def test_protocol_2_fields_are_not_expressible_in_1(message: object) -> None:
    with pytest.raises(LocalProtocolError, match="needs protocol 2"):
        codec.encode(message, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [0, 3, True, "2"])
def test_unknown_version_is_not_encoded(version: object) -> None:
    with pytest.raises(LocalProtocolError):
        codec.encode(StatusRequest(), version)  # type: ignore[arg-type]


def _env(v: object, t: str, b: object) -> bytes:
    return msgpack.packb({"v": v, "t": t, "b": b}, use_bin_type=True)


REJECTED = [
    ("v1 body with a v2 field", _env(1, "reload", {**V1_RELOAD_BODY, "wait_s": 1.0})),
    ("v1 body with verify", _env(1, "reload", {**V1_RELOAD_BODY, "verify": "m:f"})),
    ("v2 body without its fields", _env(2, "reload", V1_RELOAD_BODY)),
    (
        "v2 negative wait",
        _env(2, "reload", {**V1_RELOAD_BODY, "wait_s": -1.0, "verify": "", **NO_PUSH}),
    ),
    (
        "v2 verify not str",
        _env(2, "reload", {**V1_RELOAD_BODY, "wait_s": 0.0, "verify": 1, **NO_PUSH}),
    ),
    (
        "v2 huge verify",
        _env(2, "reload", {**V1_RELOAD_BODY, "wait_s": 0, "verify": "x" * 600, **NO_PUSH}),
    ),
    ("v1 body with a push", _env(1, "reload", {**V1_RELOAD_BODY, "push": [PUSHED_BODY]})),
    ("v1 body with write", _env(1, "reload", {**V1_RELOAD_BODY, "write": False})),
    (
        "v1 body with every push field",
        _env(1, "reload", {**V1_RELOAD_BODY, **NO_PUSH}),
    ),
    (
        "v2 body without the push fields",
        _env(2, "reload", {**V1_RELOAD_BODY, "wait_s": 0.0, "verify": ""}),
    ),
    (
        "v2 push not an array",
        _env(2, "reload", {**V2_RELOAD_BODY, "push": PUSHED_BODY}),
    ),
    (
        "v2 pushed file without its digest",
        _env(
            2,
            "reload",
            {**V2_RELOAD_BODY, "push": [{k: v for k, v in PUSHED_BODY.items() if k != "sha256"}]},
        ),
    ),
    (
        "rollback v1 with wait",
        _env(1, "rollback", {"modules": ["m"], "deadline_s": 1.0, "wait_s": 1}),
    ),
    ("version 3", _env(3, "status", {})),
]


@pytest.mark.parametrize(("name", "data"), REJECTED, ids=[r[0] for r in REJECTED])
def test_wrong_fields_for_the_version_are_rejected(name: str, data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        codec.decode(data)


def test_v1_body_decodes_to_v2_defaults() -> None:
    message, version = codec.decode_request_versioned(_env(1, "reload", V1_RELOAD_BODY))
    assert version == 1
    assert message == ReloadRequest(("m",), deadline_s=2.0, wait_s=0.0, verify="")
    assert isinstance(message, ReloadRequest)
    assert (message.push, message.push_trees, message.write, message.allow_new_top_level) == (
        (),
        (),
        False,
        False,
    )


INFO = AgentInfo(
    pid=1,
    program="app.py",
    python="3.11.9",
    version="0.1.0",
    started_at=1.0,
    uptime_s=2.0,
    address="unix:///tmp/a.sock",
    read_only=False,
    patched=(PatchedModule("m", 2, 3.0, False, origin="push:0123456789ab", digest="f" * 64),),
)
V1_PATCHED_KEYS = {"module", "reloads", "last_reload", "diverged"}


def test_a_status_reply_in_protocol_1_has_exactly_the_original_fields() -> None:
    # an agent answers a protocol-1 client in protocol 1: where a patched module's code
    # came from (issue 15) is protocol 2's; an old client would refuse the extra keys
    body = _wire(codec.encode(INFO, 1))["b"]
    assert isinstance(body, dict)
    assert [set(p) for p in body["patched"]] == [V1_PATCHED_KEYS]
    decoded, version = codec.decode_reply_versioned(codec.encode(INFO, 1))
    assert version == 1 and isinstance(decoded, AgentInfo)
    assert decoded.patched == (PatchedModule("m", 2, 3.0, False),)
    assert decoded.patched[0].origin == "" and decoded.patched[0].digest == ""


def test_a_status_reply_in_protocol_2_says_where_the_code_came_from() -> None:
    body = _wire(codec.encode(INFO, 2))["b"]
    assert isinstance(body, dict)
    assert [set(p) for p in body["patched"]] == [V1_PATCHED_KEYS | {"origin", "digest"}]
    assert codec.decode_reply_versioned(codec.encode(INFO, 2)) == (INFO, 2)


def test_patched_module_fields_of_one_version_are_refused_in_the_other() -> None:
    body = _wire(codec.encode(INFO, 2))["b"]
    with pytest.raises(RemoteProtocolError, match="extra"):
        codec.decode(_env(1, "info", body))  # protocol 2's origin in a protocol-1 reply
    body = _wire(codec.encode(INFO, 1))["b"]
    with pytest.raises(RemoteProtocolError, match="missing"):
        codec.decode(_env(2, "info", body))


def test_only_a_push_may_exceed_the_message_limit() -> None:
    source = "X = '" + "x" * codec.MAX_MESSAGE_BYTES + "'\n"
    big = PushedSource("m", "m.py", source, hashlib.sha256(source.encode()).hexdigest())
    data = codec.encode(ReloadRequest(("m",), push=(big,)), 2)
    assert codec.MAX_MESSAGE_BYTES < len(data) <= codec.MAX_PUSH_MESSAGE_BYTES
    assert codec.decode_request_versioned(data)[0] == ReloadRequest(("m",), push=(big,))
    with pytest.raises(LocalProtocolError, match="needs protocol 2"):
        codec.encode(ReloadRequest(("m",), push=(big,)), 1)
    with pytest.raises(LocalProtocolError, match="byte limit"):
        codec.encode(ErrorReply("internal", source), 2)


def test_reply_direction_and_version() -> None:
    events = JobEvents("j", 1, (), True)
    assert codec.decode_reply_versioned(codec.encode(events, 1)) == (events, 1)
    with pytest.raises(RemoteProtocolError, match="expected a reply"):
        codec.decode_reply_versioned(codec.encode(StatusRequest(), 1))


def test_unsupported_version_message_names_what_this_side_speaks() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        codec.decode(_env(7, "status", {}))
    assert str(info.value) == "unsupported protocol version '7' (this side speaks 1, 2)"
    assert codec.spoken_versions(str(info.value)) == (1, 2)


SPOKEN = [
    # what a protocol-1 agent (reloadctl before protocol 2) answers to a v2 request
    ("unsupported protocol version '2' (this side speaks 1)", (1,)),
    ("unsupported protocol version '9' (this side speaks 1, 2)", (1, 2)),
    ("unsupported protocol version '9' (this side speaks 1,2,3)", (1, 2, 3)),
    ("unknown message type 'x'", None),
    ("unsupported protocol version '2' (this side speaks one)", None),
    ("unsupported protocol version '2' (this side speaks )", None),
    ("unsupported protocol version '2'", None),
    ("unsupported protocol version '2' (this side speaks 1", None),
    ("", None),
]


@pytest.mark.parametrize(("message", "expected"), SPOKEN)
def test_spoken_versions(message: str, expected: tuple[int, ...] | None) -> None:
    assert codec.spoken_versions(message) == expected
