"""An impostor agent: a socket served by another uid gets nothing from the client, not even
a proof (the uid is checked before the first byte is read or sent)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentkit import short_tmpdir

from reloadctl.client.connection import execute
from reloadctl.errors import TargetAuthFailed
from reloadctl.proto import auth
from reloadctl.proto.messages import ReloadRequest

NOBODY = 65534
SYSTEM_PYTHON = next(
    (p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if Path(p).exists()), None
)

pytestmark = pytest.mark.skipif(
    os.getuid() != 0 or SYSTEM_PYTHON is None,
    reason="needs root (to run the impostor as another uid) and a system python3",
)

IMPOSTOR = textwrap.dedent(
    """
    import socket, sys
    hello = bytes.fromhex(sys.argv[2])
    s = socket.socket(socket.AF_UNIX)
    s.bind(sys.argv[1]); s.listen()
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        got = b""
        try:
            c.sendall(hello)  # a perfect hello: mode "none", as a real unix agent sends
            c.settimeout(3)
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                got += chunk
        except OSError:
            pass
        print(len(got), flush=True)
        c.close()
    """
)


@pytest.fixture
def impostor() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with short_tmpdir() as d:
        shared = d / "shared"
        shared.mkdir()
        shared.chmod(0o777)  # a directory where another uid could plant a socket
        d.chmod(0o755)
        path = shared / "victim-4242.sock"
        hello = auth.ServerHandshake(None).hello()
        proc = subprocess.Popen(
            [str(SYSTEM_PYTHON), "-c", IMPOSTOR, str(path), hello.hex()],
            user=NOBODY,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == b"ready"
            yield f"unix://{path}", proc
        finally:
            proc.kill()
            proc.communicate()
            d.chmod(0o700)


def test_client_refuses_an_impostor_and_sends_it_nothing(
    impostor: tuple[str, subprocess.Popen[bytes]],
) -> None:
    address, proc = impostor
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(TargetAuthFailed, match=f"uid {NOBODY}"):
            execute(
                address,
                ReloadRequest(("shop.pricing",)),
                secret=None,
                connect_timeout=3,
                timeout=5,
            )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"0"  # not one byte reached it
    assert len(os.listdir("/proc/self/fd")) == fds


def test_cli_exit_code_for_an_impostor(impostor: tuple[str, subprocess.Popen[bytes]]) -> None:
    address, _proc = impostor
    reloadctl = Path(sys.executable).with_name("reloadctl")
    if not reloadctl.exists():
        pytest.skip("reloadctl console script not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELOADCTL_")}
    out = subprocess.run(
        [str(reloadctl), "reload", "-H", address, "-o", "ndjson", "shop.pricing"],
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert out.returncode == 4, (out.stdout, out.stderr)
    assert b"auth_failed" in out.stdout and b"impostor" in out.stdout
