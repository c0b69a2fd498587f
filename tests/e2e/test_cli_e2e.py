"""The real ``reloadctl`` executable against real worker processes with embedded agents.

Each worker runs from its own directory with its own copy of ``mod.py``, holds a reference
to ``mod.value`` taken at start, and keeps writing ``held()`` to a file: after a reload the
file must show the new value (the held reference runs new code) and after a failed reload
it must keep showing the old one. Every worker is killed and every socket and directory
removed at teardown; each test is bounded by pytest-timeout and every subprocess call by
its own timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agentkit import wait_for

pytestmark = [pytest.mark.e2e]

RELOADCTL = shutil.which("reloadctl", path=str(Path(sys.executable).parent)) or "reloadctl"

WORKER = """\
import os, pathlib, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reloadctl.agent
listen = os.environ.get("WORKER_LISTEN")
agent = reloadctl.agent.start(listen, secret_file=os.environ.get("WORKER_SECRET_FILE"))
import mod
held = mod.value
for extra in filter(None, os.environ.get("WORKER_IMPORT", "").split(",")):
    __import__(extra)
out, addr = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
addr.write_text(agent.address)
while True:
    tmp = out.with_suffix(".tmp")
    tmp.write_text(str(held()))
    os.replace(tmp, out)
    time.sleep(0.02)
