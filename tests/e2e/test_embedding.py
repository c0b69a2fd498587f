"""Embedding in real servers: gunicorn and uvicorn workers each get an agent and new code.

Every test runs a real multi-worker server on a copy of examples/shop with a private
XDG_RUNTIME_DIR, keeps a bounded request loop running against it, runs the real
``reloadctl reload --local pricing`` and asserts: one agent per worker (named by the worker's
own pid, none in the master), every worker serves the new code, no worker was restarted
(pids unchanged) and not one request failed meanwhile.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from agentkit import wait_for

from reloadctl.proto.address import parse_socket_name

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RELOADCTL = Path(sys.executable).with_name("reloadctl")
WORKERS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _children(pid: int) -> set[int]:
    """Live worker pids among the children of ``pid``, from /proc (Linux)."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) != pid or fields[0] == "Z":
            continue
        # uvicorn's spawn context also starts multiprocessing's resource tracker: not a worker
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing.resource_tracker" not in cmdline:
            found.add(int(entry.name))
    return found


def _wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    return wait_for(what, check, timeout, interval=0.1)  # servers: a longer poll is enough


def _get(port: int) -> tuple[int, str]:
    """One request on a fresh connection: (pid that served it, pricing line)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        body = resp.read().decode().strip()
        if resp.status != 200:
            raise AssertionError(f"HTTP {resp.status}: {body}")
    finally:
        conn.close()
    pid, _, line = body.partition(" | ")
    return int(pid.removeprefix("pid ")), line


@dataclass
class RequestLoop:
    """Clients that keep requesting ``/`` until stopped, recording every outcome."""

    port: int
    clients: int = 4
    #: (monotonic time the request started, pid that served it, pricing line)
    seen: list[tuple[float, int, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> RequestLoop:
        for n in range(self.clients):
            t = threading.Thread(target=self._run, name=f"request-loop-{n}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
            assert not t.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                pid, line = _get(self.port)
            except Exception as exc:
                with self._lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            with self._lock:
                self.seen.append((started, pid, line))
            time.sleep(0.005)

    def pids_serving(self, text: str, since: float = 0.0) -> set[int]:
        with self._lock:
            return {pid for t, pid, line in self.seen if t >= since and text in line}


@dataclass
class Server:
    """A server process group in a private runtime dir, on a copy of examples/shop."""

    tmp: Path
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[Any] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.shop = self.tmp / "shop"
        shutil.copytree(REPO / "examples" / "shop", self.shop)
        self.runtime = self.tmp / "run"
        self.runtime.mkdir(mode=0o700)
        self.log = self.tmp / "server.log"

    @property
    def sockets(self) -> Path:
        return self.runtime / "reloadctl"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELOADCTL_")}
        env.update(
            XDG_RUNTIME_DIR=str(self.runtime),
            PYTHONPATH=str(self.shop),
            PYTHONDONTWRITEBYTECODE="1",
        )
        env.update(self.extra_env)
        return env

    def start(self, argv: list[str]) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=self.shop,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is None:
            return
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        # workers of the group that outlived their master
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def agent_pids(self) -> set[int]:
        """Pids named by the agent sockets in the private runtime dir."""
        if not self.sockets.is_dir():
            return set()
        names = (parse_socket_name(p.name) for p in self.sockets.iterdir())
        return {parsed[1] for parsed in names if parsed is not None}

    def workers(self) -> set[int]:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited {self.proc.returncode}:\n{self.output()}")
        return _children(self.proc.pid)

    def reloadctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(RELOADCTL), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=40,
            check=False,
        )

    def edit_pricing(self, old: str, new: str) -> None:
        path = self.shop / "pricing.py"
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    yield srv
    srv.stop()


def _records(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _wait_for_agents(server: Server, expected: set[int], timeout: float = 20.0) -> None:
    """Wait until the runtime dir holds exactly one agent socket per expected pid."""
    assert server.proc is not None
    try:
        _wait_for("the agents", lambda: server.agent_pids() == expected, timeout)
    except AssertionError:
        raise AssertionError(
            f"expected agents for pids {sorted(expected)} (top process {server.proc.pid}), "
            f"found sockets for {sorted(server.agent_pids())} in {server.sockets}\n"
            f"{server.output()}"
        ) from None


def assert_live_reload_of_every_worker(
    server: Server, *, master_has_agent: bool = False, timeout: float = 30.0
) -> None:
    """The scenario every embedding must pass (see the module docstring)."""
    assert server.proc is not None
    _wait_for("HTTP", lambda: _port_open(server.port), timeout)
    _wait_for(f"{WORKERS} workers", lambda: len(server.workers()) == WORKERS)
    workers = server.workers()
    expected_agents = workers | ({server.proc.pid} if master_has_agent else set())
    _wait_for_agents(server, expected_agents, timeout=10)  # agents start in well under 1 s

    with RequestLoop(server.port) as loop:
        _wait_for(
            "every worker serving v1",
            lambda: loop.pids_serving("pricing v1") >= workers,
            timeout,
        )
        server.edit_pricing('VERSION: Final = "v1"', 'VERSION: Final = "v2"')
        before_reload = time.monotonic()
        # stdout is a pipe: reloadctl writes NDJSON
        result = server.reloadctl("reload", "--local", "pricing")
        reload_returned = time.monotonic()
        assert result.returncode == 0, (result.stdout, result.stderr, server.output())
        records = _records(result.stdout)
        statuses = sorted(r["status"] for r in records if "summary" not in r)
        expected = ["reloaded"] * WORKERS + (["not_loaded"] if master_has_agent else [])
        assert statuses == sorted(expected), records
        _wait_for(
            "every worker serving v2",
            lambda: loop.pids_serving("pricing v2", since=before_reload) >= workers,
            timeout,
        )
        # A syntax error is rejected in every worker, and they all keep serving v2.
        server.edit_pricing('VERSION: Final = "v2"', 'VERSION: Final = "v3"\ndef broken(:')
        broken = server.reloadctl("reload", "--local", "pricing")
        after_broken = time.monotonic()
        # 1: every worker failed; with an agent in the master too, its not_loaded may make
        # the CLI call it partial (3). Either way never 0.
        assert broken.returncode in ({1, 3} if master_has_agent else {1}), broken
        records = [r for r in _records(broken.stdout) if "summary" not in r]
        assert {r["status"] for r in records} == {"failed"} | (
            {"not_loaded"} if master_has_agent else set()
        )
        assert {r["error"]["type"] for r in records if r["status"] == "failed"} == {"SyntaxError"}
        _wait_for(
            "every worker serving requests after the failed reload",
            lambda: loop.pids_serving("pricing v2", since=after_broken) >= workers,
            timeout,
        )
    assert loop.failures == [], loop.failures[:5]
    assert server.workers() == workers, "a worker was restarted"
    assert {pid for _, pid, _ in loop.seen} == workers, "a request was served by another process"
    # Every request that started after the reload returned got the new code.
    late = [(pid, line) for t, pid, line in loop.seen if t > reload_returned and "v2" not in line]
    assert late == []
    assert len(loop.seen) > 20  # the loop really ran throughout


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# -- gunicorn -----------------------------------------------------------------------------


def _gunicorn_args(server: Server) -> list[str]:
    return [
        "--workers",
        str(WORKERS),
        "--bind",
        f"127.0.0.1:{server.port}",
        "--graceful-timeout",
        "3",
        "--chdir",
        str(server.shop),
        "wsgi:app",
    ]


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param([], id="sync"),
        # --preload imports the app in the master before forking: HUP cannot reload that,
        # reloadctl patches each worker's copy.
        pytest.param(["--preload"], id="preload"),
        pytest.param(["--worker-class", "gthread", "--threads", "4"], id="gthread"),
    ],
)
def test_gunicorn_post_fork_hook_gives_every_worker_an_agent(
    server: Server, extra: list[str]
) -> None:
    server.start(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            "gunicorn_conf.py",
            *extra,
            *_gunicorn_args(server),
        ]
    )
    assert_live_reload_of_every_worker(server)


def test_gunicorn_workers_boot_even_when_their_agent_cannot_start(server: Server) -> None:
    # TCP without a secret is refused by start(); the example hook logs it and boots on.
    server.extra_env["RELOADCTL_AGENT_LISTEN"] = f"tcp://127.0.0.1:{_free_port()}"
    server.start(
        [sys.executable, "-m", "gunicorn", "--config", "gunicorn_conf.py", *_gunicorn_args(server)]
    )
    _wait_for("HTTP", lambda: _port_open(server.port))
    assert "pricing v1" in _get(server.port)[1]
    _wait_for("both workers' log lines", lambda: server.output().count("agent not started") == 2)
    assert "refusing to listen on tcp://127.0.0.1" in server.output()
    assert server.agent_pids() == set()
    assert len(server.workers()) == WORKERS


@pytest.mark.parametrize("master", [False, True], ids=["workers-only", "master-too"])
def test_gunicorn_under_the_launcher_gives_every_worker_its_own_agent(
    server: Server, master: bool
) -> None:
    # Zero code: the launcher sees a pre-fork server, starts no agent (no thread) in the
    # master and gives every forked worker its own agent, named by the worker's own pid.
    # --master asks for one in the master too (it reports `not_loaded`: no app code there).
    options = ["--master"] if master else []
    server.start(
        [
            sys.executable,
            "-m",
            "reloadctl.agent",
            *options,
            "-m",
            "gunicorn",
            *_gunicorn_args(server),
        ]
    )
    # (the agent sockets are exactly the workers', plus the master's with --master)
    assert_live_reload_of_every_worker(server, master_has_agent=master)


# -- uvicorn ------------------------------------------------------------------------------


def uvicorn_args(server: Server, app: str) -> list[str]:
    """``-m uvicorn`` with WORKERS workers serving ``app`` from the shop on the server port."""
    return [
        "-m",
        "uvicorn",
        "--workers",
        str(WORKERS),
        "--host",
        "127.0.0.1",
        "--port",
        str(server.port),
        "--app-dir",
        str(server.shop),
        "--no-access-log",
        app,
    ]


def test_uvicorn_workers_start_their_agent_in_lifespan(server: Server) -> None:
    server.start([sys.executable, *uvicorn_args(server, "asgi:app")])
    assert_live_reload_of_every_worker(server)


PLAIN_ASGI = """\
import os

