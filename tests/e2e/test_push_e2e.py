"""``reloadctl reload --push``: the real CLI against real worker processes whose disk holds
release 1 of a small package while the client's directory holds release 2.

Each worker imports ``pushdemo`` from its own ``disk`` directory, holds a reference to
``pushdemo.core.version`` taken at start, and keeps writing a JSON report: what the held
reference returns, what ``inspect.getsource`` and a traceback show for it, and which
submodules can be imported. Workers are killed and directories removed at teardown.

The multi-host case (agents in network namespaces with added latency) is not here: it
needs tests/netbed.py, which another change provides.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from agentkit import SECRET, wait_for

pytestmark = [pytest.mark.e2e]

RELOADCTL = shutil.which("reloadctl", path=str(Path(sys.executable).parent)) or "reloadctl"
REPO = Path(__file__).resolve().parents[2]

WORKER = """\
import importlib.util, inspect, json, os, pathlib, sys, time, traceback
sys.path.insert(0, sys.argv[3])
import reloadctl.agent
agent = reloadctl.agent.start(
    os.environ.get("WORKER_LISTEN"), secret_file=os.environ.get("WORKER_SECRET_FILE")
)
import pushdemo
import pushdemo.core
for extra in filter(None, os.environ.get("WORKER_IMPORT", "").split(",")):
    __import__(extra)
held = pushdemo.core.version
out, addr = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
addr.write_text(agent.address)

def importable(name):
    # as a fresh import would find it: not the module already loaded under that name
    saved = sys.modules.pop(name, None)
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False
    finally:
        if saved is not None:
            sys.modules[name] = saved

while True:
    try:
        pushdemo.core.boom()
    except ZeroDivisionError:
        tb = traceback.format_exc()
    report = {
        "value": held(),
        "source": inspect.getsource(held),
        "tb": tb,
        "helpers": importable("pushdemo.helpers"),
        "old": importable("pushdemo.old"),
        "python": "%d.%d" % sys.version_info[:2],
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report))
    os.replace(tmp, out)
    time.sleep(0.02)
