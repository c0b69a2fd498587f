"""Thread safety: callers of a module never see a missing name while it reloads."""

from __future__ import annotations

import os
import threading
import time

import pytest
from conftest import Kit


def test_concurrent_callers_never_see_missing_names(kit: Kit) -> None:
    src = (
        "LIMIT = {n}\n"
        "def f():\n    return helper() + LIMIT\n"
        "def helper():\n    return {n}\n"
        "class C:\n    def meth(self):\n        return f()\n"
    )
    kit.write("m", src.format(n=0))
    m = kit.load("m")
    errors: list[BaseException] = []
    stop = threading.Event()
    calls = [0]

    def hammer() -> None:
        o = m.C()
        while not stop.is_set():
            try:
                o.meth()
                m.f()
                m.C().meth()
                calls[0] += 1
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=hammer, name=f"rl-hammer-{i}") for i in range(2)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 3.0
        n = 0
        while time.monotonic() < deadline and n < 40:
            n += 1
            kit.write("m", src.format(n=n))
            assert kit.reload_one("m").status == "reloaded"
            if n % 5 == 0:
                kit.write("m", src.format(n=n) + "raise RuntimeError('broken')\n")
                assert kit.reload_one("m").status == "failed"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
    assert not errors, errors
    assert calls[0] > 0
    assert m.f() == 2 * n


def test_reloads_from_two_threads_are_serialised(kit: Kit) -> None:
    kit.write("m", "COUNT = 0\n")
    m = kit.load("m")
    results: list[str] = []

    path = kit.root / f"{kit.name('m')}.py"

    def reload_many(tag: int) -> None:
        for i in range(10):
            # atomic replace: the other thread's reload must never read a half-written file
            tmp = path.with_name(f"{path.stem}.{tag}.tmp")
            tmp.write_text(f"COUNT = {tag * 100 + i}\n")
            os.replace(tmp, path)
            results.append(kit.reload_one("m").status)

    threads = [
        threading.Thread(target=reload_many, args=(t,), name=f"rl-reloader-{t}") for t in (1, 2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert set(results) <= {"reloaded", "unchanged"}
    assert isinstance(m.COUNT, int)


def test_reading_and_compiling_happen_outside_the_reload_lock(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reloadctl.agent.engine import history, reload_modules, resolve

    kit.write("m", "X = 1\n")
    m = kit.load("m")
    kit.write("m", "X = 2\n")
    compiled = threading.Event()
    real_compile = resolve.compile_module

    def spying_compile(text: str, filename: str):  # type: ignore[no-untyped-def]
        code = real_compile(text, filename)
        compiled.set()
        return code

    monkeypatch.setattr(resolve, "compile_module", spying_compile)
    results: list[object] = []
    with history.LOCK:  # another reload is "running"
        worker = threading.Thread(
            target=lambda: results.extend(reload_modules([kit.name("m")])), name="rl-waiting"
        )
        worker.start()
        assert compiled.wait(10), "compiling waited for the reload lock"
        dry: list[object] = []
        planner = threading.Thread(
            target=lambda: dry.extend(reload_modules([kit.name("m")], dry_run=True)),
            name="rl-dry-run",
        )
        planner.start()
        planner.join(10)  # a dry run never needs the reload lock
        assert not planner.is_alive() and getattr(dry[0], "status", None) == "reloaded"
        assert m.X == 1 and worker.is_alive()  # applying does wait for the lock
    worker.join(10)
    assert not worker.is_alive() and m.X == 2
