"""Faults around a reload: a client killed mid-reload, a hanging module body, exceptions in
agent threads, a source file replaced while it is read. The reload completes or rolls back,
never half; the agent keeps serving and holds no extra threads or fds."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType

import pytest
from agentkit import SECRET, short_tmpdir

from reloadctl.agent import Agent, start
from reloadctl.agent.jobs import JobManager
from reloadctl.client.connection import execute
from reloadctl.errors import TargetTimeout
from reloadctl.proto.messages import AgentInfo, PollRequest, ReloadRequest, StatusRequest
from reloadctl.results import ModuleResult, PatchedModule
from reloadctl.secrets import Secret


@pytest.fixture
def agent(runtime_dir: Path) -> Iterator[Agent]:
    a = start("tcp://127.0.0.1:0", secret=SECRET)
    try:
        yield a
    finally:
        a.stop()


def call(agent: Agent, request: object, *, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    return execute(
        agent.address,
        request,  # type: ignore[arg-type]
        secret=Secret(SECRET),
        connect_timeout=3.0,
        timeout=timeout,
    )


def _conn_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "reloadctl-conn"]


def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


CLIENT = textwrap.dedent(
    """
    import sys
    from reloadctl.client.connection import execute
    from reloadctl.proto.messages import ReloadRequest
    from reloadctl.secrets import Secret
    print("go", flush=True)
    execute(sys.argv[1], ReloadRequest((sys.argv[2],)), secret=Secret(sys.argv[3]),
            connect_timeout=3, timeout=30)
    print("finished", flush=True)
    """
)


@pytest.mark.parametrize("outcome", ["completes", "rolls back"])
def test_client_killed_mid_reload(
    agent: Agent,
    module: Callable[[str], tuple[ModuleType, Path]],
    runtime_dir: Path,
    outcome: str,
) -> None:
    mod, path = module("VALUE = 1\ndef f():\n    return 1\n")
    started = runtime_dir / f"started-{uuid.uuid4().hex[:6]}"
    tail = "VALUE = 2\ndef f():\n    return 2\n"
    if outcome == "rolls back":
        tail += "raise RuntimeError('late failure')\n"
    path.write_text(f"import time\nopen({str(started)!r}, 'w').close()\ntime.sleep(1.0)\n{tail}")
    f = mod.f
    proc = subprocess.Popen(
        [sys.executable, "-c", CLIENT, agent.address, mod.__name__, SECRET.decode()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert _wait(started.exists), "the reload never started"
        proc.kill()  # SIGKILL while the module body runs in the agent
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # the job runs to its end regardless; then status answers with what happened
    expected = 2 if outcome == "completes" else 1
    assert _wait(lambda: mod.VALUE == expected and f() == expected, timeout=5)
    time.sleep(0.3)  # a half applied batch would show now
    assert mod.VALUE == expected and f() == expected and mod.f is f
    info = call(agent, StatusRequest())
    assert isinstance(info, AgentInfo)
    patched = {p.module for p in info.patched}
    assert (mod.__name__ in patched) == (outcome == "completes")
    assert _wait(lambda: not _conn_threads(), timeout=5)


def test_hanging_module_body_hits_the_deadline_then_rolls_back_and_frees_the_lock(
    agent: Agent, module: Callable[[str], tuple[ModuleType, Path]], runtime_dir: Path
) -> None:
    mod, path = module("VALUE = 1\n")
    gate = runtime_dir / f"gate-{uuid.uuid4().hex[:6]}"
    gate.write_text("")
    path.write_text(
        "import os, time\n"
        f"while os.path.exists({str(gate)!r}):\n"
        "    time.sleep(0.01)\n"
        "raise RuntimeError('woke up broken')\n"
        "VALUE = 2\n"
    )
    try:
        started = time.monotonic()
        results = call(agent, ReloadRequest((mod.__name__,), deadline_s=1.0), timeout=5)
        assert time.monotonic() - started < 3
        assert isinstance(results, tuple) and len(results) == 1
        (r,) = results
        assert r.status == "failed" and r.error is not None and r.error.type == "Timeout"
        assert "still running" in r.error.message
        # the hung body holds the engine's lock; status must still answer, unchanged module
        info = call(agent, StatusRequest(), timeout=5)
        assert isinstance(info, AgentInfo)
        assert mod.VALUE == 1
    finally:
        gate.unlink()  # the body returns (raising): the engine rolls back, frees its lock
    assert _wait(lambda: mod.VALUE == 1)
    path.write_text("VALUE = 3\n")
    results = call(agent, ReloadRequest((mod.__name__,)), timeout=10)
    assert [x.status for x in results] == ["reloaded"]  # type: ignore[union-attr]
    assert mod.VALUE == 3


def test_client_deadline_shorter_than_a_slow_reload(
    agent: Agent, module: Callable[[str], tuple[ModuleType, Path]]
) -> None:
    mod, path = module("VALUE = 1\n")
    path.write_text("import time\ntime.sleep(1.5)\nVALUE = 2\n")
    with pytest.raises(TargetTimeout, match="keeps running"):
        call(agent, ReloadRequest((mod.__name__,)), timeout=0.5)
    assert _wait(lambda: mod.VALUE == 2, timeout=5)  # completed, as one transaction


@pytest.mark.parametrize("exc", ["SystemExit(3)", "KeyboardInterrupt()", "MemoryError()"])
def test_module_body_raising_base_exceptions_rolls_back(
    agent: Agent, module: Callable[[str], tuple[ModuleType, Path]], exc: str
) -> None:
    mod, path = module("VALUE = 1\ndef f():\n    return 1\n")
    f = mod.f
    path.write_text(f"VALUE = 2\ndef f():\n    return 2\nNEW = 1\nraise {exc}\n")
    results = call(agent, ReloadRequest((mod.__name__,)))
    assert [r.status for r in results] == ["failed"]  # type: ignore[union-attr]
    assert mod.VALUE == 1 and f() == 1 and not hasattr(mod, "NEW")
    # the agent and its worker survived: the next reload works
    path.write_text("VALUE = 5\ndef f():\n    return 5\n")
    results = call(agent, ReloadRequest((mod.__name__,)))
    assert [r.status for r in results] == ["reloaded"]  # type: ignore[union-attr]
    assert f() == 5


class _BrokenEngine:
    """An engine whose first calls raise what a buggy engine or a hostile host might."""

    def __init__(self, errors: Sequence[BaseException]) -> None:
        self.errors = list(errors)
        self.calls = 0
        #: the thread that ran the last engine call (the job worker)
        self.worker: threading.Thread | None = None

    def reload_modules(
        self,
        names: Sequence[str],
        *,
        dry_run: bool = False,
        dependents: bool = False,
        allow: Sequence[str] | None = None,
    ) -> list[ModuleResult]:
        self.calls += 1
        self.worker = threading.current_thread()
        if self.errors:
            raise self.errors.pop(0)
        return [ModuleResult(n, "unchanged") for n in names]

    def rollback_modules(
        self, names: Sequence[str], *, allow: Sequence[str] | None = None
    ) -> list[ModuleResult]:
        raise RuntimeError("no rollback here")

    def patched_modules(self) -> list[PatchedModule]:
        if self.errors:
            raise self.errors.pop(0)
        return []


def test_worker_thread_survives_engine_exceptions() -> None:
    engine = _BrokenEngine([RuntimeError("bug"), KeyboardInterrupt(), SystemExit(2)])
    jobs = JobManager(engine=engine)
    try:
        statuses = []
        for _ in range(4):
            job = jobs.submit(ReloadRequest(("m",)))
            events = jobs.poll(job, 0, 5.0)
            assert events.done
            statuses.append([(r.status, r.error.type if r.error else None) for r in events.results])
        # three jobs took the three errors; the fourth ran normally
        assert [s[0][0] for s in statuses[:3]] == ["failed"] * 3
        assert statuses[-1] == [("unchanged", None)]
        assert any(s[0][0] == "failed" for s in statuses)
        assert engine.worker is not None and engine.worker.is_alive()
    finally:
        jobs.stop()
    assert engine.worker is not None and not engine.worker.is_alive()


def test_source_replaced_while_reloads_run(
    agent: Agent, module: Callable[[str], tuple[ModuleType, Path]], runtime_dir: Path
) -> None:
    """A deploy replaces the file (atomic rename) again and again while reloads run: every
    reload applies one whole version, never a mix, and the last one matches the disk."""

    def source(n: int) -> str:
        return f"A = {n}\nB = {n}\ndef version():\n    return {n}\n" + "# pad\n" * (n % 50)

    mod, path = module(source(0))
    stop = threading.Event()
    written = [0]

    def deployer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            tmp = runtime_dir / f".{path.name}.{n}.tmp"
            tmp.write_text(source(n))
            os.replace(tmp, path)
            written[0] = n
            time.sleep(0.002)

    writer = threading.Thread(target=deployer, daemon=True)
    writer.start()
    try:
        for _ in range(30):
            results = call(agent, ReloadRequest((mod.__name__,)))
            assert [r.status for r in results] in (["reloaded"], ["unchanged"]), results  # type: ignore[union-attr]
            assert mod.A == mod.B == mod.version(), (mod.A, mod.B, mod.version())
    finally:
        stop.set()
        writer.join(5)
    results = call(agent, ReloadRequest((mod.__name__,)))
    assert mod.A == mod.B == mod.version() == written[0]


def test_poll_of_a_job_after_the_client_vanished_is_still_answered(
    agent: Agent, module: Callable[[str], tuple[ModuleType, Path]]
) -> None:
    """Another client can observe a job whose submitter is gone (pull, not callbacks)."""
    from agentkit import RawClient

    from reloadctl.proto.messages import JobAccepted, JobEvents

    mod, path = module("VALUE = 1\n")
    path.write_text("import time\ntime.sleep(0.5)\nVALUE = 2\n")
    submitter = RawClient(agent.address)
    accepted = submitter.call(ReloadRequest((mod.__name__,)))
    assert isinstance(accepted, JobAccepted)
    submitter.close()
    observer = RawClient(agent.address)
    try:
        events = observer.call(PollRequest(accepted.job, 0, 5.0), method="poll")
        while isinstance(events, JobEvents) and not events.done:
            events = observer.call(PollRequest(accepted.job, 0, 5.0), method="poll")
        assert isinstance(events, JobEvents)
        assert [r.status for r in events.results] == ["reloaded"]
    finally:
        observer.close()
    assert mod.VALUE == 2


HOST = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    import rc_hang
    import reloadctl.agent
    agent = reloadctl.agent.start("tcp://127.0.0.1:0", secret=sys.argv[2])
    print(agent.address, flush=True)
    sys.stdin.readline()
    # the host's main ends here, with a reload hung in a module body and peers connected
    """
)


