"""Helpers for the agent and connection tests: short dirs, raw clients, subprocess agents."""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reloadctl.proto import auth, codec
from reloadctl.proto.messages import AgentInfo, Reply, Request, StatusRequest

SECRET = b"correct horse battery staple"


@contextmanager
def short_tmpdir() -> Iterator[Path]:
    """A private directory with a short path (unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def recv_exact(sock: socket.socket, n: int, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True when the peer closes ``sock`` (EOF or reset) within ``timeout``; drains data."""
    end = time.monotonic() + timeout
    sock.settimeout(0.2)
    while time.monotonic() < end:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
        if not data:
            return True
    return False


def connect_address(address: str) -> socket.socket:
    if address.startswith("unix://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(address[len("unix://") :])
        return sock
    host, port = address[len("tcp://") :].rsplit(":", 1)
    return socket.create_connection((host.strip("[]"), int(port)), timeout=5)


def handshake(sock: socket.socket, secret: bytes | None, *, require_mac: bool) -> auth.Session:
    client = auth.ClientHandshake(secret, require_mac=require_mac)
    sock.sendall(client.answer(auth.read_frame(lambda n: recv_exact(sock, n))))
    return client.finish(auth.read_frame(lambda n: recv_exact(sock, n)))


class RawClient:
    """An authenticated rpyc connection that lets a test send any (sealed or not) frame."""

    def __init__(self, address: str, secret: bytes | None = SECRET) -> None:
        from rpyc.core.channel import Channel
        from rpyc.core.stream import SocketStream
        from rpyc.utils.factory import connect_channel

        self.sock = connect_address(address)
        self.session = handshake(self.sock, secret, require_mac=not address.startswith("unix"))
        self.sock.settimeout(None)
        self.conn = connect_channel(
            Channel(SocketStream(self.sock), compress=False),
            config={"allow_pickle": False, "sync_request_timeout": 10},
        )
        self.root = self.conn.root

    def call(self, request: Request, method: str = "submit") -> Reply:
        raw = getattr(self.root, method)(self.session.seal(codec.encode(request)))
        assert type(raw) is bytes
        return codec.decode_reply(self.session.unseal(raw))

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()
        self.sock.close()


AGENT_SCRIPT = textwrap.dedent(
    """
    import ast, sys
    import reloadctl.agent
    kwargs = ast.literal_eval(sys.argv[1])
    agent = reloadctl.agent.start(**kwargs)
    print(agent.address, flush=True)
    sys.stdin.read()  # serve until the test closes our stdin
    agent.stop()
    """
)


class AgentProcess:
    """An agent in a child process (its stdout carries the address; stderr is captured)."""

    def __init__(self, env: dict[str, str] | None = None, **kwargs: object) -> None:
        full_env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", AGENT_SCRIPT, repr(kwargs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        if not ready:
            self.stop()
            raise AssertionError("agent process did not start")
        self.address = self.proc.stdout.readline().decode().strip()
        if not self.address:
            _out, err = self.stop()
            raise AssertionError(f"agent process failed: {err!r}")

    def vm_hwm_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")

    def stop(self) -> tuple[bytes, bytes]:
        """Close stdin, wait for exit, return (stdout, stderr)."""
        try:
            out, err = self.proc.communicate(input=b"", timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return out, err


def agent_status(address: str, secret: bytes | None = None) -> AgentInfo:
    """A real status request to the agent at ``address``."""
    from reloadctl.client.connection import execute
    from reloadctl.secrets import Secret

    info = execute(
        address,
        StatusRequest(),
        secret=None if secret is None else Secret(secret),
        connect_timeout=2,
        timeout=5,
    )
    assert isinstance(info, AgentInfo)
    return info


def run_python(
    code: str, env: dict[str, str], timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) in a fresh interpreter with ``env`` added to ours."""
    return subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        check=False,
    )


def wait_for(
    what: str, check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02
) -> Any:
    """Poll ``check`` until it returns something truthy (returned); fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
