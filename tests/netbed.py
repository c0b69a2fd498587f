"""A multi-host test bed on one machine: network namespaces as hosts, latency in user space.

Each "host" is a network namespace with its own address on a private /24 (``10.231.X.0/24``,
X the first subnet no route of this machine uses), joined by veth pairs to a bridge in the
root namespace, which holds ``10.231.X.1``: the client (tests, the ``reloadctl`` CLI,
benchmarks) runs in the root namespace and reaches hosts at ``10.231.X.(10 + i)``. Only
these addresses and loopback are ever contacted.

This kernel has no ``tc netem`` (and no iptables), so latency is added in user space, by a
forwarding proxy that runs inside each host namespace (``ip netns exec``): agents listen on
the namespace's own ``127.0.0.1:PORT``, the proxy listens on ``HOST_IP:PORT`` and forwards
every chunk after half the round-trip time, each direction, in order. The kernel's TCP
handshake on the veth is instantaneous, so the proxy connects to the agent only 1.5 RTT
after it accepted (when a real server would see the client's ACK) and holds the client's
early bytes until then: a server-first protocol gets its first byte to the client after
2 RTT and a client-first one its first reply after 2 RTT, as on a real network.

Loss is emulated as what TCP makes of it, not as dropped packets: each forwarded chunk is,
with probability ``loss``, held back one retransmission timeout (RTT + 200 ms, Linux's
minimum RTO added to the RTT), doubling while the retransmission is "lost" too; a lost SYN
delays the connection by 1 s (the initial RTO), doubling likewise. Chunks stay in order
(head-of-line blocking). A host that drops *everything* is real: a blackhole route for the
client's address in the host namespace, so SYN-ACKs never leave and connects time out.

Everything is named ``rcnb-<pid>-<n>-h<i>`` (namespaces), ``rb<pid>x<n>`` (bridge) and
``rv<pid>x<n>h<i>`` (veth ends), so ``sweep_stale`` removes what a killed run left behind
(its pid is gone) and teardown runs from the fixture's finalizer and from ``atexit``.

Also a script: ``python netbed.py proxy|silent|agents ...`` (what runs inside a namespace).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import ipaddress
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

IP = shutil.which("ip")
NS_PREFIX = "rcnb-"
SUBNET_BASE = "10.231"
HOST_OFFSET = 10
#: Bounds: a bed has at most this many hosts, and every command a bounded run time.
MAX_HOSTS = 50
CMD_TIMEOUT_S = 20.0
START_TIMEOUT_S = 60.0
MIN_RTO_S = 0.2
SYN_RTO_S = 1.0
HERE = Path(__file__).resolve().parent

_beds: list[NetBed] = []
_counter = iter(range(10_000))
_lock = threading.Lock()


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert IP is not None
    cmd = [IP, "netns", "exec", ns, IP, *args] if ns else [IP, *args]
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=CMD_TIMEOUT_S)


def unavailable() -> str | None:
    """Why namespaces cannot be used here (a skip reason), or None."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if IP is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"{NS_PREFIX}{os.getpid()}-probe"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        err = getattr(exc, "stderr", "") or str(exc)
        return f"`ip netns add` failed: {err.strip()[:200]}"
    _ip("netns", "del", probe, check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Delete namespaces, bridges and veths of earlier runs whose process is gone."""
    removed: list[str] = []
    if IP is None:
        return removed
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(rf"{re.escape(NS_PREFIX)}(\d+)-", name)
        if m and not _alive(int(m.group(1))):
            _kill_ns_processes(name)
            _ip("netns", "del", name, check=False)
            removed.append(name)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@")[0]
        m = re.fullmatch(r"r[bv](\d+)x\d+(h\d+)?", name)
        if m and not _alive(int(m.group(1))):
            _ip("link", "del", name, check=False)
            removed.append(name)
    return removed


def _kill_ns_processes(ns: str) -> None:
    # Only our own namespaces get here: every process in them was started by a bed.
    out = _ip("netns", "pids", ns, check=False).stdout.split()
    for pid in out:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def _free_subnet() -> str:
    used = _ip("route", "show", check=False).stdout + _ip("-o", "addr", check=False).stdout
    for x in range(1, 255):
        prefix = f"{SUBNET_BASE}.{x}."
        if prefix not in used:
            return f"{SUBNET_BASE}.{x}"
    raise RuntimeError("no free 10.231.X.0/24 subnet")


@dataclass
class Host:
    """One namespace: its name, its address, and what runs in it."""

    index: int
    ns: str
    ip: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    scheme: str = "tcp"
    veth: str = ""  # its end on the bridge, in the root namespace

    @property
    def addresses(self) -> list[str]:
        """The agents' addresses as the client uses them (through the latency proxy)."""
        return [f"{self.scheme}://{self.ip}:{p}" for p in self.ports]


class NetBed:
    """N hosts; ``start_agents`` then ``addresses``; ``close()`` always (idempotent).

    Args:
        hosts: number of namespaces (1..MAX_HOSTS).
        rtt_ms: round-trip time the proxies add between client and agents.
        loss: probability that a forwarded chunk is "lost" once (see the module doc).
    """

    def __init__(self, hosts: int, *, rtt_ms: float = 0.0, loss: float = 0.0) -> None:
        if not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"1..{MAX_HOSTS} hosts")
        self.rtt_s = rtt_ms / 1000.0
        self.loss = loss
        with _lock:
            self.n = next(_counter) % 10
            _beds.append(self)
        pid = os.getpid()
        self.bridge = f"rb{pid}x{self.n}"
        self.hosts: list[Host] = []
        self._closed = False
        self._root_procs: list[subprocess.Popen[bytes]] = []
        sweep_stale()
        self.subnet = _free_subnet()
        self.client_ip = f"{self.subnet}.1"
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.client_ip}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i in range(hosts):
                self.hosts.append(self._add_host(i))
        except BaseException:
            self.close()
            raise

    def _add_host(self, i: int) -> Host:
        pid = os.getpid()
        ns = f"{NS_PREFIX}{pid}-{self.n}-h{i}"
        outer, inner = f"rv{pid}x{self.n}h{i}", f"rw{pid}x{self.n}h{i}"
        ip = f"{self.subnet}.{HOST_OFFSET + i}"
        _ip("netns", "add", ns)
        host = Host(i, ns, ip, veth=outer)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", ns)
        _ip("link", "set", outer, "master", self.bridge)
        _ip("link", "set", outer, "up")
        _ip("link", "set", "lo", "up", ns=ns)
        _ip("link", "set", inner, "name", "eth0", ns=ns)
        _ip("addr", "add", f"{ip}/24", "dev", "eth0", ns=ns)
        _ip("link", "set", "eth0", "up", ns=ns)
        return host

    # -- what runs in a host -----------------------------------------------------------

    def spawn(
        self, host: Host, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``host``'s namespace (stdout piped, stderr to a log file)."""
        assert IP is not None
        log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"{host.ns}.log", "ab")
        try:
            proc = subprocess.Popen(
                [IP, "netns", "exec", host.ns, *argv],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()
        host.procs.append(proc)
        return proc

    def start_proxy(self, host: Host, ports: list[int]) -> None:
        """The latency proxy of ``host``: ``host.ip:P`` -> ``127.0.0.1:P`` for each port."""
        proc = self.spawn(
            host,
            [
                sys.executable,
                str(HERE / "netbed.py"),
                "proxy",
                "--listen",
                host.ip,
                "--ports",
                ",".join(map(str, ports)),
                "--rtt-ms",
                str(self.rtt_s * 1000.0),
                "--loss",
                str(self.loss),
                "--seed",
                str(host.index),
            ],
        )
        _wait_ready(proc, f"proxy in {host.ns}")

    def start_agents(
        self,
        host: Host,
        count: int,
        *,
        app: Path,
        env: dict[str, str],
        scheme: str = "tcp",
        per_process: int = 1,
        first_port: int = 7000,
        imports: Sequence[str] = (),
        also_forward: Sequence[int] = (),
    ) -> list[str]:
        """``count`` agents in ``host`` on ``127.0.0.1:first_port..``, behind the proxy.

        ``per_process == 1``: each is ``python -m reloadctl.agent --listen ... app``, the real
        launcher; more: one process serves several agent servers (``netbed.py agents``, an
        internal API; for benchmarks whose agent count would not fit in memory otherwise;
        such a process imports ``imports`` instead of running ``app``). ``env`` carries the
        secret file and TLS settings; ``also_forward``: more ports the proxy forwards (other
        servers the app runs). Returns the client addresses.
        """
        ports = list(range(first_port, first_port + count))
        procs = []
        if per_process <= 1:
            for port in ports:
                argv = [sys.executable, "-m", "reloadctl.agent"]
                argv += ["--listen", f"{scheme}://127.0.0.1:{port}", str(app)]
                procs.append(self.spawn(host, argv, env))
        else:
            for at in range(0, count, per_process):
                group = ports[at : at + per_process]
                argv = [sys.executable, str(HERE / "netbed.py"), "agents", "--scheme", scheme]
                argv += ["--ports", ",".join(map(str, group)), "--import", *imports]
                procs.append(self.spawn(host, argv, env))
        for proc in procs:
            _wait_ready(proc, f"agents in {host.ns}")
        self.start_proxy(host, ports + list(also_forward))
        host.ports += ports
        host.scheme = scheme
        return [f"{scheme}://{host.ip}:{p}" for p in ports]

    def start_silent(self, host: Host, port: int) -> str:
        """A listener in ``host`` that accepts TCP and never says a word (behind the proxy)."""
        proc = self.spawn(
            host, [sys.executable, str(HERE / "netbed.py"), "silent", "--ports", str(port)]
        )
        _wait_ready(proc, f"silent listener in {host.ns}")
        self.start_proxy(host, [port])
        return f"tcp://{host.ip}:{port}"

    def drop_all(self, host: Host) -> None:
        """``host`` drops everything from now on: its replies to the client are blackholed
        (SYN-ACKs included), so connects time out and open connections go silent."""
        _ip("route", "add", "blackhole", f"{self.client_ip}/32", ns=host.ns)

    def addresses(self) -> list[str]:
        """Every agent of every host, host by host."""
        return [a for h in self.hosts for a in h.addresses]

    # -- teardown ----------------------------------------------------------------------

    def close(self) -> None:
        """Kill everything the bed started, delete its namespaces and bridge. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for host in self.hosts:
            for proc in host.procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            for proc in host.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
                if proc.stdout is not None:
                    proc.stdout.close()
            _kill_ns_processes(host.ns)
            _ip("netns", "del", host.ns, check=False)
            # the kernel frees a namespace (and its veth pair) only once nothing holds it;
            # deleting our end now takes the pair down at once
            if host.veth:
                _ip("link", "del", host.veth, check=False)
        _ip("link", "del", self.bridge, check=False)
        with _lock:
            if self in _beds:
                _beds.remove(self)

    def __enter__(self) -> NetBed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wait_ready(proc: subprocess.Popen[bytes], what: str) -> None:
    """Wait for the ``ready`` line a bed process prints once it listens."""
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    fd = proc.stdout.fileno()
    buf = b""
    import select

    while b"ready" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"{what} did not start within {START_TIMEOUT_S:g} s")
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"{what} exited with {proc.wait(5)} before it was ready")
            buf += chunk


def make_tls(directory: Path, ips: list[str]) -> dict[str, str]:
    """A throwaway CA and one agent certificate valid for ``ips`` (openssl binary).

    Returns the environment for agents (``RELOADCTL_AGENT_TLS_CERT``/``_KEY``) and for clients
    (``RELOADCTL_CLIENT_TLS_CA``).
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True, timeout=30)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=netbed-ca", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    run("req", *ec, "-keyout", "agent.key", "-out", "agent.csr", "-subj", "/CN=netbed-agent")
    san = ",".join(f"IP:{ip}" for ip in ips)
    (directory / "agent.ext").write_text(
        f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n"
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
    )
    run("x509", "-req", "-in", "agent.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "agent.pem", "-days", "2", "-extfile", "agent.ext")  # fmt: skip
    for key in directory.glob("*.key"):
        key.chmod(0o600)
    return {
        "RELOADCTL_AGENT_TLS_CERT": str(directory / "agent.pem"),
        "RELOADCTL_AGENT_TLS_KEY": str(directory / "agent.key"),
        "RELOADCTL_CLIENT_TLS_CA": str(directory / "ca.pem"),
    }


@atexit.register
def _close_all() -> None:
    for bed in list(_beds):
        with contextlib.suppress(Exception):
            bed.close()


# -- what runs inside a namespace --------------------------------------------------------


class _Stall:
    """The retransmission model of the module doc, one per connection direction."""

    def __init__(self, rng: random.Random, loss: float, rtt: float) -> None:
        self.rng, self.loss, self.rto = rng, loss, rtt + MIN_RTO_S

    def extra(self, rto: float | None = None) -> float:
        rto = self.rto if rto is None else rto
        extra = 0.0
        while self.loss > 0 and self.rng.random() < self.loss:
            extra += rto
            rto *= 2
        return extra


async def _proxy(listen: str, ports: list[int], rtt: float, loss: float, seed: int) -> None:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    one_way = rtt / 2

    async def pump(
        reader: asyncio.StreamReader,
        queue: asyncio.Queue[tuple[float, bytes]],
        stall: _Stall,
    ) -> None:
        last = 0.0
        while True:
            try:
                data = await reader.read(65536)
            except OSError:
                data = b""
            due = max(loop.time() + one_way + stall.extra(), last)
            last = due
            queue.put_nowait((due, data))
            if not data:
                return

    async def drain(
        writer: asyncio.StreamWriter, queue: asyncio.Queue[tuple[float, bytes]], start: float
    ) -> None:
        while True:
            due, data = await queue.get()
            wait = max(due, start) - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
            except OSError:
                return

    async def handle(
        port: int, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(OSError):
            sock = cwriter.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up_at = loop.time() + 1.5 * rtt + _Stall(rng, loss, rtt).extra(SYN_RTO_S)
        c2s: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        s2c: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        tasks = [asyncio.ensure_future(pump(creader, c2s, _Stall(rng, loss, rtt)))]
        uwriter = None
        try:
            await asyncio.sleep(max(0.0, up_at - loop.time()))
            ureader, uwriter = await asyncio.open_connection("127.0.0.1", port)
            usock = uwriter.get_extra_info("socket")
            usock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tasks.append(asyncio.ensure_future(pump(ureader, s2c, _Stall(rng, loss, rtt))))
            tasks.append(asyncio.ensure_future(drain(uwriter, c2s, up_at)))
            tasks.append(asyncio.ensure_future(drain(cwriter, s2c, 0.0)))
            await asyncio.wait(tasks[2:], return_when=asyncio.ALL_COMPLETED)
        except OSError:
            pass
        finally:
            for task in tasks:
                task.cancel()
            for w in (cwriter, uwriter):
                if w is not None:
                    w.close()

    for port in ports:
        await asyncio.start_server(
            lambda r, w, p=port: handle(p, r, w), listen, port, backlog=1024, reuse_address=True
        )
    print("ready", flush=True)
    await asyncio.Event().wait()


def _silent(ports: list[int]) -> None:
    listeners = []
    for port in ports:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(128)
        listeners.append(s)
    print("ready", flush=True)
    held = []
    while True:  # accept and hold, never answer
        for s in listeners:
            conn, _ = s.accept()
            held.append(conn)


def _agents(ports: list[int], scheme: str, imports: list[str]) -> None:
    # Several agent servers in one process: a way to run many agents on few cores. Uses
    # Agent.launch (one per address; start() allows one agent per process).
    # They share one engine and sys.modules: a module is reloaded by the first of them and
    # is "unchanged" for the others, so this is not the same work as separate processes.
    from reloadctl.agent import config as settings
    from reloadctl.agent.dispatch import EngineGate
    from reloadctl.agent.handle import Agent

    for name in imports:
        __import__(name)
    agents = []
    for port in ports:
        cfg = settings.build_config(f"{scheme}://127.0.0.1:{port}")
        agents.append(Agent.launch(cfg, EngineGate(), inherit=False))
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("proxy")
    p.add_argument("--listen", required=True)
    p.add_argument("--ports", required=True)
    p.add_argument("--rtt-ms", type=float, default=0.0)
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("silent")
    s.add_argument("--ports", required=True)
    a = sub.add_parser("agents")
    a.add_argument("--ports", required=True)
    a.add_argument("--scheme", default="tcp")
    a.add_argument("--import", dest="imports", nargs="*", default=[])
    args = parser.parse_args(argv)
    ports = [int(x) for x in args.ports.split(",")]
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if args.cmd == "proxy":
        ipaddress.ip_address(args.listen)  # a bed address, never a name to resolve
        asyncio.run(_proxy(args.listen, ports, args.rtt_ms / 1000.0, args.loss, args.seed))
    elif args.cmd == "silent":
        _silent(ports)
    else:
        _agents(ports, args.scheme, args.imports)


if __name__ == "__main__":
    main()
