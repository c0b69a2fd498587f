"""tls:// end to end: verified certificates both ways, mutual TLS, and every way it must fail."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from agentkit import SECRET, closed_by_peer, short_tmpdir
from seckit import OPENSSL, Pki, make_pki

from reloadctl.agent import Agent, start
from reloadctl.client.connection import TlsSettings, execute
from reloadctl.client.settings import TLS_CA, TLS_CERT, TLS_KEY
from reloadctl.errors import (
    ConfigError,
    SecretError,
    TargetAuthFailed,
    TargetTimeout,
    TargetUnreachable,
)
from reloadctl.proto.messages import AgentInfo, ReloadRequest, StatusRequest
from reloadctl.secrets import Secret

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl binary for test certs")


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    with short_tmpdir() as d:
        yield make_pki(d)


def _mtls(agents: Callable[..., Agent], pki: Pki, **kw: object) -> Agent:
    return agents(
        "tls://127.0.0.1:0",
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tls_ca=pki.ca,
        **kw,
    )


def call(address: str, tls: TlsSettings, secret: bytes | None = None, request: object = None):  # type: ignore[no-untyped-def]
    return execute(
        address,
        request or StatusRequest(),  # type: ignore[arg-type]
        secret=None if secret is None else Secret(secret),
        connect_timeout=3.0,
        timeout=10.0,
        tls=tls,
    )


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_mutual_tls_replaces_the_secret_and_reloads(
    agents: Callable[..., Agent], pki: Pki, module: Callable[[str], tuple[ModuleType, Path]]
) -> None:
    mod, path = module("VALUE = 1\n")
    agent = _mtls(agents, pki)
    assert agent.address.startswith("tls://127.0.0.1:")
    good = TlsSettings(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    info = call(agent.address, good)
    assert isinstance(info, AgentInfo) and info.pid == os.getpid()
    path.write_text("VALUE = 2\n")
    results = call(agent.address, good, request=ReloadRequest((mod.__name__,)))
    assert [r.status for r in results] == ["reloaded"]
    assert mod.VALUE == 2


def test_client_without_or_with_a_foreign_certificate_is_refused(
    agents: Callable[..., Agent], pki: Pki
) -> None:
    agent = _mtls(agents, pki)
    for bad in (
        TlsSettings(ca=pki.ca),
        TlsSettings(ca=pki.ca, cert=pki.rogue_client_cert, key=pki.rogue_client_key),
    ):
        with pytest.raises(TargetAuthFailed, match="TLS"):
            call(agent.address, bad)
    # and the agent still serves a good client
    good = TlsSettings(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    assert isinstance(call(agent.address, good), AgentInfo)


def test_client_verifies_the_agent_certificate_and_name(
    agents: Callable[..., Agent], pki: Pki
) -> None:
    agent = agents(
        "tls://127.0.0.1:0", secret=SECRET, tls_cert=pki.server_cert, tls_key=pki.server_key
    )
    # a CA that did not sign the agent's certificate (an impostor would look like this)
    with pytest.raises(TargetAuthFailed, match="certificate does not verify"):
        call(agent.address, TlsSettings(ca=pki.rogue_ca), secret=SECRET)
    # no CA given: the system CAs do not know our private CA either
    with pytest.raises(TargetAuthFailed, match="certificate does not verify"):
        call(agent.address, TlsSettings(), secret=SECRET)
    assert isinstance(call(agent.address, TlsSettings(ca=pki.ca), secret=SECRET), AgentInfo)


def test_certificate_for_another_name_is_refused(agents: Callable[..., Agent], pki: Pki) -> None:
    agent = agents(
        "tls://127.0.0.1:0",
        secret=SECRET,
        tls_cert=pki.wrong_name_cert,
        tls_key=pki.wrong_name_key,
    )
    with pytest.raises(TargetAuthFailed, match="certificate does not verify"):
        call(agent.address, TlsSettings(ca=pki.ca), secret=SECRET)


def test_secret_inside_tls_is_still_checked(agents: Callable[..., Agent], pki: Pki) -> None:
    agent = agents(
        "tls://127.0.0.1:0", secret=SECRET, tls_cert=pki.server_cert, tls_key=pki.server_key
    )
    tls = TlsSettings(ca=pki.ca)
    with pytest.raises(TargetAuthFailed, match="requires a secret"):
        call(agent.address, tls)
    with pytest.raises(TargetAuthFailed, match="wrong secret"):
        call(agent.address, tls, secret=b"not the secret")
    assert isinstance(call(agent.address, tls, secret=SECRET), AgentInfo)


def test_settings_come_from_the_environment(
    agents: Callable[..., Agent], pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELOADCTL_AGENT_TLS_CERT", pki.server_cert)
    monkeypatch.setenv("RELOADCTL_AGENT_TLS_KEY", pki.server_key)
    monkeypatch.setenv("RELOADCTL_AGENT_TLS_CA", pki.ca)
    agent = agents("tls://127.0.0.1:0")
    # the client has its own names, read once at the CLI boundary and passed as a value
    monkeypatch.setenv("RELOADCTL_CLIENT_TLS_CA", pki.ca)
    monkeypatch.setenv("RELOADCTL_CLIENT_TLS_CERT", pki.client_cert)
    monkeypatch.setenv("RELOADCTL_CLIENT_TLS_KEY", pki.client_key)
    tls = TlsSettings(TLS_CA.read(None), TLS_CERT.read(None), TLS_KEY.read(None))
    info = execute(
        agent.address, StatusRequest(), secret=None, connect_timeout=3.0, timeout=10.0, tls=tls
    )
    assert isinstance(info, AgentInfo)


def test_the_old_shared_names(
    agents: Callable[..., Agent],
    pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The agent still takes RELOADCTL_TLS_CERT/_KEY, with one deprecation warning in its log
    (nothing printed); RELOADCTL_TLS_CA alone it refuses to guess about: to the CLI the name
    meant the agents' CA, so a shared environment silently made client certs mandatory."""
    monkeypatch.setenv("RELOADCTL_TLS_CERT", pki.server_cert)
    monkeypatch.setenv("RELOADCTL_TLS_KEY", pki.server_key)
    monkeypatch.setenv("RELOADCTL_TLS_CA", pki.ca)
    with pytest.raises(ConfigError, match="RELOADCTL_AGENT_TLS_CA"):
        agents("tls://127.0.0.1:0")
    monkeypatch.setenv("RELOADCTL_AGENT_TLS_CA", pki.ca)
    caplog.set_level("WARNING", logger="reloadctl.agent.config")
    caplog.clear()
    agent = agents("tls://127.0.0.1:0")
    deprecations = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert deprecations == [
        "RELOADCTL_TLS_CERT is deprecated: use RELOADCTL_AGENT_TLS_CERT",
        "RELOADCTL_TLS_KEY is deprecated: use RELOADCTL_AGENT_TLS_KEY",
    ]
    good = TlsSettings(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    assert isinstance(call(agent.address, good), AgentInfo)
    assert capfd.readouterr() == ("", "")


def _reloadctl(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("reloadctl")
    if not exe.exists():
        pytest.skip("reloadctl console script not installed")
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, env=env, timeout=30, check=False
    )


def test_cli_tls_environment(agents: Callable[..., Agent], pki: Pki) -> None:
    """The real binary: RELOADCTL_CLIENT_TLS_*, and the old names with one line each."""
    agent = _mtls(agents, pki)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RELOADCTL_")}
    args = ["status", "-H", agent.address, "-o", "ndjson"]
    files = {"CA": pki.ca, "CERT": pki.client_cert, "KEY": pki.client_key}
    new = _reloadctl(args, {**clean, **{f"RELOADCTL_CLIENT_TLS_{k}": v for k, v in files.items()}})
    assert new.returncode == 0, new.stderr
    assert str(os.getpid()) in new.stdout and "deprecated" not in new.stderr
    old = _reloadctl(args, {**clean, **{f"RELOADCTL_TLS_{k}": v for k, v in files.items()}})
    assert old.returncode == 0, old.stderr
    assert str(os.getpid()) in old.stdout
    deprecations = [line for line in old.stderr.splitlines() if "deprecated" in line]
    assert deprecations == [
        f"reloadctl: RELOADCTL_TLS_{k} is deprecated: use RELOADCTL_CLIENT_TLS_{k} "
        f"(agents: RELOADCTL_AGENT_TLS_{k})"
        for k in ("CA", "CERT", "KEY")
    ]


def test_tls_config_is_refused_when_incomplete(runtime_dir: Path, pki: Pki) -> None:
    with pytest.raises(ConfigError, match="certificate and its key"):
        start("tls://127.0.0.1:0", secret=SECRET)
    with pytest.raises(SecretError, match="client authentication"):
        start("tls://127.0.0.1:0", tls_cert=pki.server_cert, tls_key=pki.server_key)
    with pytest.raises(ConfigError, match="not a readable file"):
        start(
            "tls://127.0.0.1:0",
            secret=SECRET,
            tls_cert=pki.server_cert,
            tls_key=str(runtime_dir / "missing.key"),
        )


def test_plaintext_peers_get_nothing_and_leak_nothing(
    agents: Callable[..., Agent], pki: Pki
) -> None:
    agent = _mtls(agents, pki)
    host, port = agent.address[len("tls://") :].rsplit(":", 1)
    fds, threads = _fds(), threading.active_count()
    # a plain tcp client of ours: the TLS handshake fails on both sides
    with pytest.raises((TargetUnreachable, TargetAuthFailed, TargetTimeout)):
        execute(
            f"tcp://{host}:{port}",
            StatusRequest(),
            secret=Secret(SECRET),
            connect_timeout=2.0,
            timeout=4.0,
        )
    # raw garbage and a client that never starts TLS
    for payload in (b"\x00" * 64, b"GET / HTTP/1.1\r\n\r\n", b""):
        s = socket.create_connection((host, int(port)), timeout=5)
        try:
            if payload:
                s.sendall(payload)
            assert closed_by_peer(s, timeout=6)
        finally:
            s.close()
    good = TlsSettings(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    assert isinstance(call(agent.address, good), AgentInfo)
    end = time.monotonic() + 5
    while time.monotonic() < end and (_fds() > fds or threading.active_count() > threads):
        time.sleep(0.05)
    assert _fds() <= fds
    assert threading.active_count() <= threads


def test_stop_closes_an_idle_tls_connection(agents: Callable[..., Agent], pki: Pki) -> None:
    """A TLS connection idling in the agent is woken and closed by stop() (its fd moved)."""
    import ssl

    agent = _mtls(agents, pki)
    host, port = agent.address[len("tls://") :].rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=pki.ca)
    ctx.load_cert_chain(pki.client_cert, pki.client_key)
    raw = socket.create_connection((host, int(port)), timeout=5)
    tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    try:
        time.sleep(0.3)
        threads = [t for t in threading.enumerate() if t.name == "reloadctl-conn"]
        assert threads
        agent.stop()
        for t in threads:
            t.join(3)
            assert not t.is_alive()
    finally:
        tls.close()


def test_cli_tls_options(agents: Callable[..., Agent], pki: Pki) -> None:
    import subprocess
    import sys

    agent = _mtls(agents, pki)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELOADCTL_")}
    if not Path(sys.executable).with_name("reloadctl").exists():
        pytest.skip("reloadctl console script not installed")
    cli = [str(Path(sys.executable).with_name("reloadctl"))]
    base = ["--tls-ca", pki.ca, "status", "-H", agent.address, "-o", "ndjson"]
    ok = subprocess.run(
        [*cli, "--tls-cert", pki.client_cert, "--tls-key", pki.client_key, *base],
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr.decode()
    assert str(os.getpid()) in ok.stdout.decode()
    refused = subprocess.run([*cli, *base], capture_output=True, env=env, timeout=30, check=False)
    assert refused.returncode == 4, (refused.stdout, refused.stderr)
    assert b"auth_failed" in refused.stdout


TLS_AGENT = """
import sys
import reloadctl.agent
agent = reloadctl.agent.start("tls://127.0.0.1:0")
print(agent.address, flush=True)
sys.stdin.read()
agent.stop()
"""


@pytest.mark.timeout(90)
def test_tls_agent_process_under_failing_handshakes(pki: Pki, runtime_dir: Path) -> None:
    """100 clients without a certificate, 100 with a foreign one and 50 that send garbage:
    the agent process ends with the fds and threads it had, prints nothing, still serves."""
    import select
    import ssl
    import subprocess
    import sys

    from seckit import footprint

    env = {k: v for k, v in os.environ.items() if not k.startswith("RELOADCTL_")}
    env.update(
        XDG_RUNTIME_DIR=str(runtime_dir),
        RELOADCTL_AGENT_TLS_CERT=pki.server_cert,
        RELOADCTL_AGENT_TLS_KEY=pki.server_key,
        RELOADCTL_AGENT_TLS_CA=pki.ca,
    )
    proc = subprocess.Popen(
        [sys.executable, "-X", "dev", "-c", TLS_AGENT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        address = proc.stdout.readline().decode().strip() if ready else ""
        assert address, "agent did not start"
        host, port = address[len("tls://") :].rsplit(":", 1)
        good = TlsSettings(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
        assert isinstance(call(address, good), AgentInfo)
        time.sleep(0.3)
        before = footprint(proc.pid)
        n = 0

        def source() -> tuple[str, int]:  # fresh hosts: the failure rate limit is per host
            nonlocal n
            n += 1
            return (f"127.5.{n // 250}.{n % 250 + 1}", 0)

        for i in range(200):
            ctx = ssl.create_default_context(cafile=pki.ca)
            if i % 2:
                ctx.load_cert_chain(pki.rogue_client_cert, pki.rogue_client_key)
            raw = socket.create_connection((host, int(port)), timeout=5, source_address=source())
            try:
                tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            except (ssl.SSLError, OSError):
                raw.close()
                continue
            try:
                with contextlib.suppress(ssl.SSLError, OSError):
                    tls.recv(1)  # TLS 1.3: the refusal arrives after the handshake
            finally:
                tls.close()
        for payload in [os.urandom(64) for _ in range(25)] + [b"\x16\x03\x01\xff\xff" * 10] * 25:
            s = socket.create_connection((host, int(port)), timeout=5, source_address=source())
            try:
                with contextlib.suppress(OSError):
                    s.sendall(payload)
                    s.shutdown(socket.SHUT_WR)
                assert closed_by_peer(s, timeout=5)
            finally:
                s.close()
        assert isinstance(call(address, good), AgentInfo)
        end = time.monotonic() + 5
        after = footprint(proc.pid)
        while time.monotonic() < end and (after.fds > before.fds or after.threads > before.threads):
            time.sleep(0.05)
            after = footprint(proc.pid)
        print(f"\n[tls 250 failing handshakes] before: {before}; after: {after}")
        assert after.fds <= before.fds and after.threads <= before.threads
        assert after.rss_kib - before.rss_kib < 8 * 1024
    finally:
        _out, err = proc.communicate(input=b"", timeout=20)
    assert proc.returncode == 0
    assert err == b"", err.decode(errors="replace")


def test_world_readable_tls_key_is_refused(runtime_dir: Path, pki: Pki) -> None:
    import shutil

    key = runtime_dir / "open.key"
    shutil.copy(pki.server_key, key)
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by every user"):
        start("tls://127.0.0.1:0", secret=SECRET, tls_cert=pki.server_cert, tls_key=str(key))
    key.chmod(0o640)  # group-readable (an ssl-cert group) is fine
    agent = start("tls://127.0.0.1:0", secret=SECRET, tls_cert=pki.server_cert, tls_key=str(key))
    agent.stop()


def test_tls_slowloris_is_cut_at_the_handshake_deadline(
    agents: Callable[..., Agent], pki: Pki
) -> None:
    """A peer that trickles its ClientHello a byte every 0.3 s: each read is quick, but the
    whole handshake must still end at the 3 s deadline."""
    import ssl

    agent = _mtls(agents, pki)
    host, port = agent.address[len("tls://") :].rsplit(":", 1)
    # a real ClientHello, captured from a memory BIO
    ctx = ssl.create_default_context(cafile=pki.ca)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    assert len(hello) > 100
    s = socket.create_connection((host, int(port)), timeout=5)
    started = time.monotonic()
    try:
        for byte in hello:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                break
            if closed_by_peer(s, timeout=0.3):
                break
        elapsed = time.monotonic() - started
        assert elapsed < 5.0, f"still connected after {elapsed:.1f} s"
        assert elapsed > 2.0  # it was the deadline, not a parse error, that ended it
    finally:
        s.close()
