"""Protocol versions: protocol 1 exactly as before, protocol 2's new fields, what each reads."""

from __future__ import annotations

import msgpack
import pytest

from reloadctl.errors import LocalProtocolError, RemoteProtocolError
from reloadctl.proto import codec
from reloadctl.proto.messages import (
    ErrorReply,
    JobAccepted,
    JobEvents,
    PollRequest,
    ReloadRequest,
    RollbackRequest,
    StatusRequest,
)

V1_RELOAD_BODY = {"modules": ["m"], "dry_run": False, "dependents": False, "deadline_s": 2.0}


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
        {**V1_RELOAD_BODY, "wait_s": 0.0, "verify": ""},
    ),
    (
        ReloadRequest(("m",), deadline_s=2.0, wait_s=1.5, verify="m.checks:ok"),
        2,
        {**V1_RELOAD_BODY, "wait_s": 1.5, "verify": "m.checks:ok"},
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
        _env(2, "reload", {**V1_RELOAD_BODY, "wait_s": -1.0, "verify": ""}),
    ),
    ("v2 verify not str", _env(2, "reload", {**V1_RELOAD_BODY, "wait_s": 0.0, "verify": 1})),
    ("v2 huge verify", _env(2, "reload", {**V1_RELOAD_BODY, "wait_s": 0, "verify": "x" * 600})),
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