def test_host_exits_promptly_with_a_hung_reload_and_connected_peers() -> None:
    import select
    import socket

    from agentkit import RawClient

    from reloadctl.proto.messages import JobAccepted

    with short_tmpdir() as d:
        module_path = d / "rc_hang.py"
        module_path.write_text("VALUE = 1\n")
        entered = d / "entered"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELOADCTL_")}
        env["XDG_RUNTIME_DIR"] = str(d)
        proc = subprocess.Popen(
            [sys.executable, "-X", "dev", "-c", HOST, str(d), SECRET.decode()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        clients: list[RawClient] = []
        silent: socket.socket | None = None
        try:
            assert proc.stdout is not None and proc.stdin is not None
            ready, _, _ = select.select([proc.stdout], [], [], 20)
            assert ready, "host did not start"
            address = proc.stdout.readline().decode().strip()
            module_path.write_text(
                f"import time\nopen({str(entered)!r}, 'w').close()\n"
                "while True:\n    time.sleep(0.05)\n"
            )
            submitter = RawClient(address)
            clients.append(submitter)
            accepted = submitter.call(ReloadRequest(("rc_hang",), deadline_s=60))
            assert isinstance(accepted, JobAccepted)
            assert _wait(entered.exists), "the reload never started"
            clients.append(RawClient(address))  # an idle authenticated connection
            host, port = address[len("tcp://") :].rsplit(":", 1)
            silent = socket.create_connection((host, int(port)), timeout=5)  # mid-handshake
            started = time.monotonic()
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
            proc.wait(timeout=15)
            elapsed = time.monotonic() - started
            _out, err = proc.communicate(timeout=5)
        finally:
            for c in clients:
                c.close()
            if silent is not None:
                silent.close()
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        print(f"\nhost exit with a hung reload and 3 peers: {elapsed:.2f} s")
        assert proc.returncode == 0
        assert err == b"", err.decode(errors="replace")
        assert elapsed < 4.0  # stop() at exit waits a bounded time, never for the reload


def test_half_written_source_is_refused_whole(
    agent: Agent, module: Callable[[str], tuple[ModuleType, Path]]
) -> None:
    """An editor caught mid-write (the file cut in the middle of a statement): the reload
    fails on the syntax error and the module keeps running its old code untouched."""
    mod, path = module("VALUE = 1\ndef f():\n    return 1\n")
    f = mod.f
    full = "VALUE = 2\ndef f():\n    return 2\ndef g():\n    return [1, 2, 3]\n"
    path.write_text(full[: full.index("[1, 2") + 4])  # "...return [1, 2" and EOF
    results = call(agent, ReloadRequest((mod.__name__,)))
    assert [r.status for r in results] == ["failed"]  # type: ignore[union-attr]
    assert results[0].error.type == "SyntaxError"  # type: ignore[index]
    assert mod.VALUE == 1 and f() == 1 and not hasattr(mod, "g")
    path.write_text(full)
    results = call(agent, ReloadRequest((mod.__name__,)))
    assert [r.status for r in results] == ["reloaded"]  # type: ignore[union-attr]
    assert f() == 2 and mod.g() == [1, 2, 3]
