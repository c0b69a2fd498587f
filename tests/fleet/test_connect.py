"""Connecting across a busy network: retries past a full pre-auth queue, round trips, pool."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from agentkit import SECRET

from reloadctl.agent import Agent
from reloadctl.client.connection import TlsSettings, execute
from reloadctl.client.settings import REMOTE_PARALLEL, default_parallel
from reloadctl.client.targets import Target
from reloadctl.errors import TargetUnreachable
from reloadctl.proto.messages import AgentInfo, ReloadRequest, StatusRequest
from reloadctl.secrets import Secret


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    return host, int(port)


@pytest.mark.timeout(60)
def test_a_peer_holding_the_preauth_slots_only_delays_a_correct_client(
    agents: Callable[..., Agent],
) -> None:
    agent = agents("tcp://127.0.0.1:0", secret=SECRET)
    address = _host_port(agent.address)
    assert isinstance(
        execute(
            agent.address, StatusRequest(), secret=Secret(SECRET), connect_timeout=2, timeout=5
        ),
        AgentInfo,
    )
    idle: list[socket.socket] = []
    try:
        for _ in range(20):  # a slowloris from our own host: connect, never say a word
            idle.append(socket.create_connection(address, timeout=2))
        time.sleep(0.2)
        # the agent is full: a new connection is closed before its hello
        probe = socket.create_connection(address, timeout=2)
        probe.settimeout(2)
        try:
            assert probe.recv(1) == b""
        except ConnectionResetError:
            pass
        finally:
            probe.close()
        with pytest.raises(TargetUnreachable):  # without time to wait, it is unreachable
            execute(
                agent.address,
                StatusRequest(),
                secret=Secret(SECRET),
                connect_timeout=0.3,
                timeout=5,
            )
        started = time.monotonic()
        info = execute(
            agent.address, StatusRequest(), secret=Secret(SECRET), connect_timeout=8, timeout=15
        )
        waited = time.monotonic() - started
        assert isinstance(info, AgentInfo)
        # it got through once the agent's handshake deadline (3 s) dropped the idle ones
        assert 1.0 < waited < 8, waited
    finally:
        for s in idle:
            s.close()


class TurnCounter:
    """A loopback TCP relay that counts the round trips a client waits for.

    Each chunk is forwarded ``delay`` seconds after it arrived (both directions), so bytes a
    client sends back to back arrive together, as on a real network, and the count does not
    depend on scheduling: a round trip is each run of agent-to-client chunks that follows
    client bytes, plus one for the TCP connect.
    """

    def __init__(self, upstream: tuple[str, int], delay: float = 0.05) -> None:
        self.upstream = upstream
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.directions: list[str] = []
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.socks: list[socket.socket] = []
        self._start(self._accept)

    def _start(self, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(t)
        t.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            client, _ = self.listener.accept()
            self.socks.append(client)
            server = socket.create_connection(self.upstream)
            self.socks.append(server)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._start(self._pump, client, server, "c")
            self._start(self._pump, server, client, "s")

    def _pump(self, src: socket.socket, dst: socket.socket, tag: str) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = src.recv(65536)
                with self.lock:
                    if data:
                        self.directions.append(f"{tag}{len(data)}")
                if not data:
                    time.sleep(self.delay)
                    dst.shutdown(socket.SHUT_WR)
                    return
                time.sleep(self.delay)
                dst.sendall(data)

    def round_trips(self) -> int:
        """1 for the TCP connect, plus one per run of agent chunks after client chunks."""
        runs, last = 0, "c"
        for tag in self.directions:
            if tag[0] == "s" and last == "c":
                runs += 1
            last = tag[0]
        return 1 + runs

    def close(self) -> None:
        self.listener.close()
        for t in list(self.threads):
            t.join(5)
        for sock in self.socks:
            sock.close()


@pytest.fixture
def relay(agents: Callable[..., Agent]) -> Iterator[Callable[[], TurnCounter]]:
    agent = agents("tcp://127.0.0.1:0", secret=SECRET)
    made: list[TurnCounter] = []

    def make() -> TurnCounter:
        made.append(TurnCounter(_host_port(agent.address)))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_a_quick_reload_is_four_round_trips(
    relay: Callable[[], TurnCounter], module: Callable[[str], tuple[ModuleType, Path]]
) -> None:
    mod, path = module("X = 1\n")
    # warm the agent (its server and the engine are built on first use)
    warm = relay()
    execute(
        warm.address,
        ReloadRequest((mod.__name__,)),
        secret=Secret(SECRET),
        connect_timeout=2,
        timeout=5,
    )
    path.write_text("X = 2\n")
    counter = relay()
    results = execute(
        counter.address,
        ReloadRequest((mod.__name__,)),
        secret=Secret(SECRET),
        connect_timeout=2,
        timeout=5,
    )
    assert isinstance(results, tuple) and results[0].status == "reloaded"
    counter.close()
    # connect, hello, proof -> welcome + root, submit -> the finished job
    assert counter.round_trips() == 4, counter.directions


def test_status_is_four_round_trips_too(relay: Callable[[], TurnCounter]) -> None:
    counter = relay()
    assert isinstance(
        execute(
            counter.address, StatusRequest(), secret=Secret(SECRET), connect_timeout=2, timeout=5
        ),
        AgentInfo,
    )
    counter.close()
    assert counter.round_trips() == 4, counter.directions


@pytest.mark.parametrize(
    ("addresses", "expected"),
    [
        (["unix:///run/a.sock"], None),
        (["unix:///run/a.sock", "tcp://10.0.0.1:7878"], REMOTE_PARALLEL),
        (["tls://web1:7879"], REMOTE_PARALLEL),
        ([], None),
    ],
)
def test_default_pool_fits_the_network(addresses: list[str], expected: int | None) -> None:
    targets = [Target(name=a, address=a) for a in addresses]
    local = default_parallel()
    assert default_parallel(targets) == (local if expected is None else expected)
    assert local <= 32


@pytest.mark.timeout(60)
def test_tls_a_full_agent_is_retried_not_an_auth_failure(
    agents: Callable[..., Agent], tmp_path: Path
) -> None:
    from netbed import make_tls

    tls = make_tls(tmp_path, ["127.0.0.1"])
    agent = agents(
        "tls://127.0.0.1:0",
        secret=SECRET,
        tls_cert=tls["RELOADCTL_AGENT_TLS_CERT"],
        tls_key=tls["RELOADCTL_AGENT_TLS_KEY"],
    )
    ca = TlsSettings(ca=tls["RELOADCTL_CLIENT_TLS_CA"])  # given as a value, as the CLI does
    address = _host_port(agent.address.replace("tls://", "tcp://"))
    secret = Secret(SECRET)
    assert isinstance(
        execute(
            agent.address, StatusRequest(), secret=secret, connect_timeout=2, timeout=5, tls=ca
        ),
        AgentInfo,
    )
    idle = [socket.create_connection(address, timeout=2) for _ in range(20)]
    try:
        time.sleep(0.2)
        with pytest.raises(TargetUnreachable):
            execute(
                agent.address,
                StatusRequest(),
                secret=secret,
                connect_timeout=0.3,
                timeout=5,
                tls=ca,
            )
        info = execute(
            agent.address, StatusRequest(), secret=secret, connect_timeout=8, timeout=15, tls=ca
        )
        assert isinstance(info, AgentInfo)
    finally:
        for s in idle:
            s.close()