import pricing


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = f"pid {os.getpid()} | {pricing.describe()}\\n".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""


def test_uvicorn_workers_under_the_launcher_each_get_an_agent(server: Server) -> None:
    # uvicorn --workers spawns fresh interpreters: no at-fork hook runs there; the agent
    # comes from the inherited environment (bootstrap sitecustomize). The app has no
    # agent code at all, and the master gets no agent.
    (server.shop / "plain_asgi.py").write_text(PLAIN_ASGI)
    server.start([sys.executable, "-m", "reloadctl.agent", *uvicorn_args(server, "plain_asgi:app")])
    assert_live_reload_of_every_worker(server)
    assert all(p.name.startswith("uvicorn-") for p in server.sockets.iterdir())


# -- multiprocessing ----------------------------------------------------------------------

POOL_SCRIPT = """\
import json, multiprocessing, os, sys

import pricing
import reloadctl.agent


def work(_):
    return os.getpid(), pricing.describe()


def ask(pool):
    return sorted(set(pool.map(work, range(200), chunksize=1)))


if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1])
    reloadctl.agent.start()  # the parent has an agent too
    with ctx.Pool(2, initializer=reloadctl.agent.start) as pool:
        children = sorted(p.pid for p in pool._pool)
        print(json.dumps({"parent": os.getpid(), "children": children}), flush=True)
        for _line in sys.stdin:  # one line in: one round of answers out
            print(json.dumps(ask(pool)), flush=True)
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_pool_initializer_gives_every_child_an_agent(
    server: Server, method: str
) -> None:
    script = server.tmp / "pool_job.py"
    script.write_text(POOL_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), method],
        cwd=server.shop,
        env=server.env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    server.proc = proc  # stopped (process group) by the fixture
    assert proc.stdin is not None and proc.stdout is not None

    def ask() -> list[tuple[int, str]]:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        assert line, proc.communicate(timeout=10)
        return [(pid, text) for pid, text in json.loads(line)]

    ready = json.loads(proc.stdout.readline())
    children = set(ready["children"])
    assert len(children) == 2
    expected = children | {ready["parent"]}
    _wait_for_agents(server, expected)
    # every worker has run the module (spawned workers import it as they start): a worker
    # still starting when pricing.py is edited would load v2 and rightly say `unchanged`
    for _ in range(20):
        answers = ask()
        assert {text for _, text in answers} == {"pricing v1: apple 1.20 EUR, pear 0.90 EUR"}
        if {pid for pid, _ in answers} == children:
            break
    else:
        raise AssertionError(f"not every pool worker answered: {answers}")

    server.edit_pricing('VERSION: Final = "v1"', 'VERSION: Final = "v2"')
    result = server.reloadctl("reload", "--local", "pricing")
    assert result.returncode == 0, (result.stdout, result.stderr)
    statuses = [r["status"] for r in _records(result.stdout) if "summary" not in r]
    assert statuses == ["reloaded"] * 3  # the parent imported pricing too
    answers = ask()
    assert {pid for pid, _ in answers} <= children
    assert {text for _, text in answers} == {"pricing v2: apple 1.20 EUR, pear 0.90 EUR"}
    proc.stdin.close()
    assert proc.wait(timeout=20) == 0
