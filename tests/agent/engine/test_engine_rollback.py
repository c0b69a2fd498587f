"""rollback_modules and patched_modules: one previous version per module, diverged flag."""

# ruff: noqa: E501 - module sources written inline read best on one line
from __future__ import annotations

from conftest import Kit, actions

from reloadctl.agent.engine import patched_modules, rollback_modules


def test_rollback_restores_state_before_last_reload(kit: Kit) -> None:
    kit.write(
        "m",
        "X = 1\nOLD = 1\ndef f():\n    return 1\nclass C:\n    def meth(self):\n        return 1\n",
    )
    m = kit.load("m")
    f, C, o = m.f, m.C, m.C()
    kit.write(
        "m",
        "X = 2\nNEW = 2\ndef f():\n    return 2\nclass C:\n    def meth(self):\n        return 2\n    def more(self):\n        return 3\n",
    )
    kit.ok("m")
    assert (f(), o.meth(), m.X, o.more()) == (2, 2, 2, 3)
    (r,) = rollback_modules([kit.name("m")])
    assert r.status == "reloaded" and actions(r, "restored")
    assert (m.X, m.OLD, f(), m.f is f, o.meth(), m.C is C) == (1, 1, 1, True, 1, True)
    assert not hasattr(m, "NEW") and not hasattr(m.C, "more")
    (again,) = rollback_modules([kit.name("m")])
    assert again.status == "refused" and again.error is not None
    assert "nothing to roll back" in again.error.message


def test_rollback_of_never_reloaded_module(kit: Kit) -> None:
    kit.write("m", "X = 1\n")
    kit.load("m")
    (r,) = rollback_modules([kit.name("m")])
    assert r.status == "refused" and r.error is not None
    assert "nothing to roll back" in r.error.message
    (r,) = rollback_modules(["no_such_module_rl"])
    assert r.status == "not_loaded"


def test_rollback_is_all_or_nothing(kit: Kit) -> None:
    kit.write("a", "X = 1\n")
    kit.write("b", "X = 1\n")
    a, _b = kit.load("a"), kit.load("b")
    kit.write("a", "X = 2\n")
    kit.ok("a")
    ra, rb = rollback_modules([kit.name("a"), kit.name("b")])
    assert rb.status == "refused"
    assert ra.status == "failed" and ra.error is not None and ra.error.type == "RolledBack"
    assert a.X == 2


def test_rollback_after_enum_and_closure_changes(kit: Kit) -> None:
    kit.write(
        "m",
        "from enum import Enum\nclass E(Enum):\n    A = 1\ndef make():\n    def inner():\n        return 1\n    return inner\n",
    )
    m = kit.load("m")
    g = m.make()
    kit.write(
        "m",
        "from enum import Enum\nclass E(Enum):\n    A = 1\n    B = 2\ndef make():\n    def inner():\n        return 2\n    return inner\n",
    )
    kit.ok("m")
    assert g() == 2 and m.E(2).name == "B"
    rollback_modules([kit.name("m")])
    assert g() == 1 and [e.name for e in m.E] == ["A"] and not hasattr(m.E, "B")


def test_rollback_then_reload_again(kit: Kit) -> None:
    kit.write("m", "def f():\n    return 1\n")
    m = kit.load("m")
    kit.write("m", "def f():\n    return 2\n")
    kit.ok("m")
    rollback_modules([kit.name("m")])
    assert m.f() == 1
    r = kit.ok("m")  # the disk still has v2: it is applied again, not "unchanged"
    assert m.f() == 2 and r.status == "reloaded"


def test_rollback_undoes_dependents_rebinding(kit: Kit) -> None:
    kit.write("m", "CONST = 1\n")
    kit.write("user", "from __P__m import CONST\n")
    _m, user = kit.load("m"), kit.load("user")
    kit.write("m", "CONST = 2\n")
    kit.ok("m", dependents=True)
    assert user.CONST == 2
    rollback_modules([kit.name("m")])
    assert user.CONST == 1


def test_patched_modules_counts_and_divergence(kit: Kit) -> None:
    kit.write("m", "X = 1\n")
    kit.load("m")
    assert kit.name("m") not in {p.module for p in patched_modules()}
    kit.write("m", "X = 2\n")
    kit.ok("m")
    kit.write("m", "X = 3\n")
    kit.ok("m")
    (p,) = [p for p in patched_modules() if p.module == kit.name("m")]
    assert p.reloads == 2 and p.diverged is False and p.last_reload > 0
    kit.write("m", "X = 4\n")
    (p,) = [p for p in patched_modules() if p.module == kit.name("m")]
    assert p.diverged is True
    kit.write("m", None)
    (p,) = [p for p in patched_modules() if p.module == kit.name("m")]
    assert p.diverged is True


def test_patched_modules_does_not_wait_for_a_running_reload(kit: Kit) -> None:
    import threading

    kit.write("m", "X = 1\n")
    kit.load("m")
    kit.write("m", "X = 2\n")
    kit.ok("m")
    kit.write(
        "slow",
        "import threading\nSTARTED = threading.Event()\nRELEASE = threading.Event()\n",
    )
    slow = kit.load("slow")
    started, release = slow.STARTED, slow.RELEASE
    kit.write(
        "slow",
        "import sys\nmine = sys.modules[__name__]\nmine.STARTED.set()\nmine.RELEASE.wait(10)\n"
        "STARTED = mine.STARTED\nRELEASE = mine.RELEASE\n",
    )
    worker = threading.Thread(target=kit.reload, args=("slow",), name="rl-slow-reload")
    worker.start()
    try:
        assert started.wait(10)
        names = {p.module for p in patched_modules()}  # must answer while the reload runs
        assert kit.name("m") in names
    finally:
        release.set()
        worker.join(10)
    assert not worker.is_alive()


def test_rollback_of_first_reload_then_reload_again(kit: Kit) -> None:
    kit.write("m", "X = 1\nOLD = 1\n")
    m = kit.load("m")
    kit.write("m", "X = 2\n")
    kit.ok("m")
    rollback_modules([kit.name("m")])
    assert (m.X, m.OLD) == (1, 1)
    (p,) = [p for p in patched_modules() if p.module == kit.name("m")]
    assert p.diverged is None  # the imported version's digest was never known
    kit.write("m", "X = 3\n")
    kit.ok("m")
    assert m.X == 3 and not hasattr(m, "OLD")
