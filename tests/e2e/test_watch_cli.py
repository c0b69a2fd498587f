"""``reloadctl watch`` end to end: saving a file reloads it in a running worker, a syntax error
is reported and watching goes on, Ctrl-C ends it with 130."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RELOADCTL = Path(sys.executable).with_name("reloadctl")


def _lines(stream: IO[str]) -> queue.Queue[str]:
    """Lines of ``stream`` as they arrive (a reader thread, so waits can be bounded)."""
    q: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            q.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return q


def _next_record(
    q: queue.Queue[str], want: Callable[[dict[str, Any]], bool], timeout: float
) -> Any:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = q.get(timeout=left)
        except queue.Empty:
            break
        record = json.loads(line)
        if want(record):
            return record
    raise AssertionError(f"no matching record within {timeout}s")


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in started:
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_watch_reloads_on_save_survives_a_syntax_error_and_exits_130(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    shop = tmp_path / "shop"
    shutil.copytree(REPO / "examples" / "shop", shop)
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELOADCTL_")}
    env.update(XDG_RUNTIME_DIR=str(runtime), PYTHONDONTWRITEBYTECODE="1")

    worker = subprocess.Popen(
        [sys.executable, str(shop / "worker.py")],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs.append(worker)
    assert worker.stdout is not None
    url = json.loads(worker.stdout.readline())["url"]

    def serving() -> str:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body: bytes = resp.read()
            return body.decode()

    watch = subprocess.Popen(
        [str(RELOADCTL), "watch", str(shop), "--local", "-o", "ndjson"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs.append(watch)
    assert watch.stdout is not None and watch.stderr is not None
    records = _lines(watch.stdout)
    progress = _lines(watch.stderr)
    line = progress.get(timeout=20)
    assert "watching" in line, line

    pricing = shop / "pricing.py"
    original = pricing.read_text()

    def save(text: str) -> None:
        pricing.write_text(text)

    # The first save is repeated until it is served: the native watcher may still be
    # setting up right after the "watching" line.
    save(original.replace('"v1"', '"v2"'))
    deadline = time.monotonic() + 20
    while "pricing v2" not in serving():
        assert time.monotonic() < deadline, "the save was not reloaded"
        time.sleep(0.2)
        save(original.replace('"v1"', '"v2"') + f"\n# save {time.monotonic()}\n")
    _next_record(records, lambda r: r.get("status") == "reloaded", 10)

    save(original.replace('"v1"', '"v2"') + "\ndef broken(:\n")
    failed = _next_record(records, lambda r: r.get("status") == "failed", 20)
    assert failed["module"] == "pricing"
    assert failed["error"]["type"] == "SyntaxError"
    assert "pricing v2" in serving()
    assert watch.poll() is None, "watch stopped after a failed reload"

    save(original.replace('"v1"', '"v3"'))
    _next_record(records, lambda r: r.get("status") == "reloaded", 20)
    assert "pricing v3" in serving()

    watch.send_signal(signal.SIGINT)
    assert watch.wait(timeout=10) == 130
