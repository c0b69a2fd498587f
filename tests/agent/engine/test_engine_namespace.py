"""Module namespace behaviour: identity, pruning, globals, state, hooks, failures (A, E, G)."""

from __future__ import annotations

import sys
import typing

from conftest import Kit, actions

from reloadctl.results import Action


def test_identity_and_dunders_kept(kit: Kit) -> None:
    kit.write("m", "X = 1\n")
    m = kit.load("m")
    kit.write("m", "X = 2\n")
    kit.ok("m")
    assert sys.modules[kit.name("m")] is m
    assert m.X == 2
    assert m.__name__ == kit.name("m")
    assert m.__spec__.name == kit.name("m")
    assert m.__loader__ is not None
    assert m.__file__.endswith("m.py")
    assert "__builtins__" in vars(m)


def test_removed_names_pruned_added_names_appear(kit: Kit) -> None:
    kit.write("m", "X = 1\nOLD = 1\ndef gone():\n    return 'g1'\n")
    m = kit.load("m")
    g = m.gone
    kit.write("m", "X = 2\nNEW = 3\n")
    r = kit.ok("m")
    assert not hasattr(m, "OLD")
    assert not hasattr(m, "gone")
    assert m.NEW == 3
    assert g() == "g1"
    assert f"{kit.name('m')}.OLD" in actions(r, "removed")
    assert f"{kit.name('m')}.NEW" in actions(r, "added")


def test_runtime_names_survive_once_engine_saw_an_execution(kit: Kit) -> None:
    kit.write("m", "X = 1\n")
    m = kit.load("m")
    kit.write("m", "X = 2\n")
    kit.ok("m")
    m.runtime_flag = "set by someone else"
    kit.write("m", "X = 3\n")
    kit.ok("m")
    assert m.X == 3
    assert m.runtime_flag == "set by someone else"


def test_docstring_follows_source(kit: Kit) -> None:
    kit.write("m", '"""doc one"""\nX = 1\n')
    m = kit.load("m")
    kit.write("m", "X = 1\nY = 2\n")
    kit.ok("m")
    assert m.__doc__ is None
    kit.write("m", '"""doc two"""\nX = 1\n')
    kit.ok("m")
    assert m.__doc__ == "doc two"


def test_functions_see_new_globals(kit: Kit) -> None:
    kit.write(
        "m", "K = 1\ndef f():\n    return K\nclass C:\n    def get(self):\n        return K\n"
    )
    m = kit.load("m")
    f, o = m.f, m.C()
    kit.write(
        "m", "K = 5\ndef f():\n    return K\nclass C:\n    def get(self):\n        return K\n"
    )
    kit.ok("m")
    assert (f(), m.f(), o.get()) == (5, 5, 5)


def test_module_state_is_recreated_without_hook(kit: Kit) -> None:
    # policy: a reload behaves like a fresh import of the body: CACHE = {} is a new dict
    kit.write("m", "CACHE = {}\ndef put(k):\n    CACHE[k] = 1\n")
    m = kit.load("m")
    m.put("a")
    held = m.CACHE
    kit.write("m", "CACHE = {}\ndef put(k):\n    CACHE[k] = 2\n")
    kit.ok("m")
    assert held == {"a": 1}
    assert m.CACHE == {}
    m.put("b")
    assert m.CACHE == {"b": 2}


def test_reload_hook_carries_state(kit: Kit) -> None:
    kit.write("m", "CACHE = {}\ndef put(k):\n    CACHE[k] = 1\n")
    m = kit.load("m")
    m.put("a")
    kit.write(
        "m",
        """
        CACHE = {}
        def put(k):
            CACHE[k] = 2
        def __reload__(old_namespace):
            CACHE.update(old_namespace['CACHE'])
        """,
    )
    r = kit.ok("m")
    assert m.CACHE == {"a": 1}
    assert f"{kit.name('m')}.__reload__" in actions(r, "hook")


def test_before_reload_hook_runs_first_and_failure_changes_nothing(kit: Kit) -> None:
    kit.write(
        "m",
        """
        EVENTS = []
        X = 1
        def __before_reload__():
            EVENTS.append('before')
            raise RuntimeError('not now')
        """,
    )
    m = kit.load("m")
    events = m.EVENTS
    kit.write("m", "EVENTS = []\nX = 2\n")
    r = kit.reload_one("m")
    assert r.status == "failed"
    assert r.error is not None and r.error.type == "RuntimeError"
    assert "__before_reload__" in r.error.message
    assert events == ["before"]
    assert m.X == 1 and m.EVENTS is events


