"""Address parsing and formatting, and the default socket dir and name rules."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from reloadctl.errors import AddressError
from reloadctl.proto.address import (
    DEFAULT_PORT,
    Address,
    default_socket_dir,
    format_address,
    is_loopback_host,
    parse_address,
    parse_socket_name,
    program_name,
    socket_name,
)

GOOD = [
    (
        "unix:///run/user/1/reloadctl/app-12.sock",
        Address("unix", path="/run/user/1/reloadctl/app-12.sock"),
        "unix:///run/user/1/reloadctl/app-12.sock",
    ),
    ("tcp://10.0.0.1:9000", Address("tcp", "10.0.0.1", 9000), "tcp://10.0.0.1:9000"),
    ("tcp://web1", Address("tcp", "web1", DEFAULT_PORT), "tcp://web1:7878"),
    ("TCP://web1:1", Address("tcp", "web1", 1), "tcp://web1:1"),
    (
        "tls://api.example.com:443",
        Address("tls", "api.example.com", 443),
        "tls://api.example.com:443",
    ),
    ("web-1.internal", Address("tcp", "web-1.internal", DEFAULT_PORT), "tcp://web-1.internal:7878"),
    ("localhost:8000", Address("tcp", "localhost", 8000), "tcp://localhost:8000"),
    ("  127.0.0.1:65535 ", Address("tcp", "127.0.0.1", 65535), "tcp://127.0.0.1:65535"),
    ("[::1]:7879", Address("tcp", "::1", 7879), "tcp://[::1]:7879"),
    ("[::1]", Address("tcp", "::1", DEFAULT_PORT), "tcp://[::1]:7878"),
    ("tcp://[fe80::1]:80", Address("tcp", "fe80::1", 80), "tcp://[fe80::1]:80"),
]


@pytest.mark.parametrize(("text", "addr", "canonical"), GOOD, ids=[g[0] for g in GOOD])
def test_parse_and_format(text: str, addr: Address, canonical: str) -> None:
    assert parse_address(text) == addr
    assert format_address(addr) == canonical == str(addr)
    assert parse_address(canonical) == addr


BAD = [
    ("", "empty"),
    ("   ", "empty"),
    ("http://x:1", "unknown scheme"),
    ("unix://relative.sock", "absolute path"),
    ("unix:///" + "x" * 200, "longer than"),
    ("tcp://", "missing host"),
    ("tcp://:80", "missing host"),
    ("host:0", "out of range"),
    ("host:65536", "out of range"),
    ("host:http", "invalid port"),
    ("host:-1", "invalid port"),
    ("::1", "brackets"),
    ("[::1", "unclosed"),
    ("[nothex]:1", "invalid IPv6"),
    ("[::1]x", "unexpected"),
    ("tcp://user@host:1", "cannot parse"),
    ("tcp://host:1/path", "cannot parse"),
    ("/tmp/x.sock", "unix:///"),
    ("ho st", "whitespace"),
    ("ho\nst", "whitespace"),
    ("bad$host", "invalid host"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD, ids=[repr(b[0]) for b in BAD])
def test_bad_addresses(text: str, fragment: str | None) -> None:
    with pytest.raises(AddressError) as info:
        parse_address(text)
    message = str(info.value)
    assert "\n" not in message
    if fragment:
        assert fragment in message


def test_non_string_address() -> None:
    with pytest.raises(AddressError):
        parse_address(7878)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.5.5.5", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("example.com", False),
        ("::", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback_host(host) is expected


def test_default_socket_dir() -> None:
    assert default_socket_dir({"XDG_RUNTIME_DIR": "/run/user/5"}) == Path("/run/user/5/reloadctl")
    assert default_socket_dir({}, uid=5) == Path("/tmp/reloadctl-5")
    # a relative runtime dir is ignored (XDG spec: must be absolute)
    assert default_socket_dir({"XDG_RUNTIME_DIR": "rel"}, uid=5).name == "reloadctl-5"


def test_default_socket_dir_follows_the_temp_dir_like_tempfile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without XDG_RUNTIME_DIR the directory is under tempfile.gettempdir()'s choice, found
    without importing tempfile (the agent must not load it into the host)."""
    for var in ("XDG_RUNTIME_DIR", "TEMP", "TMP"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() caches its answer
    assert default_socket_dir(uid=5) == Path(tempfile.gettempdir()) / "reloadctl-5"
    assert default_socket_dir(uid=5) == tmp_path / "reloadctl-5"
    # a TMPDIR that is not a directory is skipped, as tempfile skips it
    monkeypatch.setenv("TMPDIR", str(tmp_path / "missing"))
    monkeypatch.setattr(tempfile, "tempdir", None)
    assert default_socket_dir(uid=5) == Path(tempfile.gettempdir()) / "reloadctl-5"
    assert default_socket_dir({"TEMP": str(tmp_path)}, uid=5) == tmp_path / "reloadctl-5"


@pytest.mark.parametrize(
    ("raw", "prog"),
    [
        ("/srv/app/worker.py", "worker"),
        ("gunicorn", "gunicorn"),
        ("my app!.py", "my_app"),
        ("pkg.mod", "pkg.mod"),
        ("", "python"),
        ("-c", "c"),
        ("x" * 100, "x" * 40),
    ],
)
def test_program_name(raw: str, prog: str) -> None:
    assert program_name(raw) == prog


def test_socket_name_round_trip() -> None:
    name = socket_name("my-worker.py", 4242)
    assert name == "my_worker-4242.sock"
    assert parse_socket_name(name) == ("my_worker", 4242)
    assert parse_socket_name("a.b-1.sock") == ("a.b", 1)


@pytest.mark.parametrize(
    "name",
    [
        "x.sock",
        "x-.sock",
        "x-0.sock",
        "x-12.sock.bak",
        "-12.sock",
        "x-12",
        "x y-1.sock",
        "x-01.sock",
    ],
)
def test_parse_socket_name_rejects(name: str) -> None:
    assert parse_socket_name(name) is None


def test_socket_name_needs_positive_pid() -> None:
    with pytest.raises(ValueError):
        socket_name("x", 0)


def test_port_zero_only_for_listen_addresses() -> None:
    assert parse_address("tcp://127.0.0.1:0", listen=True) == Address("tcp", "127.0.0.1", 0)
    with pytest.raises(AddressError, match="out of range"):
        parse_address("tcp://127.0.0.1:0")