"""


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    home: Path
    address: str

    def value(self) -> str:
        return _read(self.home / "out.txt")

    def write_module(self, body: str) -> None:
        path = self.home / "mod.py"
        path.write_text(body)
        # Same-second edits keep the size-and-mtime check of some caches honest.
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))

    def wait_value(self, expected: str) -> None:
        wait_for(f"worker {self.proc.pid} to serve {expected!r}", lambda: self.value() == expected)


class Fleet:
    """Workers started for one test, plus the environment the CLI runs with."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runtime = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))  # short socket paths
        self.workers: list[Worker] = []
        self.env = {
            **os.environ,
            "XDG_RUNTIME_DIR": str(self.runtime),
            "XDG_CONFIG_HOME": str(root / "config"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        for var in ("RELOADCTL_HOST", "RELOADCTL_SECRET", "RELOADCTL_SECRET_FILE"):
            self.env.pop(var, None)

    def start(
        self, value: str = "1", *, launcher: bool = False, extra_env: dict[str, str] | None = None
    ) -> Worker:
        home = self.root / f"w{len(self.workers)}"
        home.mkdir()
        (home / "worker.py").write_text(WORKER)
        (home / "mod.py").write_text(f"def value():\n    return {value!r}\n")
        (home / "onlyhere.py").write_text("X = 1\n")
        env = {**self.env, **(extra_env or {})}
        prefix = [sys.executable, "-m", "reloadctl.agent"] if launcher else [sys.executable]
        with (home / "stderr.txt").open("wb") as stderr:  # the child keeps its own copy
            proc = subprocess.Popen(
                [*prefix, str(home / "worker.py"), str(home / "out.txt"), str(home / "addr.txt")],
                cwd=home,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        worker = Worker(proc, home, "")
        self.workers.append(worker)
        addr = wait_for("the agent address", lambda: _read(home / "addr.txt"))
        worker.address = addr
        worker.wait_value(value)
        return worker

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RELOADCTL, *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def close(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGKILL)
            w.proc.wait(10)
        shutil.rmtree(self.runtime, ignore_errors=True)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        f.close()
    for w in f.workers:  # nothing the peers did may reach the host's stderr
        assert "Traceback" not in _read(w.home / "stderr.txt"), _read(w.home / "stderr.txt")


def records(
    result: subprocess.CompletedProcess[str],
) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """(target -> record, summary) from NDJSON output with one module."""
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert "summary" in lines[-1], result.stdout
    return {r["target"]: r for r in lines[:-1]}, lines[-1]["summary"]


def test_reload_two_workers_serve_new_code(fleet: Fleet) -> None:
    a, b = fleet.start(), fleet.start()
    for w in (a, b):
        w.write_module("def value():\n    return '2'\n")
    result = fleet.cli("reload", "-H", a.address, "-H", b.address, "-o", "ndjson", "mod")
    assert result.returncode == 0, result.stderr
    by_target, summary = records(result)
    assert summary == {"reloaded": 2}
    assert {t: r["status"] for t, r in by_target.items()} == {
        a.address: "reloaded",
        b.address: "reloaded",
    }
    rec = by_target[a.address]
    assert rec["error"] is None and rec["module"] == "mod"
    assert {"kind": "patched", "name": "mod.value", "detail": ""} in rec["actions"]
    a.wait_value("2")
    b.wait_value("2")
    assert "[2/2]" in result.stderr  # progress on stderr, not mixed into the records


def test_syntax_error_fails_and_process_keeps_old_code(fleet: Fleet) -> None:
    a = fleet.start()
    a.write_module("def value(:\n    return '2'\n")
    result = fleet.cli("reload", "-H", a.address, "-o", "ndjson", "mod")
    assert result.returncode == 1, result.stderr
    by_target, _ = records(result)
    rec = by_target[a.address]
    assert rec["status"] == "failed" and rec["error"]["type"] == "SyntaxError"
    time.sleep(0.1)
    assert a.value() == "1"
    assert a.proc.poll() is None


def test_partial_failure_is_exit_3(fleet: Fleet) -> None:
    a, b = fleet.start(), fleet.start()
    a.write_module("def value():\n    return '2'\n")
    b.write_module("def value():\n    raise\n  bad indent\n")
    result = fleet.cli("reload", "-H", a.address, "-H", b.address, "-o", "ndjson", "mod")
    assert result.returncode == 3, result.stderr
    _, summary = records(result)
    assert summary == {"reloaded": 1, "failed": 1}
    a.wait_value("2")
    assert b.value() == "1"


def test_unreachable_target_is_exit_3(fleet: Fleet) -> None:
    a = fleet.start()
    a.write_module("def value():\n    return '2'\n")
    nobody = f"unix://{fleet.runtime}/nobody.sock"
    result = fleet.cli("reload", "-H", a.address, "-H", nobody, "-o", "ndjson", "mod")
    assert result.returncode == 3, result.stderr
    by_target, _ = records(result)
    assert by_target[nobody]["status"] == "unreachable"
    assert by_target[nobody]["error"]["type"] == "TargetUnreachable"
    a.wait_value("2")


def test_a_lone_silent_target_is_exit_3_not_1(fleet: Fleet) -> None:
    # exit 1 would say "everything failed"; a target that did not answer may have applied it
    nobody = f"unix://{fleet.runtime}/nobody.sock"
    for command in (("reload", "mod"), ("ping",), ("status",)):
        result = fleet.cli(command[0], "-H", nobody, "-o", "ndjson", *command[1:])
        assert result.returncode == 3, (command, result.stderr)


def test_not_loaded_elsewhere_is_fine_but_a_typo_is_not(fleet: Fleet) -> None:
    a = fleet.start(extra_env={"WORKER_IMPORT": "onlyhere"})
    b = fleet.start()
    (a.home / "onlyhere.py").write_text("X = 2\n")
    result = fleet.cli("reload", "-H", a.address, "-H", b.address, "-o", "ndjson", "onlyhere")
    assert result.returncode == 0, result.stderr
    by_target, _ = records(result)
    assert by_target[a.address]["status"] == "reloaded"
    assert by_target[b.address]["status"] == "not_loaded"
    assert "not loaded by any" not in result.stderr

    result = fleet.cli("reload", "-H", a.address, "-H", b.address, "-o", "ndjson", "onlyhre")
    assert result.returncode == 1
    by_target, _ = records(result)
    assert {r["status"] for r in by_target.values()} == {"not_loaded"}
    assert "onlyhre: not loaded by any selected target" in result.stderr


def test_local_status_and_rollback(fleet: Fleet) -> None:
    a = fleet.start(launcher=True)
    b = fleet.start()
    # A stale socket of a process that is gone: removed, not reported.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    stale = fleet.runtime / "reloadctl" / f"gone-{dead.pid}.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()

    result = fleet.cli("ps", "-o", "ndjson")
    assert result.returncode == 0, result.stderr
    by_target, _ = records(result)
    assert {r["agent"]["pid"] for r in by_target.values()} == {a.proc.pid, b.proc.pid}
    assert not stale.exists()

    for w in (a, b):
        w.write_module("def value():\n    return '2'\n")
    result = fleet.cli("reload", "--local", "-o", "ndjson", "mod")
    assert result.returncode == 0, result.stdout
    a.wait_value("2")
    b.wait_value("2")

    b.write_module("def value():\n    return '3'\n")  # b now differs from what it runs
    result = fleet.cli("status", "--local", "-o", "json")
    assert result.returncode == 0, result.stderr
    agents = {r["agent"]["pid"]: r["agent"] for r in json.loads(result.stdout)["results"]}
    assert agents[a.proc.pid]["patched"][0]["module"] == "mod"
    assert agents[a.proc.pid]["patched"][0]["diverged"] is False
    assert agents[b.proc.pid]["patched"][0]["diverged"] is True
    assert agents[a.proc.pid]["program"] and agents[a.proc.pid]["python"].startswith("3.")

    result = fleet.cli("rollback", "--local", "-o", "ndjson", "mod")
    assert result.returncode == 0, result.stderr
    a.wait_value("1")
    b.wait_value("1")


def test_what_a_person_reads(fleet: Fleet) -> None:
    """Counts agree in number, ``ps`` on a pipe says on stderr how many agents it found, and
    a rollback's DETAIL says what happened in plain words."""
    a = fleet.start()
    result = fleet.cli("ps")  # stdout is a pipe: NDJSON, and the recap on stderr
    assert result.returncode == 0, result.stderr
    by_target, summary = records(result)
    assert summary == {"ok": 1} and len(by_target) == 1
    recap = result.stderr.splitlines()[-1]
    assert recap.startswith("1 agent in ") and recap.endswith(" ms: 1 ok"), result.stderr

    a.write_module("def value():\n    return '2'\n")
    result = fleet.cli("reload", "-H", a.address, "-o", "table", "mod")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "1 target: 1 reloaded"
    a.wait_value("2")
    result = fleet.cli("rollback", "-H", a.address, "-o", "table", "mod")
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()[:2]
    assert header.split() == ["TARGET", "MODULE", "STATUS", "MS", "DETAIL"]
    assert row.split()[2] == "reloaded"  # the status is the contract's
    assert row.endswith("rolled back to the previous version")
    a.wait_value("1")


def test_wrong_secret_is_exit_4(fleet: Fleet, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("right-secret\n")
    secret.chmod(0o600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    a = fleet.start(
        extra_env={"WORKER_LISTEN": f"tcp://127.0.0.1:{port}", "WORKER_SECRET_FILE": str(secret)}
    )
    a.write_module("def value():\n    return '2'\n")
    result = fleet.cli(
        "reload",
        "-H",
        a.address,
        "-o",
        "ndjson",
        "mod",
        env={"RELOADCTL_SECRET": "Zq7-not-the-secret"},
    )
    assert result.returncode == 4, result.stderr
    by_target, _ = records(result)
    assert by_target[a.address]["status"] == "auth_failed"
    assert a.value() == "1"
    assert "Zq7" not in result.stdout + result.stderr  # the secret is never echoed

    result = fleet.cli(
        "reload", "-H", a.address, "--secret-file", str(secret), "-o", "ndjson", "mod"
    )
    assert result.returncode == 0, result.stderr
    a.wait_value("2")


def test_canary_rollout_aborts_with_exit_5(fleet: Fleet) -> None:
    workers = [fleet.start() for _ in range(3)]
    workers[0].write_module("def value(:\n")  # the canary gets broken code
    for w in workers[1:]:
        w.write_module("def value():\n    return '2'\n")
    args = ["reload", "-o", "ndjson", "--canary", "1", "--max-failures", "0"]
    for w in workers:
        args += ["-H", w.address]
    result = fleet.cli(*args, "mod")
    assert result.returncode == 5, result.stderr
    by_target, summary = records(result)
    assert summary == {"failed": 1, "not_attempted": 2}
    assert by_target[workers[0].address]["status"] == "failed"
    assert "--max-failures 0: 1 of 1 targets failed in batch 1" in result.stderr
    time.sleep(0.1)
    assert [w.value() for w in workers] == ["1", "1", "1"]  # nothing else was touched


def test_batch_rollout_abort_prints_the_rollback_command(fleet: Fleet) -> None:
    workers = [fleet.start() for _ in range(3)]
    workers[0].write_module("def value():\n    return '2'\n")
    workers[1].write_module("def value(:\n")
    workers[2].write_module("def value():\n    return '2'\n")
    args = ["reload", "-o", "ndjson", "--batch", "1", "--max-failures", "0"]
    for w in workers:
        args += ["-H", w.address]
    result = fleet.cli(*args, "mod")
    assert result.returncode == 5, result.stderr
    command = next(
        line.strip() for line in result.stderr.splitlines() if line.strip().startswith("reloadctl ")
    )
    assert command == f"reloadctl rollback -H {workers[0].address} mod"
    workers[0].wait_value("2")
    rollback = fleet.cli(*command.split()[1:], "-o", "ndjson")
    assert rollback.returncode == 0, rollback.stderr
    workers[0].wait_value("1")
    assert workers[2].value() == "1"


def test_interrupt_exits_130(fleet: Fleet) -> None:
    a = fleet.start()
    # A listening socket that never answers keeps the CLI waiting until we press Ctrl-C.
    silent = socket.socket(socket.AF_UNIX)
    path = fleet.runtime / "silent.sock"
    silent.bind(str(path))
    silent.listen(1)
    try:
        proc = subprocess.Popen(
            [
                RELOADCTL,
                "reload",
                "-H",
                f"unix://{path}",
                "-H",
                a.address,
                "-P",
                "1",
                "-o",
                "ndjson",
                "mod",
            ],
            env=fleet.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        silent.close()
    assert proc.returncode == 130, err
    lines = [json.loads(line) for line in out.splitlines()]
    statuses = {r["target"]: r["status"] for r in lines if "target" in r}
    assert "summary" in lines[-1]  # the recap is still written
    assert "interrupted" in err
    assert statuses[a.address] == "not_attempted"
    assert statuses[f"unix://{path}"] in ("timeout", "unreachable")
    assert a.value() == "1"


class Lines:
    """Lines of a child's pipe, read by a thread, waited for with a bound."""

    def __init__(self, pipe: Any) -> None:
        self.lines: list[str] = []
        self._pipe = pipe
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._pipe:
            self.lines.append(line.rstrip("\n"))

    def wait(self, what: str, match: Callable[[str], bool], timeout: float = 15.0) -> str:
        return str(wait_for(what, lambda: next((x for x in self.lines if match(x)), None), timeout))


def spawn(fleet: Fleet, *args: str) -> tuple[subprocess.Popen[str], Lines, Lines]:
    proc = subprocess.Popen(
        [RELOADCTL, *args],
        env=fleet.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, Lines(proc.stdout), Lines(proc.stderr)


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_watch_reloads_on_save_and_survives_a_syntax_error(fleet: Fleet) -> None:
    pytest.importorskip("watchfiles")
    a = fleet.start()
    proc, out, err = spawn(fleet, "watch", str(a.home), "-H", a.address, "-o", "ndjson")
    try:
        err.wait("the watcher to start", lambda x: "watching" in x)
        time.sleep(0.5)  # the native watcher registers its inotify watches after that line

        def saved(body: str, status: str) -> dict[str, Any]:
            seen = len(out.lines)
            for _ in range(3):  # an edit made before the watch is in place is not seen: redo
                a.write_module(body)
                try:
                    wait_for("a record", lambda: len(out.lines) > seen, timeout=5)
                    break
                except AssertionError:
                    continue
            line = out.wait(
                f"a {status} record",
                lambda x: x.startswith('{"target"') and f'"status":"{status}"' in x,
            )
            return dict(json.loads(line))

        rec = saved("def value():\n    return '2'\n", "reloaded")
        assert rec["module"] == "mod" and rec["target"] == a.address
        a.wait_value("2")
        rec = saved("def value(:\n", "failed")
        assert rec["error"]["type"] == "SyntaxError"
        time.sleep(0.2)
        assert a.value() == "2" and proc.poll() is None  # reported, still watching
    finally:
        code = stop(proc)
    assert code == 130


def test_pause_after_canary_then_resume(fleet: Fleet) -> None:
    workers = [fleet.start() for _ in range(3)]
    for w in workers:
        w.write_module("def value():\n    return '2'\n")
    args = ["reload", "-o", "ndjson", "--canary", "1", "--pause"]
    for w in workers:
        args += ["-H", w.address]
    proc, out, err = spawn(fleet, *args, "mod")
    try:
        line = err.wait("the pause message", lambda x: "reloadctl rollout resume" in x)
        rollout_id = line.split("reloadctl rollout resume ")[1].split()[0]
        workers[0].wait_value("2")
        time.sleep(0.3)
        assert [w.value() for w in workers[1:]] == ["1", "1"]  # paused: nothing else yet
        assert proc.poll() is None
        resumed = fleet.cli("rollout", "resume", rollout_id)
        assert resumed.returncode == 0, resumed.stderr
        assert proc.wait(15) == 0
    finally:
        stop(proc)
    for w in workers:
        w.wait_value("2")
    assert json.loads(out.lines[-1]) == {"summary": {"reloaded": 3}}
    again = fleet.cli("rollout", "resume", rollout_id)
    assert again.returncode == 1 and "no rollout" in again.stderr


def test_dead_agent_in_a_rollout_counts_as_failed_unless_ignored(fleet: Fleet) -> None:
    workers = [fleet.start() for _ in range(3)]
    for w in workers:
        w.write_module("def value():\n    return '2'\n")
    workers[1].proc.kill()  # its socket stays behind: connecting is refused
    workers[1].proc.wait(10)
    base = ["reload", "-o", "ndjson", "--batch", "1", "--max-failures", "0"]
    for w in workers:
        base += ["-H", w.address]

    result = fleet.cli(*base, "mod")
    assert result.returncode == 5, result.stderr
    by_target, _ = records(result)
    assert [by_target[w.address]["status"] for w in workers] == [
        "reloaded",
        "unreachable",
        "not_attempted",
    ]
    assert f"reloadctl rollback -H {workers[0].address} mod" in result.stderr
    workers[0].wait_value("2")
    assert workers[2].value() == "1"

    result = fleet.cli(*base, "--ignore-unreachable", "mod")
    assert result.returncode == 3, result.stderr  # not aborted, but silence is not success
    by_target, _ = records(result)
    assert by_target[workers[2].address]["status"] == "reloaded"
    workers[2].wait_value("2")


def test_local_agent_that_does_not_answer_is_reported_not_skipped(fleet: Fleet) -> None:
    a = fleet.start()
    # A live process (this test) with a socket that accepts but never speaks.
    path = fleet.runtime / "reloadctl" / f"silent-{os.getpid()}.sock"
    silent = socket.socket(socket.AF_UNIX)
    try:
        silent.bind(str(path))
        silent.listen(4)
        started = time.monotonic()
        result = fleet.cli("ps", "-o", "ndjson", "--connect-timeout", "0.5", "--timeout", "1")
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert result.returncode == 3, result.stderr
    by_target, _ = records(result)
    assert by_target[f"silent-{os.getpid()}"]["status"] in ("timeout", "unreachable")
    assert by_target[f"worker-{a.proc.pid}"]["status"] == "ok"
    assert elapsed < 10
