"""A live agent process under attack: floods, slowloris, fuzzed and oversized frames, wrong
secrets, tampering and replay. Afterwards it must hold what it held before (memory, fds,
threads), have printed nothing on its stderr, and still serve a correct reload.

Run with ``-s`` to see the figures (they go into the README's security section).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seckit import Footprint, footprint

from agentkit import SECRET, RawClient, closed_by_peer, recv_exact, short_tmpdir  # isort: skip
from reloadctl.client.connection import execute
from reloadctl.errors import TargetAuthFailed
from reloadctl.proto import auth, codec
from reloadctl.proto.messages import (
    AgentInfo,
    ErrorReply,
    JobAccepted,
    ReloadRequest,
    StatusRequest,
)
from reloadctl.secrets import Secret

AGENT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    import rc_victim
    import reloadctl.agent
    agent = reloadctl.agent.start("tcp://127.0.0.1:0")
    print(agent.address, flush=True)
    sys.stdin.read()
    agent.stop()
    """
)

_sources = itertools.count(1)


def fresh_source() -> tuple[str, int]:
    """A new loopback source address per connection: the agent rate limits failed
    authentications per host, and these tests want every hostile frame to be parsed."""
    n = next(_sources)
    return (f"127.{1 + n // 65000}.{(n // 250) % 250 + 1}.{n % 250 + 1}", 0)


@dataclass
class Victim:
    proc: subprocess.Popen[bytes]
    address: str
    host: str
    port: int
    module_path: Path

    def connect(self, source: tuple[str, int] | None = None) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout=5, source_address=source or fresh_source()
        )

    def authed(self) -> socket.socket:
        s = self.connect()
        try:
            client = auth.ClientHandshake(SECRET, require_mac=True)
            s.sendall(client.answer(auth.read_frame(lambda n: recv_exact(s, n))))
            client.finish(auth.read_frame(lambda n: recv_exact(s, n)))
        except BaseException:
            s.close()
            raise
        return s

    def footprint(self) -> Footprint:
        return footprint(self.proc.pid)

    def status(self) -> AgentInfo:
        info = execute(
            self.address, StatusRequest(), secret=Secret(SECRET), connect_timeout=3, timeout=10
        )
        assert isinstance(info, AgentInfo)
        return info

    def reload(self, value: int) -> None:
        self.module_path.write_text(f"VALUE = {value}\n")
        results = execute(
            self.address,
            ReloadRequest(("rc_victim",)),
            secret=Secret(SECRET),
            connect_timeout=3,
            timeout=10,
        )
        assert isinstance(results, tuple)
        assert [r.status for r in results] == ["reloaded"], results