def test_before_reload_hook_success(kit: Kit) -> None:
    kit.write("m", "STOPPED = []\ndef __before_reload__():\n    STOPPED.append(1)\n")
    m = kit.load("m")
    stopped = m.STOPPED
    kit.write("m", "STOPPED = []\nX = 1\n")
    r = kit.ok("m")
    assert stopped == [1]
    assert f"{kit.name('m')}.__before_reload__" in actions(r, "hook")


def test_failing_reload_hook_rolls_everything_back(kit: Kit) -> None:
    kit.write(
        "m", "X = 1\ndef f():\n    return 1\nclass C:\n    def meth(self):\n        return 1\n"
    )
    m = kit.load("m")
    f, o = m.f, m.C()
    kit.write(
        "m",
        """
        X = 2
        def f():
            return 2
        class C:
            def meth(self):
                return 2
        def __reload__(old):
            raise KeyError('boom')
        """,
    )
    r = kit.reload_one("m")
    assert r.status == "failed" and r.error is not None and r.error.type == "KeyError"
    assert (m.X, f(), m.f(), o.meth()) == (1, 1, 1, 1)
    assert not hasattr(m, "__reload__")


def test_syntax_error_leaves_everything(kit: Kit) -> None:
    kit.write(
        "m", "X = 1\ndef f():\n    return 1\nclass C:\n    def meth(self):\n        return 1\n"
    )
    m = kit.load("m")
    f, o = m.f, m.C()
    kit.write("m", "X = (\n")
    r = kit.reload_one("m")
    assert r.status == "failed"
    assert r.error is not None and r.error.type == "SyntaxError"
    assert "SyntaxError" in r.error.traceback
    assert (m.X, f(), m.f(), o.meth()) == (1, 1, 1, 1)
    assert isinstance(o, m.C)


def test_exception_in_body_rolls_back(kit: Kit) -> None:
    kit.write("m", "a = 1\nb = 2\ndef f():\n    return 'v1'\n")
    m = kit.load("m")
    f = m.f
    kit.write("m", "a = 10\ndef f():\n    return 'v2'\nc = 3\nb = 20 // 0\n")
    r = kit.reload_one("m")
    assert r.error is not None and r.error.type == "ZeroDivisionError"
    assert "20 // 0" in r.error.traceback
    assert (m.a, m.b, m.f(), f()) == (1, 2, "v1", "v1")
    assert not hasattr(m, "c")


def test_missing_import_in_body_rolls_back(kit: Kit) -> None:
    kit.write("m", "X = 1\n")
    m = kit.load("m")
    kit.write("m", "X = 2\nimport does_not_exist_xyz_rl\n")
    r = kit.reload_one("m")
    assert r.error is not None and r.error.type == "ModuleNotFoundError"
    assert m.X == 1


def test_system_exit_and_keyboard_interrupt_in_body_are_module_failures(kit: Kit) -> None:
    kit.write("m", "X = 1\n")
    m = kit.load("m")
    kit.write("m", "X = 2\nraise SystemExit(3)\n")
    r = kit.reload_one("m")
    assert r.error is not None and r.error.type == "SystemExit"
    kit.write("m", "X = 2\nraise KeyboardInterrupt\n")
    r = kit.reload_one("m")
    assert r.error is not None and r.error.type == "KeyboardInterrupt"
    assert m.X == 1


def test_class_changes_undone_when_body_fails_later(kit: Kit) -> None:
    kit.write("m", "class C:\n    def meth(self):\n        return 1\n")
    m = kit.load("m")
    o = m.C()
    kit.write(
        "m",
        "class C:\n    def meth(self):\n        return 2\n    def extra(self):\n        return 3\n"
        "def __reload__(old):\n    raise ValueError\n",
    )
    assert kit.reload_one("m").status == "failed"
    assert o.meth() == 1
    assert not hasattr(m.C, "extra")


def test_unchanged_source_is_unchanged_and_keeps_state(kit: Kit) -> None:
    kit.write("m", "CACHE = {}\ndef f():\n    return 1\n")
    m = kit.load("m")
    kit.write("m", "CACHE = {}\ndef f():\n    return 2\n")
    kit.ok("m")
    cache, f = m.CACHE, m.f
    cache["k"] = 1
    kit.write("m", "CACHE = {}\ndef f():\n    return 2\n")  # same text, newer mtime
    r = kit.reload_one("m")
    assert r.status == "unchanged" and r.actions == ()
    assert m.CACHE is cache and m.f is f


def test_module_becomes_package(kit: Kit) -> None:
    kit.write("m", "X = 1\n")
    m = kit.load("m")
    kit.write("m", None)
    kit.write("m", "X = 2\n", package=True)
    kit.ok("m")
    assert sys.modules[kit.name("m")] is m
    assert m.X == 2
    assert m.__file__.endswith("__init__.py")
    assert isinstance(m.__path__, list)
    assert m.__spec__.origin.endswith("__init__.py")


