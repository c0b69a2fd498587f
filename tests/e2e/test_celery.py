"""Embedding in a real Celery worker: every prefork pool process gets its own agent.

``python -m reloadctl.agent -m celery -A app worker --pool prefork -c 2`` with a filesystem
broker (no broker server needed): the launcher starts no agent in the worker's main
process, each pool process starts its own as it forks, ``reloadctl reload --local`` patches
both, and tasks run afterwards by either pool process use the new code while the pool
processes (pids) stay the same.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agentkit import short_tmpdir, wait_for

pytest.importorskip("celery")

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(120)]

RELOADCTL = Path(sys.executable).with_name("reloadctl")

APP = """
import os
from celery import Celery

HERE = os.path.dirname(os.path.abspath(__file__))
QUEUE = os.path.join(HERE, "queue")
app = Celery("celapp", broker="filesystem://", include=["tasks"])
app.conf.broker_transport_options = {
    "data_folder_in": QUEUE,
    "data_folder_out": QUEUE,
    "store_processed": False,
}
app.conf.worker_hijack_root_logger = False
"""

TASKS = """
import os
from celapp import app
import pricing

@app.task
def report(path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()} {pricing.version()}")
    os.replace(tmp, path)
"""

# by name, so the sender never imports the tasks (and pricing, which a test breaks)
SEND = """
import sys
from celapp import app
for path in sys.argv[1:]:
    app.send_task("tasks.report", args=[path])
"""


@dataclass
class Worker:
    home: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(RELOADCTL), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def agent_pids(self) -> set[int]:
        result = self.cli("ps", "-o", "ndjson")
        return {
            rec["agent"]["pid"]
            for rec in map(json.loads, result.stdout.splitlines())
            if rec.get("status") == "ok"
        }

    def run_tasks(self, count: int) -> list[tuple[int, str]]:
        """Send ``count`` tasks; return (pid, version) of each, once all have run."""
        paths = [str(self.home / f"out-{uuid.uuid4().hex[:8]}.txt") for _ in range(count)]
        subprocess.run(
            [sys.executable, "-c", SEND, *paths],
            cwd=self.home,
            env=self.env,
            check=True,
            timeout=30,
        )
        wait_for("the tasks", lambda: all(os.path.exists(p) for p in paths), timeout=30)
        out = []
        for p in paths:
            pid, version = Path(p).read_text().split()
            out.append((int(pid), version))
        return out


@pytest.fixture
def worker() -> Iterator[Worker]:
    with short_tmpdir() as home:
        (home / "queue").mkdir()
        runtime = home / "run"
        runtime.mkdir(mode=0o700)
        (home / "celapp.py").write_text(textwrap.dedent(APP))
        (home / "tasks.py").write_text(textwrap.dedent(TASKS))
        (home / "pricing.py").write_text("def version():\n    return 'v1'\n")
        env = {
            **os.environ,
            "XDG_RUNTIME_DIR": str(runtime),
            "PYTHONPATH": str(home),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        for var in ("RELOADCTL_SECRET", "RELOADCTL_SECRET_FILE", "RELOADCTL_AGENT_LISTEN"):
            env.pop(var, None)
        argv = [sys.executable, "-m", "reloadctl.agent", "-m", "celery", "-A", "celapp"]
        argv += ["worker", "--pool", "prefork", "-c", "2", "--loglevel", "WARNING"]
        proc = subprocess.Popen(
            argv,
            cwd=home,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            yield Worker(home, env, proc)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            # pool processes of the killed group, if any outlived the main process
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_every_prefork_pool_process_is_patched_in_place(worker: Worker) -> None:
    pool = wait_for("two pool agents", lambda: len(worker.agent_pids()) == 2, timeout=40)
    assert pool
    pids = worker.agent_pids()
    assert worker.proc.pid not in pids  # none in celery's main process
    assert {v for _, v in worker.run_tasks(4)} == {"v1"}

    (worker.home / "pricing.py").write_text("def version():\n    return 'v2'\n")
    result = worker.cli("-o", "ndjson", "reload", "--local", "pricing")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[-1] == {"summary": {"reloaded": 2}}

    ran = worker.run_tasks(6)
    assert {v for _, v in ran} == {"v2"}
    assert {pid for pid, _ in ran} <= pids  # the same pool processes, not restarted
    assert worker.agent_pids() == pids

    (worker.home / "pricing.py").write_text("def version(:\n")  # a save mid-typing
    result = worker.cli("-o", "ndjson", "reload", "--local", "pricing")
    assert result.returncode == 1
    assert {v for _, v in worker.run_tasks(2)} == {"v2"}