@pytest.fixture(scope="module")
def victim() -> Iterator[Victim]:
    with short_tmpdir() as d:
        module_path = d / "rc_victim.py"
        module_path.write_text("VALUE = 0\n")
        env = {**os.environ, "RELOADCTL_SECRET": SECRET.decode(), "XDG_RUNTIME_DIR": str(d)}
        for var in ("RELOADCTL_SECRET_FILE", "RELOADCTL_AGENT_LISTEN", "RELOADCTL_AGENT_DISABLE"):
            env.pop(var, None)
        proc = subprocess.Popen(
            [sys.executable, "-X", "dev", "-c", AGENT, str(d)],  # dev: ResourceWarnings shown
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        address = proc.stdout.readline().decode().strip() if ready else ""
        if not address:
            proc.kill()
            _out, err = proc.communicate()
            raise AssertionError(f"agent did not start: {err!r}")
        host, port = address[len("tcp://") :].rsplit(":", 1)
        v = Victim(proc, address, host, int(port), module_path)
        try:
            yield v
        finally:
            _out, err = proc.communicate(input=b"", timeout=20)
            assert proc.returncode == 0
            assert err == b"", err.decode(errors="replace")  # zero tracebacks on its stderr


def settle(v: Victim, baseline: Footprint, timeout: float = 8.0) -> Footprint:
    """The agent's footprint once its fds and threads are back to ``baseline`` (or timeout)."""
    end = time.monotonic() + timeout
    while True:
        now = v.footprint()
        if (now.fds <= baseline.fds and now.threads <= baseline.threads) or (
            time.monotonic() > end
        ):
            return now
        time.sleep(0.05)


def report(phase: str, before: Footprint, after: Footprint, peak: Footprint) -> None:
    print(
        f"\n[{phase}] before: {before}; peak: threads={peak.threads} fds={peak.fds} "
        f"rss={peak.rss_kib} KiB; after: {after}"
    )


@pytest.fixture
def baseline(victim: Victim) -> Footprint:
    victim.reload(int(time.time()))  # warm up: rpyc, the engine and the job worker loaded
    # idle: the warm-up's connection thread has ended (fewest fds and threads seen in 1 s)
    samples = []
    for _ in range(20):
        samples.append(victim.footprint())
        time.sleep(0.05)
    idle = min(samples, key=lambda f: (f.threads, f.fds))
    return Footprint(samples[-1].rss_kib, idle.fds, idle.threads)


def _check(v: Victim, phase: str, base: Footprint, peak: Footprint) -> None:
    after = settle(v, base)
    report(phase, base, after, peak)
    assert after.fds <= base.fds, f"{phase}: fds {base.fds} -> {after.fds}"
    assert after.threads <= base.threads, f"{phase}: threads {base.threads} -> {after.threads}"
    assert after.rss_kib - base.rss_kib < 16 * 1024, f"{phase}: RSS grew {base} -> {after}"
    v.reload(int(time.time() * 1000) % 10**9)  # a correct reload is still served


@pytest.mark.timeout(90)
def test_flood_of_200_connections(victim: Victim, baseline: Footprint) -> None:
    peak = baseline
    socks: list[socket.socket] = []
    try:
        for _ in range(200):
            socks.append(victim.connect())
        time.sleep(0.3)
        peak = victim.footprint()
        # at most 16 connection threads and 16 sockets beyond the baseline
        assert peak.threads <= baseline.threads + 16
        assert peak.fds <= baseline.fds + 16
        # every extra socket was closed at once; the held ones at the handshake deadline
        closed = sum(closed_by_peer(s, timeout=0.01) for s in socks)
        assert closed >= 200 - 16
        assert all(closed_by_peer(s, timeout=6) for s in socks)
    finally:
        for s in socks:
            s.close()

    # 200 clients that complete the handshake and hang up, 10 at a time (a connection the
    # agent refused because its cap was reached for a moment is retried)
    done: list[int] = []
    refused: list[int] = []

    def burst() -> None:
        for _ in range(20):
            for _attempt in range(50):
                try:
                    victim.authed().close()
                except (EOFError, OSError):
                    refused.append(1)
                    time.sleep(0.01)
                    continue
                done.append(1)
                break

    threads = [threading.Thread(target=burst) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(done) == 200, (len(done), len(refused))
    _check(victim, "flood 200", baseline, peak)


@pytest.mark.timeout(60)
def test_slowloris_handshakes_are_cut_at_the_deadline(victim: Victim, baseline: Footprint) -> None:
    socks = [victim.connect() for _ in range(8)]
    started = time.monotonic()
    try:
        for s in socks:
            recv_exact(s, 4)  # the hello header
        peak = victim.footprint()
        assert peak.threads == baseline.threads + 8  # one per pending handshake
        frame = b"\x00\x00\x00\x60" + b"\x81" * 0x60
        alive = list(socks)
        sent = 0
        while alive and time.monotonic() - started < 8:
            for s in list(alive):
                try:
                    s.sendall(frame[sent : sent + 1])  # one byte every 200 ms
                except OSError:
                    alive.remove(s)
            sent += 1
            time.sleep(0.2)
            alive = [s for s in alive if not closed_by_peer(s, timeout=0.001)]
        elapsed = time.monotonic() - started
        assert not alive, "a slowloris peer was still connected after 8 s"
        assert elapsed < 5.0  # the 3 s handshake deadline, not the trickle, decided
    finally:
        for s in socks:
            s.close()
    _check(victim, "slowloris", baseline, peak)


@pytest.mark.timeout(60)
def test_oversized_and_bomb_frames(victim: Victim, baseline: Footprint) -> None:
    pre_auth = [
        struct.pack("!I", 0xFFFFFFFF) + b"x" * 1000,
        struct.pack("!I", auth.MAX_FRAME + 1) + b"x" * 100,
        struct.pack("!I", 2**31) + zlib.compress(b"\0" * (16 << 20)),
    ]
    for payload in pre_auth:
        s = victim.connect()
        try:
            recv_exact(s, 4)
            s.sendall(payload)
            assert closed_by_peer(s)
        finally:
            s.close()
    bomb = zlib.compress(b"\0" * (256 << 20))  # 256 MiB inflates from about 250 KiB
    post_auth = [
        struct.pack("!LB", 0xFFFFFFFF, 0) + b"x" * 4096,
        struct.pack("!LB", len(bomb), 1) + bomb + b"\n",
        struct.pack("!LB", codec.MAX_MESSAGE_BYTES * 4, 0) + b"\0" * 65536,
    ]
    peak = baseline
    for payload in post_auth:
        s = victim.authed()
        try:
            try:
                s.sendall(payload)
            except OSError:
                pass  # dropped while we were still sending: fine
            assert closed_by_peer(s)
        finally:
            s.close()
        now = victim.footprint()
        peak = now if now.rss_kib > peak.rss_kib else peak
    assert peak.rss_kib - baseline.rss_kib < 16 * 1024
    _check(victim, "oversized/bomb", baseline, peak)


@pytest.mark.timeout(60)
def test_wrong_secrets_are_rate_limited_per_host(victim: Victim, baseline: Footprint) -> None:
    attacker = ("127.77.0.1", 0)
    denied = refused_at_once = 0
    for _ in range(40):
        s = victim.connect(attacker)
        try:
            try:
                hello = auth.read_frame(lambda n: recv_exact(s, n, timeout=3))
            except (EOFError, ConnectionResetError):
                refused_at_once += 1  # closed at accept: no hello, no handshake
                continue
            client = auth.ClientHandshake(b"wrong secret", require_mac=True)
            s.sendall(client.answer(hello))
            body = auth.read_frame(lambda n: recv_exact(s, n, timeout=3))
            try:
                client.finish(body)
            except Exception as exc:
                assert "wrong secret" in str(exc)
                denied += 1
        finally:
            s.close()
    assert denied >= 20  # the burst
    assert refused_at_once >= 10  # then the host is locked out
    # another host is not affected, and ours is told the truth when it tries
    with pytest.raises(TargetAuthFailed, match="wrong secret"):
        execute(
            victim.address,
            StatusRequest(),
            secret=Secret(b"still wrong"),
            connect_timeout=3,
            timeout=5,
        )
    assert isinstance(victim.status(), AgentInfo)
    # the lockout lifts as the bucket refills (2 per second)
    time.sleep(1.0)
    s = victim.connect(attacker)
    try:
        assert auth.read_frame(lambda n: recv_exact(s, n, timeout=3))
    finally:
        s.close()
    _check(victim, "wrong secrets x40", baseline, victim.footprint())


@pytest.mark.timeout(60)
def test_tampered_and_replayed_messages_on_the_live_agent(
    victim: Victim, baseline: Footprint
) -> None:
    client = RawClient(victim.address)
    try:
        frame = client.session.seal(codec.encode(StatusRequest()))
        tampered = bytearray(frame)
        tampered[10] ^= 0x01
        reply = codec.decode_reply(client.session.unseal(client.root.submit(bytes(tampered))))
        assert isinstance(reply, ErrorReply) and "MAC" in reply.message
        # the session is poisoned now: even the genuine frame is refused
        reply = codec.decode_reply(client.session.unseal(client.root.submit(frame)))
        assert isinstance(reply, ErrorReply)
    finally:
        client.close()
    client = RawClient(victim.address)
    try:
        frame = client.session.seal(codec.encode(StatusRequest()))
        first = codec.decode_reply(client.session.unseal(client.root.submit(frame)))
        assert isinstance(first, AgentInfo)
        replayed = codec.decode_reply(client.session.unseal(client.root.submit(frame)))
        assert isinstance(replayed, ErrorReply) and "replay" in replayed.message
    finally:
        client.close()
    # a message sealed for one session is worthless in another
    a, b = RawClient(victim.address), RawClient(victim.address)
    try:
        stolen = a.session.seal(codec.encode(ReloadRequest(("rc_victim",))))
        reply = codec.decode_reply(b.session.unseal(b.root.submit(stolen)))
        assert isinstance(reply, ErrorReply)
    finally:
        a.close()
        b.close()
    _check(victim, "tamper/replay", baseline, victim.footprint())


@pytest.mark.timeout(120)
def test_fuzzed_frames_against_the_live_agent(victim: Victim, baseline: Footprint) -> None:
    fuzz = settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )

    @fuzz
    @given(
        st.one_of(
            st.binary(max_size=300),
            st.binary(min_size=1, max_size=200).map(lambda b: struct.pack("!I", len(b)) + b),
            st.dictionaries(
                st.sampled_from(["v", "t", "nonce", "mac", "mode", "x"]),
                st.one_of(
                    st.integers(-(2**63), 2**64 - 1), st.binary(max_size=40), st.text(max_size=10)
                ),
            ).map(auth.pack_frame),
        )
    )
    def pre_auth(payload: bytes) -> None:
        s = victim.connect()
        try:
            recv_exact(s, 4)
            with contextlib.suppress(OSError):  # the agent may have hung up already
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)  # EOF: the agent must not wait for more
            assert closed_by_peer(s, timeout=5)
        finally:
            s.close()

    @fuzz
    @given(st.binary(max_size=400))
    def post_auth_rpyc(payload: bytes) -> None:
        s = victim.authed()
        try:
            with contextlib.suppress(OSError):
                s.sendall(struct.pack("!LB", len(payload), 0) + payload + b"\n")
                s.shutdown(socket.SHUT_WR)
            assert closed_by_peer(s, timeout=5)
        finally:
            s.close()

    pre_auth()
    post_auth_rpyc()
    client = RawClient(victim.address)
    try:

        @fuzz
        @given(st.binary(max_size=600))
        def sealed(payload: bytes) -> None:
            raw = client.root.submit(client.session.seal(payload))
            reply = codec.decode_reply(client.session.unseal(raw))
            assert isinstance(reply, (ErrorReply, JobAccepted, AgentInfo))
            if isinstance(reply, ErrorReply):
                assert reply.code in {"protocol", "forbidden", "busy"}

        sealed()
    finally:
        client.close()
    _check(victim, "fuzz 3x150", baseline, victim.footprint())


@pytest.mark.timeout(60)
def test_one_host_cannot_take_every_handshake_slot(victim: Victim, baseline: Footprint) -> None:
    hog = ("127.88.0.1", 0)
    socks = [victim.connect(hog) for _ in range(8)]
    try:
        time.sleep(0.3)
        held = [s for s in socks if not closed_by_peer(s, timeout=0.05)]
        assert len(held) == 4  # half of the 8 handshake slots
        # meanwhile other hosts are served at once
        started = time.monotonic()
        assert isinstance(victim.status(), AgentInfo)
        assert time.monotonic() - started < 1.0
        peak = victim.footprint()
    finally:
        for s in socks:
            s.close()
    _check(victim, "one-host handshake hog", baseline, peak)