def test_source_deleted_is_a_clear_failure(kit: Kit) -> None:
    kit.write("m", "X = 1\ndef f():\n    return 1\n")
    m = kit.load("m")
    kit.write("m", None)
    r = kit.reload_one("m")
    assert r.status == "failed"
    assert r.error is not None and r.error.type == "FileNotFoundError"
    assert "nothing was executed" in r.error.message
    assert (m.X, m.f()) == (1, 1)


def test_duration_is_reported(kit: Kit) -> None:
    kit.write("m", "X = 1\n")
    kit.load("m")
    kit.write("m", "X = 2\n")
    assert kit.ok("m").duration_ms > 0


def test_failed_reload_then_fixed_source_reloads(kit: Kit) -> None:
    kit.write("m", "X = 1\ndef f():\n    return 1\n")
    m = kit.load("m")
    f = m.f
    kit.write("m", "X = 2\ndef f():\n    return 2\n1 / 0\n")
    assert kit.reload_one("m").status == "failed"
    kit.write("m", "X = 3\ndef f():\n    return 3\n")
    kit.ok("m")
    assert (m.X, f(), m.f is f) == (3, 3, True)


def test_names_added_by_one_reload_are_pruned_by_the_next(kit: Kit) -> None:
    kit.write("m", "X = 1\n")
    m = kit.load("m")
    kit.write("m", "X = 1\nY = 2\ndef g():\n    return 1\n")
    kit.ok("m")
    m.runtime = 5
    kit.write("m", "X = 1\n")
    r = kit.ok("m")
    assert not hasattr(m, "Y") and not hasattr(m, "g")
    assert m.runtime == 5
    assert sorted(n.rpartition(".")[2] for n in actions(r, "removed")) == ["Y", "g"]


def test_empty_request() -> None:
    from reloadctl.agent.engine import reload_modules, rollback_modules

    assert reload_modules([]) == [] and rollback_modules(iter(())) == []


def test_undecodable_source_is_a_failure_not_an_exception(kit: Kit) -> None:
    path = kit.write("m", "X = 1\n")
    m = kit.load("m")
    path.write_bytes(b"# -*- coding: utf-8 -*-\nX = '\xff\xfe'\n")
    r = kit.reload_one("m")
    assert r.status == "failed" and r.error is not None
    assert r.error.type in {"UnicodeDecodeError", "SyntaxError"}
    assert m.X == 1


def test_module_annotations_follow_the_new_source(kit: Kit) -> None:
    kit.write("m", "X: int = 1\nZ: str = 'a'\n")
    m = kit.load("m")
    kit.write("m", "X: float = 2.0\n")
    r = kit.ok("m")
    assert typing.get_type_hints(m) == {"X": float}
    assert Action("removed", f"{m.__name__}.__annotations__") not in r.actions
    assert not hasattr(m, "Z")


def test_failed_body_keeps_the_old_annotations(kit: Kit) -> None:
    kit.write("m", "X: int = 1\n")
    m = kit.load("m")
    kit.write("m", "X: str = 'x'\nY = 1 // 0\n")
    r = kit.reload_one("m")
    assert r.status == "failed"
    assert typing.get_type_hints(m) == {"X": int}


def test_error_message_is_the_exception_text_without_its_type(kit: Kit) -> None:
    kit.write("m", "X = 1\n")
    kit.load("m")
    kit.write("m", "X = (\n")
    r = kit.reload_one("m")
    assert r.error is not None and r.error.type == "SyntaxError"
    assert not r.error.message.startswith("SyntaxError")
    assert "line 1" in r.error.message
    kit.write("m", "raise RuntimeError('boom')\n")
    r = kit.reload_one("m")
    assert r.error is not None and (r.error.type, r.error.message) == ("RuntimeError", "boom")


def test_changed_plain_values_are_reported_as_replaced(kit: Kit) -> None:
    kit.write("m", "PRICES = {'apple': 1.2}\nSAME = (1, 2)\nCACHE = {}\n")
    m = kit.load("m")
    m.CACHE["k"] = 1
    kit.write("m", "PRICES = {'apple': 0.99}\nSAME = (1, 2)\nCACHE = {}\n")
    r = kit.ok("m")
    replaced = {a.name for a in r.actions if a.kind == "replaced"}
    assert replaced == {f"{m.__name__}.PRICES", f"{m.__name__}.CACHE"}  # CACHE was reset
    assert m.PRICES == {"apple": 0.99} and m.CACHE == {}


def test_dry_run_of_an_annotated_module_plans_no_removal_of_annotations(kit: Kit) -> None:
    kit.write("m", "X: int = 1\n")
    m = kit.load("m")
    kit.write("m", "X: int = 2\n")
    r = kit.reload_one("m", dry_run=True)
    assert r.status == "reloaded" and r.actions == ()
    assert m.X == 1