"""

RELEASE_1 = {
    "pushdemo/__init__.py": "from pushdemo import core, old\n",
    "pushdemo/core.py": (
        "def version():\n    return '1'\n\n\ndef boom():\n    return 1 / 0  # release 1\n"
    ),
    "pushdemo/old.py": "GONE_IN_2 = True\n",
}
RELEASE_2 = {
    "pushdemo/__init__.py": "from pushdemo import core\n",
    "pushdemo/core.py": (
        "from pushdemo.helpers import label\n\n\n"
        "def version():\n    return label('2')\n\n\n"
        "def boom():\n    return 2 / 0  # release 2, pushed\n"
    ),
    "pushdemo/helpers.py": "def label(v):\n    return v\n",
}


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], home: Path) -> None:
        self.proc = proc
        self.home = home
        self.address = ""

    def report(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.home / "out.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data

    def fresh(self) -> dict[str, Any]:
        """A report computed wholly after this call: the worker computes one while the
        agent works, so the file may still hold what it saw just before the job ended."""
        out = self.home / "out.json"
        seen = [out.stat().st_mtime_ns]

        def written_again() -> bool:
            now = out.stat().st_mtime_ns
            if now != seen[-1]:
                seen.append(now)
            return len(seen) >= 3  # the second write after the call began after it

        wait_for(f"worker {self.proc.pid}: a fresh report", written_again)
        return self.report()

    def wait(self, what: str, test: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        wait_for(f"worker {self.proc.pid}: {what}", lambda: test(self.report()))
        return self.report()

    def stderr(self) -> str:
        return (self.home / "stderr.txt").read_text()


class Setup:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.client = root / "client"
        write_tree(self.client, RELEASE_2)
        self.runtime = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))
        self.workers: list[Worker] = []
        self.env = {
            **os.environ,
            "XDG_RUNTIME_DIR": str(self.runtime),
            "XDG_CONFIG_HOME": str(root / "config"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        for var in ("RELOADCTL_HOST", "RELOADCTL_SECRET", "RELOADCTL_SECRET_FILE"):
            self.env.pop(var, None)
        for var in [v for v in self.env if v.startswith("RELOADCTL_AGENT_")]:
            self.env.pop(var)

    def start(
        self,
        python: str = sys.executable,
        files: dict[str, str] | None = None,
        launcher: Sequence[str] = (),
        **env: str,
    ) -> Worker:
        home = self.root / f"w{len(self.workers)}"
        write_tree(home / "disk", {**RELEASE_1, **(files or {})})
        (home / "worker.py").write_text(WORKER)
        with (home / "stderr.txt").open("wb") as stderr:
            proc = subprocess.Popen(
                [
                    python,
                    *(["-m", "reloadctl.agent", *launcher] if launcher else []),
                    *(str(home / f) for f in ("worker.py", "out.json", "addr", "disk")),
                ],
                cwd=home,
                env={**self.env, **env},
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        worker = Worker(proc, home)
        self.workers.append(worker)
        worker.address = wait_for("the agent address", lambda: _read(home / "addr"), timeout=20)
        worker.wait("release 1", lambda r: r.get("value") == "1")
        return worker

    def cli(
        self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RELOADCTL, *args],
            env={**self.env, **(env or {})},
            cwd=cwd or self.client,
            capture_output=True,
            text=True,
            timeout=50,
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


def ndjson(result: subprocess.CompletedProcess[str]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines and "summary" in lines[-1], (result.stdout, result.stderr)
    return lines[:-1], lines[-1]["summary"]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    try:
        yield s
    finally:
        s.close()
    for w in s.workers:  # nothing a peer did may reach the host's stderr
        assert "Traceback" not in w.stderr(), w.stderr()


PUSH = {"RELOADCTL_AGENT_ACCEPT_PUSH": "1"}


def patched(status: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    records, _ = ndjson(status)
    assert len(records) == 1, records
    return {p["module"]: p for p in records[0]["agent"]["patched"]}


def test_push_reload_status_rollback(setup: Setup) -> None:
    w = setup.start(**PUSH)
    result = setup.cli("reload", "-H", w.address, "--push", "-o", "ndjson", "pushdemo")
    assert result.returncode == 0, result.stderr
    records, _ = ndjson(result)
    by_module = {r["module"]: r for r in records}
    assert by_module["pushdemo.core"]["status"] == "reloaded"
    assert by_module["pushdemo"]["status"] == "reloaded"
    assert {"kind": "patched", "name": "pushdemo.core.version", "detail": ""} in by_module[
        "pushdemo.core"
    ]["actions"]
    warnings = by_module["pushdemo"]["warnings"]
    assert any("pushdemo.old is not in the pushed tree" in x for x in warnings)
    report = w.wait("release 2 through the held reference", lambda r: r.get("value") == "2")
    # the pushed text, never the disk's: inspect, tracebacks; added module importable,
    # removed one not; and the agent's disk still holds release 1
    assert "label('2')" in report["source"]
    assert "release 2, pushed" in report["tb"] and "push:" in report["tb"]
    assert report["helpers"] is True and report["old"] is False
    assert (w.home / "disk/pushdemo/core.py").read_text() == RELEASE_1["pushdemo/core.py"]
    assert not (w.home / "disk/pushdemo/helpers.py").exists()

    status = setup.cli("status", "-H", w.address, "-o", "ndjson")
    assert status.returncode == 0, status.stderr
    core = patched(status)["pushdemo.core"]
    digest = sha(RELEASE_2["pushdemo/core.py"])
    assert core["origin"] == f"push:{digest[:12]}" and core["digest"] == digest
    assert core["diverged"] is True
    table = setup.cli("status", "-H", w.address, "-o", "table")
    assert f"pushdemo.core (1x, push:{digest[:12]}, diverged from disk)" in table.stdout

    back = setup.cli("rollback", "-H", w.address, "-o", "ndjson", "pushdemo", "pushdemo.core")
    assert back.returncode == 0, back.stderr
    report = w.wait("release 1 after rollback", lambda r: r.get("value") == "1")
    assert "release 1" in report["tb"] and "push:" not in report["tb"]
    assert report["old"] is True
    core = patched(setup.cli("status", "-H", w.address, "-o", "ndjson"))["pushdemo.core"]
    assert core["origin"] == "disk"

    # a second push after the rollback applies again (the finder follows the rollback)
    again = setup.cli("reload", "-H", w.address, "--push", "-o", "ndjson", "pushdemo")
    assert again.returncode == 0, again.stderr
    w.wait("release 2 again", lambda r: r.get("value") == "2")


def test_refused_without_opt_in_says_how_to_enable(setup: Setup) -> None:
    w = setup.start()
    result = setup.cli("reload", "-H", w.address, "--push", "-o", "ndjson", "pushdemo")
    records, summary = ndjson(result)
    assert summary == {"refused": 1}
    assert result.returncode == 1, result.stderr
    assert "accept_push=True" in records[0]["error"]["message"]
    assert "--accept-push" in records[0]["error"]["message"]
    assert w.report()["value"] == "1"


def test_dry_run_applies_nothing(setup: Setup) -> None:
    w = setup.start(**PUSH)
    result = setup.cli("reload", "-H", w.address, "--push", "--dry-run", "-o", "ndjson", "pushdemo")
    assert result.returncode == 0, result.stderr
    records, _ = ndjson(result)
    core = next(r for r in records if r["module"] == "pushdemo.core")
    assert core["status"] == "reloaded"
    assert any(a["name"] == "pushdemo.core.version" for a in core["actions"])
    report = w.fresh()
    assert report["value"] == "1" and report["helpers"] is False and report["old"] is True
    assert patched(setup.cli("status", "-H", w.address, "-o", "ndjson")) == {}


def test_write_puts_the_files_on_the_agents_disk(setup: Setup) -> None:
    w = setup.start(RELOADCTL_AGENT_ACCEPT_PUSH="write")
    core_file = w.home / "disk/pushdemo/core.py"
    core_file.chmod(0o640)
    result = setup.cli("reload", "-H", w.address, "--push", "--write", "-o", "ndjson", "pushdemo")
    assert result.returncode == 0, result.stderr
    w.wait("release 2", lambda r: r.get("value") == "2")
    assert core_file.read_text() == RELEASE_2["pushdemo/core.py"]
    assert core_file.stat().st_mode & 0o777 == 0o640
    assert (w.home / "disk/pushdemo/helpers.py").read_text() == RELEASE_2["pushdemo/helpers.py"]
    assert not (w.home / "disk/pushdemo/old.py").exists()
    assert not list((w.home / "disk/pushdemo").glob(".reloadctl-*"))
    # a process started later loads the same code from disk
    fresh = subprocess.run(
        [sys.executable, "-c", "import pushdemo.core; print(pushdemo.core.version())"],
        cwd=w.home / "disk",
        env=setup.env,
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    assert fresh.stdout.strip() == "2"
    core = patched(setup.cli("status", "-H", w.address, "-o", "ndjson"))["pushdemo.core"]
    assert core["diverged"] is False


def test_verify_that_fails_rolls_a_push_back_and_writes_nothing(setup: Setup) -> None:
    w = setup.start(RELOADCTL_AGENT_ACCEPT_PUSH="write")
    core = setup.client / "pushdemo/core.py"
    core.write_text(RELEASE_2["pushdemo/core.py"] + "\n\ndef healthy():\n    return False\n")
    args = ("reload", "-H", w.address, "--push", "--write", "-o", "ndjson")
    result = setup.cli(*args, "--verify", "pushdemo.core:healthy", "pushdemo")
    assert result.returncode == 1, result.stderr
    records, summary = ndjson(result)
    assert set(summary) == {"failed"}, records
    core_record = next(r for r in records if r["module"] == "pushdemo.core")
    assert core_record["error"]["type"] == "VerifyFailed"
    assert "returned False; rolled back" in core_record["error"]["message"]
    report = w.fresh()
    assert report["value"] == "1" and report["helpers"] is False and report["old"] is True
    assert (w.home / "disk/pushdemo/core.py").read_text() == RELEASE_1["pushdemo/core.py"]
    assert not (w.home / "disk/pushdemo/helpers.py").exists()
    # the same push with a check that passes is applied and written
    core.write_text(RELEASE_2["pushdemo/core.py"] + "\n\ndef healthy():\n    return True\n")
    result = setup.cli(*args, "--verify", "pushdemo.core:healthy", "pushdemo")
    assert result.returncode == 0, result.stderr
    w.wait("release 2", lambda r: r.get("value") == "2" and r.get("helpers") is True)
    assert "def healthy" in (w.home / "disk/pushdemo/core.py").read_text()


def test_write_needs_the_write_opt_in(setup: Setup) -> None:
    w = setup.start(**PUSH)
    result = setup.cli("reload", "-H", w.address, "--push", "--write", "-o", "ndjson", "pushdemo")
    records, summary = ndjson(result)
    assert summary == {"refused": 1}
    assert 'accept_push="write"' in records[0]["error"]["message"]
    assert (w.home / "disk/pushdemo/core.py").read_text() == RELEASE_1["pushdemo/core.py"]


def test_outside_allow_is_refused(setup: Setup) -> None:
    w = setup.start(RELOADCTL_AGENT_ALLOW="other.*", **PUSH)
    result = setup.cli("reload", "-H", w.address, "--push", "-o", "ndjson", "pushdemo")
    records, summary = ndjson(result)
    assert summary == {"refused": 1} and result.returncode == 1
    assert "outside the agent's allow list" in records[0]["error"]["message"]
    assert w.report()["value"] == "1"


def test_a_name_without_a_file_is_one_line_and_exit_2(setup: Setup) -> None:
    w = setup.start(**PUSH)
    result = setup.cli("reload", "-H", w.address, "--push", "pushdemo", "pushdemo.nosuch")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pushdemo.nosuch: no pushdemo/nosuch.py" in lines[0]
    assert w.report()["value"] == "1"


def test_shadowing_a_package_needs_allow_new_top_level(setup: Setup) -> None:
    w = setup.start(**PUSH)
    write_tree(w.home / "disk", {"notloaded/__init__.py": "X = 1\n"})
    write_tree(setup.client, {"notloaded/__init__.py": "X = 2\n", "json.py": "X = 1\n"})
    result = setup.cli("reload", "-H", w.address, "--push", "-o", "ndjson", "notloaded")
    records, _ = ndjson(result)
    assert records[0]["status"] == "refused"
    assert "--allow-new-top-level" in records[0]["error"]["message"]
    assert "is installed at" in records[0]["error"]["message"]
    result = setup.cli("reload", "-H", w.address, "--push", "-o", "ndjson", "json")
    records, _ = ndjson(result)
    assert records[0]["status"] == "refused"
    assert "standard library" in records[0]["error"]["message"]
    allowed = setup.cli(
        "reload", "-H", w.address, "--push", "--allow-new-top-level", "-o", "ndjson", "notloaded"
    )
    records, _ = ndjson(allowed)
    assert records[0]["status"] == "not_loaded"  # accepted; nothing had imported it yet


def _python(version: str) -> str:
    try:
        prefix = subprocess.run(
            ["pyenv", "prefix", version], capture_output=True, text=True, timeout=20, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pytest.skip(f"python{version} not found (pyenv prefix {version} failed)")
    python = Path(prefix) / "bin" / f"python{version}"
    if not python.exists():
        pytest.skip(f"python{version} not found at {python}")
    return str(python)


def _site_for_other_pythons(root: Path) -> str:
    """A PYTHONPATH for another interpreter: this worktree plus the pure-Python rpyc,
    plumbum and msgpack of this venv (msgpack falls back to its pure-Python codec)."""
    site = root / "site"
    site.mkdir()
    for name in ("rpyc", "plumbum", "msgpack"):
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None
        (site / name).symlink_to(Path(spec.origin).parent)
    return os.pathsep.join([str(REPO), str(site)])


def test_push_to_agents_on_python_3_10_and_3_13(setup: Setup) -> None:
    pythons = [_python("3.10"), _python("3.13")]
    path = _site_for_other_pythons(setup.root)
    env = {**PUSH, "PYTHONPATH": path, "MSGPACK_PUREPYTHON": "1"}
    workers = [setup.start(python, **env) for python in pythons]
    assert sorted(w.report()["python"] for w in workers) == ["3.10", "3.13"]
    hosts = [arg for w in workers for arg in ("-H", w.address)]
    result = setup.cli("reload", *hosts, "--push", "-o", "ndjson", "pushdemo")
    assert result.returncode == 0, result.stderr
    _, summary = ndjson(result)
    assert summary == {"reloaded": 4}
    for w in workers:
        report = w.wait("release 2", lambda r: r.get("value") == "2")
        assert report["helpers"] is True and report["old"] is False


def test_status_flags_targets_that_run_another_version(setup: Setup) -> None:
    a, b = setup.start(**PUSH), setup.start(**PUSH)
    result = setup.cli("reload", "-H", a.address, "--push", "-o", "ndjson", "pushdemo")
    assert result.returncode == 0, result.stderr
    status = setup.cli("status", "-H", a.address, "-H", b.address, "-o", "ndjson")
    assert status.returncode == 0, status.stderr
    digest = sha(RELEASE_2["pushdemo/core.py"])[:12]
    line = next(x for x in status.stderr.splitlines() if "pushdemo.core:" in x)
    assert "targets run different versions" in line
    assert f"push:{digest} on 1 ({a.address})" in line and f"not patched on 1 ({b.address})" in line
    again = setup.cli("reload", "-H", b.address, "--push", "-o", "ndjson", "pushdemo")
    assert again.returncode == 0, again.stderr
    status = setup.cli("status", "-H", a.address, "-H", b.address, "-o", "ndjson")
    assert "different versions" not in status.stderr


def test_a_push_near_the_size_limit_goes_through_and_one_over_it_is_refused_locally(
    setup: Setup,
) -> None:
    from reloadctl.proto.codec import MAX_PUSH_SOURCE_BYTES

    small = {"bigpush.py": "def value():\n    return 'small'\n"}
    w = setup.start(files=small, WORKER_IMPORT="bigpush", **PUSH)
    head = "def value():\n    return 'big'\n\n\nDATA = '"
    tail = "'\n"
    filler = MAX_PUSH_SOURCE_BYTES - 4096 - len(head) - len(tail)
    text = head + "x" * filler + tail
    (setup.client / "bigpush.py").write_text(text)
    started = time.monotonic()
    result = setup.cli("reload", "-H", w.address, "--push", "-o", "ndjson", "bigpush")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    records, _ = ndjson(result)
    assert records[0]["status"] == "reloaded", records
    status = patched(setup.cli("status", "-H", w.address, "-o", "ndjson"))
    assert status["bigpush"]["digest"] == sha(text)
    assert elapsed < 30, elapsed

    (setup.client / "bigpush.py").write_text(head + "x" * (MAX_PUSH_SOURCE_BYTES) + tail)
    over = setup.cli("reload", "-H", w.address, "--push", "-o", "ndjson", "bigpush")
    assert over.returncode == 1 and over.stdout == ""
    assert "over its size limit" in over.stderr and "16 MiB" in over.stderr


def _mitm() -> Any:
    path = REPO / "tests" / "security" / "test_mitm.py"
    spec = importlib.util.spec_from_file_location("reloadctl_tests_mitm", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _truncate_sealed(frame: bytes, cut: int) -> bytes:
    """The rpyc frame with its sealed payload (it starts with the 8-byte counter 0, after
    brine's 4-byte big-endian length) shortened by ``cut`` bytes, lengths kept consistent,
    so the agent receives a well-formed rpyc call carrying a truncated push."""
    header = struct.Struct("!LB")
    length, flag = header.unpack(frame[: header.size])
    body = frame[header.size : header.size + length]
    at = body.find(b"\x00" * 8)
    (size,) = struct.unpack("!L", body[at - 4 : at])
    shorter = struct.pack("!L", size - cut) + body[at : at + size - cut]
    new = body[: at - 4] + shorter + body[at + size :]
    return header.pack(len(new), flag) + new + frame[header.size + length :]


@pytest.mark.parametrize("how", ["tampered", "truncated"])
def test_a_tampered_or_truncated_push_is_rejected_by_the_mac(setup: Setup, how: str) -> None:
    secret_file = setup.root / "secret"
    secret_file.write_bytes(SECRET)
    secret_file.chmod(0o600)
    w = setup.start(WORKER_LISTEN="tcp://127.0.0.1:0", WORKER_SECRET_FILE=str(secret_file), **PUSH)
    host, port = w.address[len("tcp://") :].rsplit(":", 1)
    changed: list[int] = []

    def tamper(direction: str, index: int, frame: bytes) -> bytes:
        if direction != "up" or b"pushdemo/core.py" not in frame or changed:
            return frame
        changed.append(len(frame))
        if how == "truncated":
            return _truncate_sealed(frame, 100)
        middle = len(frame) // 2
        return frame[:middle] + bytes([frame[middle] ^ 0x01]) + frame[middle + 1 :]

    proxy = _mitm().Proxy((host, int(port)), tamper)
    try:
        result = setup.cli(
            "reload",
            "-H",
            f"tcp://127.0.0.1:{proxy.port}",
            "--push",
            "-o",
            "ndjson",
            "pushdemo",
            env={"RELOADCTL_SECRET_FILE": str(secret_file)},
        )
    finally:
        proxy.close()
    assert changed, "the push frame never went through the proxy"
    assert result.returncode != 0
    records, summary = ndjson(result)
    assert "reloaded" not in summary, records
    assert "MAC does not verify" in json.dumps(records) or "rejected" in json.dumps(records)
    report = w.fresh()
    assert report["value"] == "1" and report["helpers"] is False
    direct = setup.cli(
        "status", "-H", w.address, "-o", "ndjson", env={"RELOADCTL_SECRET_FILE": str(secret_file)}
    )
    assert patched(direct) == {}  # nothing applied, nothing half-received


def test_watch_push_ships_each_save_and_stops_syntax_errors_locally(setup: Setup) -> None:
    pytest.importorskip("watchfiles")
    w = setup.start(**PUSH)
    first = setup.cli("reload", "-H", w.address, "--push", "-o", "ndjson", "pushdemo")
    assert first.returncode == 0, first.stderr
    proc = subprocess.Popen(
        [RELOADCTL, "watch", "--push", str(setup.client), "-H", w.address, "-o", "ndjson"],
        env=setup.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    err: list[str] = []
    out: list[str] = []
    readers = [
        threading.Thread(target=lambda: err.extend(proc.stderr or ()), daemon=True),
        threading.Thread(target=lambda: out.extend(proc.stdout or ()), daemon=True),
    ]
    for t in readers:
        t.start()
    core = setup.client / "pushdemo/core.py"
    try:
        wait_for("the watcher to start", lambda: any("watching" in x for x in err))
        time.sleep(0.5)  # the native watcher registers its watches after that line
        for _ in range(3):  # an edit made before the watch is in place is not seen: redo
            core.write_text(RELEASE_2["pushdemo/core.py"].replace("label('2')", "label('3')"))
            try:
                w.wait("the saved version", lambda r: r.get("value") == "3")
                break
            except AssertionError:
                continue
        assert w.report()["value"] == "3"
        sent = len(out)
        core.write_text("def version(:\n")
        wait_for("the local syntax error", lambda: any("SyntaxError" in x for x in err))
        line = next(x for x in err if "SyntaxError" in x)
        assert "not pushed: pushdemo/core.py:1" in line
        time.sleep(0.3)
        assert len(out) == sent  # nothing was sent
        assert w.report()["value"] == "3" and proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            for t in readers:
                t.join(5)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


@pytest.mark.parametrize("flag", ["--accept-push", "--accept-push=write"])
def test_the_launcher_flag_enables_push(setup: Setup, flag: str) -> None:
    w = setup.start(launcher=[flag])
    args = ["reload", "-H", w.address, "--push", "-o", "ndjson", "pushdemo"]
    result = setup.cli(*args, *(["--write"] if flag.endswith("write") else []))
    assert result.returncode == 0, result.stderr
    w.wait("release 2", lambda r: r.get("value") == "2")
    written = (w.home / "disk/pushdemo/core.py").read_text() == RELEASE_2["pushdemo/core.py"]
    assert written is flag.endswith("write")
