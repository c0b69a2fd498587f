"""The codec: round trips of every message, strict rejection of garbage, fuzzed decode."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reloadctl.errors import LocalProtocolError, RemoteProtocolError
from reloadctl.proto import codec
from reloadctl.proto.messages import (
    AgentInfo,
    ErrorReply,
    JobAccepted,
    JobEvents,
    PollRequest,
    ReloadRequest,
    RollbackRequest,
    StatusRequest,
)
from reloadctl.results import Action, ErrorInfo, ModuleResult, PatchedModule

RESULT = ModuleResult(
    module="pkg.mod",
    status="failed",
    error=ErrorInfo("SyntaxError", "invalid syntax", "Traceback ..."),
    actions=(Action("patched", "pkg.mod.f"), Action("added", "pkg.mod.g", "new")),
    warnings=("instances keep the old class",),
    duration_ms=1.5,
)

MESSAGES = [
    ReloadRequest(("a", "b.c"), dry_run=True, dependents=True, deadline_s=5.0),
    ReloadRequest(("a",)),
    RollbackRequest(("a",), deadline_s=2.5),
    StatusRequest(),
    PollRequest("j1", cursor=3, wait_s=0.0),
    JobAccepted("j1"),
    JobEvents("j1", 2, (RESULT, ModuleResult("x", "reloaded")), done=True),
    JobEvents("j1", 0),
    AgentInfo(
        pid=42,
        program="svc",
        python="3.11.7",
        version="0.1.0",
        started_at=1.7e9,
        uptime_s=3.0,
        address="unix:///tmp/x.sock",
        read_only=True,
        patched=(PatchedModule("m", 2, 1.7e9, None), PatchedModule("n", 1, 1.0, True)),
    ),
    ErrorReply("forbidden", "read-only agent"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message: object) -> None:
    data = codec.encode(message)  # type: ignore[arg-type]
    assert type(data) is bytes
    assert codec.decode(data) == message


def test_int_deadline_is_normalised_to_float() -> None:
    decoded = codec.decode(codec.encode(ReloadRequest(("m",), deadline_s=3)))  # type: ignore[arg-type]
    assert isinstance(decoded, ReloadRequest)
    assert decoded.deadline_s == 3.0 and type(decoded.deadline_s) is float


def test_direction_is_enforced() -> None:
    with pytest.raises(RemoteProtocolError, match="expected a request"):
        codec.decode_request(codec.encode(JobAccepted("j")))
    with pytest.raises(RemoteProtocolError, match="expected a reply"):
        codec.decode_reply(codec.encode(StatusRequest()))


def _env(t: str, b: object, v: object = 1) -> bytes:
    return msgpack.packb({"v": v, "t": t, "b": b}, use_bin_type=True)


GOOD_RELOAD = {"modules": ["m"], "dry_run": False, "dependents": False, "deadline_s": 1.0}

GARBAGE = [
    ("empty", b""),
    ("not msgpack", b"\xc1"),
    ("truncated", codec.encode(StatusRequest())[:-1]),
    ("trailing bytes", codec.encode(StatusRequest()) + b"\x00"),
    ("not a map", msgpack.packb([1, 2, 3])),
    ("missing key", msgpack.packb({"v": 1, "t": "status"})),
    ("extra envelope key", msgpack.packb({"v": 1, "t": "status", "b": {}, "x": 1})),
    ("version 3", _env("status", {}, v=3)),
    ("version 0", _env("status", {}, v=0)),
    ("version bool", _env("status", {}, v=True)),
    ("version str", _env("status", {}, v="1")),
    ("unknown tag", _env("exec", {})),
    ("tag not str", _env(5, {})),  # type: ignore[arg-type]
    ("body not map", _env("status", [])),
    ("extra field", _env("status", {"x": 1})),
    ("missing field", _env("reload", {"modules": ["m"]})),
    ("bool as float", _env("reload", {**GOOD_RELOAD, "deadline_s": True})),
    ("int as bool", _env("reload", {**GOOD_RELOAD, "dry_run": 1})),
    ("modules not list", _env("reload", {**GOOD_RELOAD, "modules": "m"})),
    ("no modules", _env("reload", {**GOOD_RELOAD, "modules": []})),
    ("empty module", _env("reload", {**GOOD_RELOAD, "modules": [""]})),
    ("bytes module", _env("reload", {**GOOD_RELOAD, "modules": [b"m"]})),
    ("huge name", _env("reload", {**GOOD_RELOAD, "modules": ["m" * 10_000]})),
    ("too many", _env("reload", {**GOOD_RELOAD, "modules": ["m"] * 1001})),
    ("zero deadline", _env("reload", {**GOOD_RELOAD, "deadline_s": 0.0})),
    ("nan deadline", _env("reload", {**GOOD_RELOAD, "deadline_s": math.nan})),
    ("inf wait", _env("poll", {"job": "j", "cursor": 0, "wait_s": math.inf})),
    ("negative cursor", _env("poll", {"job": "j", "cursor": -1, "wait_s": 1.0})),
    ("huge int", _env("poll", {"job": "j", "cursor": 2**64 - 1, "wait_s": 1.0})),
    (
        "bad status",
        _env(
            "events",
            {
                "job": "j",
                "cursor": 1,
                "done": True,
                "results": [
                    {
                        "module": "m",
                        "status": "pwned",
                        "error": None,
                        "actions": [],
                        "warnings": [],
                        "duration_ms": 0.0,
                    }
                ],
            },
        ),
    ),
    ("bad error code", _env("error", {"code": "x", "message": ""})),
    ("bytes key", msgpack.packb({b"v": 1, "t": "status", "b": {}}, use_bin_type=True)),
    ("int key", b"\x81\x01\x01"),
    ("ext type", _env("error", {"code": "internal", "message": msgpack.ExtType(5, b"x")})),
    ("bad utf8", b"\x83\xa1v\x01\xa1t\xa2\xff\xfe\xa1b\x80"),
    ("deep nesting", b"\x91" * 5000),
    ("array32 claim", b"\xdd\xff\xff\xff\xff"),
    ("oversized", b"\x00" * (codec.MAX_MESSAGE_BYTES + 1)),
]


@pytest.mark.parametrize(("name", "data"), GARBAGE, ids=[g[0] for g in GARBAGE])
def test_garbage_is_remote_protocol_error(name: str, data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        codec.decode(data)


@pytest.mark.parametrize("value", [bytearray(b"x"), "str", None, memoryview(b"x")])
def test_non_bytes_rejected(value: object) -> None:
    with pytest.raises(RemoteProtocolError, match="expected bytes"):
        codec.decode(value)


@pytest.mark.parametrize(
    "message",
    [
        ModuleResult("m", "weird"),
        ReloadRequest(()),
        ReloadRequest(["m"]),  # type: ignore[arg-type]
        ErrorReply("nope", "x"),
        PollRequest("j", cursor=-1),
        JobEvents("j", 0, (ModuleResult("m", "reloaded"),) * (codec.MAX_RESULTS + 1)),
        ErrorReply("internal", "x" * codec.MAX_MESSAGE_BYTES),
        object(),
    ],
    ids=lambda m: type(m).__name__,
)
def test_encode_errors_are_local(message: object) -> None:
    with pytest.raises(LocalProtocolError):
        codec.encode(message)  # type: ignore[arg-type]


_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.sampled_from(["reload", "poll", "status", "events", "v", "t", "b", "modules"]),
)
_tree = st.recursive(
    _leaf,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    try:
        codec.decode(data)
    except RemoteProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(codec.TAGS.values())), _tree, st.sampled_from([1, 1, 2, "1"]))
def test_fuzz_structured(tag: str, body: object, version: object) -> None:
    data = msgpack.packb({"v": version, "t": tag, "b": body}, use_bin_type=True)
    try:
        message = codec.decode(data)
    except RemoteProtocolError:
        return
    # whatever decodes is a valid message that re-encodes to an equal message
    assert codec.decode(codec.encode(message)) == message


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(MESSAGES), st.data())
def test_fuzz_mutated_valid_messages(message: object, data: st.DataObject) -> None:
    raw = bytearray(codec.encode(message))  # type: ignore[arg-type]
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    try:
        codec.decode(bytes(raw))
    except RemoteProtocolError:
        pass
