"""Local discovery on real sockets and real processes: live kept, stale removed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reloadctl.client.discovery import discover, process_alive
from reloadctl.errors import ConfigError


@pytest.fixture
def sockdir(tmp_path: Path) -> Path:
    d = tmp_path / "reloadctl"
    d.mkdir(mode=0o700)
    return d


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def make_socket(path: Path) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(str(path))
    finally:
        s.close()  # the file stays: exactly what a crashed agent leaves behind


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    return proc.pid


def test_live_kept_stale_removed_others_ignored(
    sockdir: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    live = sockdir / f"shop-{sleeper.pid}.sock"
    mine = sockdir / f"worker-{os.getpid()}.sock"
    stale = sockdir / f"gone-{dead_pid()}.sock"
    for p in (live, mine, stale):
        make_socket(p)
    (sockdir / "notes.txt").write_text("not a socket")
    (sockdir / f"fake-{sleeper.pid}.sock").write_text("a regular file, not a socket")
    make_socket(sockdir / "badname.sock")
    found = discover(sockdir)
    assert sorted((a.prog, a.pid) for a in found) == sorted(
        [("shop", sleeper.pid), ("worker", os.getpid())]
    )
    assert all(a.address == f"unix://{a.path}" for a in found)
    assert not stale.exists()
    assert (sockdir / "notes.txt").exists() and (sockdir / "badname.sock").exists()


def test_reused_pid_is_stale(sockdir: Path, sleeper: subprocess.Popen[bytes]) -> None:
    old = sockdir / f"shop-{sleeper.pid}.sock"
    make_socket(old)
    # The socket was made long before this process started: its pid was reused.
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago), follow_symlinks=False)
    assert discover(sockdir) == []
    assert not old.exists()


def test_missing_directory_is_empty(tmp_path: Path) -> None:
    assert discover(tmp_path / "nothing") == []


def test_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to chown")
    d = tmp_path / "theirs"
    d.mkdir()
    os.chown(d, 12345, 12345)
    with pytest.raises(ConfigError, match="belongs to uid 12345"):
        discover(d)


def test_process_alive() -> None:
    assert process_alive(os.getpid())
    assert not process_alive(dead_pid())
    assert not process_alive(os.getpid(), since=time.time() - 3600)
