"""Functions: in-place patching, aliases, decorators, caches, closures, the heap-walk rule."""

# ruff: noqa: E501 - module sources written inline read best on one line

from __future__ import annotations

import asyncio
import gc
import sys

import pytest
from conftest import Kit, actions


def test_held_reference_runs_new_code_and_identity_kept(kit: Kit) -> None:
    kit.write("m", "def f():\n    return 1\n")
    m = kit.load("m")
    f = m.f
    kit.write("m", "def f():\n    return 2\n")
    r = kit.ok("m")
    assert (f(), m.f(), f is m.f) == (2, 2, True)
    assert actions(r, "patched") == [f"{kit.name('m')}.f"]


def test_from_import_elsewhere_runs_new_code(kit: Kit) -> None:
    kit.write("m", "def f():\n    return 1\n")
    kit.write("user", "from __P__m import f\ndef call():\n    return f()\n")
    m, user = kit.load("m"), kit.load("user")
    kit.write("m", "def f():\n    return 2\n")
    kit.ok("m")
    assert (user.call(), user.f(), user.f is m.f) == (2, 2, True)


def test_defaults_kwdefaults_doc_annotations_dict(kit: Kit) -> None:
    kit.write("m", "def f(a=1, *, b=2) -> int:\n    'one'\n    return a + b\nf.tag = 'x'\n")
    m = kit.load("m")
    f = m.f
    kit.write("m", "def f(a=10, *, b=20) -> str:\n    'two'\n    return a * b\n")
    kit.ok("m")
    assert f() == 200
    assert f.__defaults__ == (10,) and f.__kwdefaults__ == {"b": 20}
    assert f.__doc__ == "two" and f.__annotations__ == {"return": str}
    assert not hasattr(f, "tag")


def test_future_annotations_honoured(kit: Kit) -> None:
    kit.write("m", "from __future__ import annotations\ndef f(x: int) -> int:\n    return x\n")
    m = kit.load("m")
    f = m.f
    kit.write(
        "m",
        "from __future__ import annotations\n"
        "def f(x: NotDefinedAnywhere) -> AlsoUndefined:\n    return x * 2\n",
    )
    kit.ok("m")
    assert f(3) == 6
    assert m.f.__annotations__["x"] == "NotDefinedAnywhere"


def test_engine_future_flags_do_not_leak_into_modules(kit: Kit) -> None:
    # the engine itself uses `from __future__ import annotations`; the module must not
    kit.write("m", "def f(x: int) -> int:\n    return x\n")
    m = kit.load("m")
    kit.write("m", "def f(x: int) -> list:\n    return x\n")
    kit.ok("m")
    assert m.f.__annotations__ == {"x": int, "return": list}


def test_alias_rebound_to_another_function(kit: Kit) -> None:
    kit.write("m", "def foo():\n    return 'foo'\ndef bar():\n    return 'bar'\nf = foo\n")
    m = kit.load("m")
    foo, f = m.foo, m.f
    kit.write("m", "def foo():\n    return 'foo2'\ndef bar():\n    return 'bar'\nf = bar\n")
    kit.ok("m")
    assert (foo(), f(), m.foo(), m.f()) == ("foo2", "foo2", "foo2", "bar")
    assert m.f is m.bar


def test_top_level_lambdas_matched_by_binding(kit: Kit) -> None:
    kit.write("m", "f = lambda: 'f1'\ng = lambda: 'g1'\n")
    m = kit.load("m")
    f, g = m.f, m.g
    kit.write("m", "f = lambda: 'f2'\ng = lambda: 'g2'\n")
    kit.ok("m")
    assert (f(), g(), m.f is f, m.g is g) == ("f2", "g2", True, True)


def test_function_with_changed_free_vars_is_replaced_with_warning(kit: Kit) -> None:
    kit.write(
        "m",
        """
        import functools
        def deco(fn):
            @functools.wraps(fn)
            def wrapper():
                return fn()
            return wrapper
        @deco
        def f():
            return 1
        """,
    )
    m = kit.load("m")
    kit.write("m", "def f():\n    return 2\n")  # decoration removed: wrapper cannot become f
    r = kit.ok("m")
    assert m.f() == 2
    assert f"{kit.name('m')}.f" in actions(r, "replaced")
    assert any("free variables changed" in w and kit.name("m") + ".f" in w for w in r.warnings)


def test_generators_running_keep_old_code_new_ones_use_new(kit: Kit) -> None:
    kit.write("m", "def gen():\n    yield 1\n    yield 1\nasync def co():\n    return 1\n")
    m = kit.load("m")
    g = m.gen()
    next(g)
    gen, co = m.gen, m.co
    kit.write("m", "def gen():\n    yield 2\n    yield 2\nasync def co():\n    return 2\n")
    kit.ok("m")
    assert next(g) == 1
    assert next(gen()) == 2
    assert asyncio.run(co()) == 2


def test_registered_callback_runs_new_code(kit: Kit) -> None:
    kit.write("reg", "HANDLERS = []\ndef register(fn):\n    HANDLERS.append(fn)\n    return fn\n")
    kit.write("m", "import __P__reg as reg\n@reg.register\ndef h():\n    return 1\n")
    reg, m = kit.load("reg"), kit.load("m")
    kit.write("m", "import __P__reg as reg\n@reg.register\ndef h():\n    return 2\n")
    kit.ok("m")
    assert reg.HANDLERS[0]() == 2 and m.h() == 2
    # documented policy: the decorator ran again, so the registry has a second entry
    assert len(reg.HANDLERS) == 2


def test_wraps_decorator_same_module(kit: Kit) -> None:
    src = """
        import functools
        def deco(fn):
            @functools.wraps(fn)
            def wrapper(*a, **k):
                return fn(*a, **k) + 100
            return wrapper
        @deco
        def f():
            return {n}
        """
    kit.write("m", src.format(n=1))
    m = kit.load("m")
    f = m.f
    kit.write("m", src.format(n=2))
    kit.ok("m")
    assert (f(), m.f(), f is m.f) == (102, 102, True)
    assert m.f.__wrapped__() == 2


def test_decorator_from_other_module_and_decorator_arguments(kit: Kit) -> None:
    kit.write(
        "deco",
        """
        import functools
        def plus(n):
            def decorate(fn):
                @functools.wraps(fn)
                def wrapper(*a, **k):
                    return fn(*a, **k) + n
                return wrapper
            return decorate
        """,
    )
    kit.write("m", "from __P__deco import plus\n@plus(1)\ndef foo():\n    return 42\n")
    m = kit.load("m")
    foo = m.foo
    kit.write("m", "from __P__deco import plus\n@plus(1000)\ndef foo():\n    return 43\n")
    kit.ok("m")
    # the held wrapper takes the new decoration's state (n=1000) and the new body
    assert foo() == 1043 and m.foo() == 1043


def test_lru_cache_cleared_and_patched(kit: Kit) -> None:
    src = (
        "from functools import lru_cache\n@lru_cache(maxsize=None)\ndef f(x):\n    return x + {n}\n"
    )
    kit.write("m", src.format(n=1))
    m = kit.load("m")
    f = m.f
    assert f(1) == 2
    kit.write("m", src.format(n=2))
    r = kit.ok("m")
    assert (m.f(1), f(1), f is m.f) == (3, 3, True)
    assert f"{kit.name('m')}.f" in actions(r, "cache_cleared")


def test_lru_cache_parameters_changed_replaces(kit: Kit) -> None:
    kit.write(
        "m", "from functools import lru_cache\n@lru_cache(maxsize=4)\ndef f(x):\n    return x\n"
    )
    m = kit.load("m")
    kit.write(
        "m", "from functools import lru_cache\n@lru_cache(maxsize=8)\ndef f(x):\n    return -x\n"
    )
    r = kit.ok("m")
    assert m.f(1) == -1 and m.f.cache_parameters()["maxsize"] == 8
    assert any("cache parameters changed" in w for w in r.warnings)


def test_singledispatch_registry_follows_new_version(kit: Kit) -> None:
    src = """
        from functools import singledispatch
        @singledispatch
        def show(x):
            return 'obj{v}'
        @show.register(int)
        def _(x):
            return 'int{v}'
        """
    kit.write("m", src.format(v=1))
    m = kit.load("m")
    show = m.show
    kit.write("m", src.format(v=2))
    kit.ok("m")
    assert (show(1), show("s"), m.show(1)) == ("int2", "obj2", "int2")
    show.register(float, lambda x: "float")
    assert m.show(1.5) == "float"


def test_live_closures_patched_when_free_vars_match_else_warned(kit: Kit) -> None:
    kit.write(
        "m",
        "def make():\n    k = 1\n    def inner():\n        return k\n    return inner\n"
        "def make2():\n    k = 1\n    def inner():\n        return k\n    return inner\n",
    )
    m = kit.load("m")
    g, g2 = m.make(), m.make2()
    kit.write(
        "m",
        "def make():\n    k = 1\n    def inner():\n        return k + 1\n    return inner\n"
        "def make2():\n    k = 1\n    j = 10\n    def inner():\n        return k + j\n    return inner\n",
    )
    r = kit.ok("m")
    assert (g(), m.make()(), m.make2()(), g2()) == (2, 2, 11, 1)
    assert any("make2.<locals>.inner" in w and "keep the old code" in w for w in r.warnings), (
        r.warnings
    )
    assert any(a.kind == "patched" and "make.<locals>.inner" in a.name for a in r.actions)


def test_live_lambda_closure_patched(kit: Kit) -> None:
    kit.write("m", "def adder(n):\n    return lambda x: x + n\n")
    m = kit.load("m")
    add1 = m.adder(1)
    kit.write("m", "def adder(n):\n    return lambda x: (x + n) * 10\n")
    kit.ok("m")
    assert add1(1) == 20


def test_default_path_never_walks_the_heap(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    kit.write(
        "m",
        "import functools\nK = 1\ndef f():\n    return K\n"
        "class C:\n    def meth(self):\n        return [i for i in range(2)]\n"
        "def make():\n    def inner():\n        return 1\n    return inner\n",
    )
    m = kit.load("m")
    kit.write(
        "m",
        "import functools\nK = 2\ndef f():\n    return K * 2\n"
        "class C:\n    def meth(self):\n        return [i * 2 for i in range(2)]\n"
        "def make():\n    def inner():\n        return 1\n    return inner\n",
    )

    def forbidden(*args: object) -> list[object]:
        raise AssertionError("heap walk on the default path")

    monkeypatch.setattr(gc, "get_referrers", forbidden)
    monkeypatch.setattr(gc, "get_objects", forbidden)
    r = kit.ok("m")
    assert m.f() == 4 and m.C().meth() == [0, 2]
    assert r.status == "reloaded"


def test_changed_closure_factory_walks_heap_once(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    kit.write(
        "m",
        "def a():\n    def i():\n        return 1\n    return i\n"
        "def b():\n    def j():\n        return 1\n    return j\n",
    )
    m = kit.load("m")
    ia, jb = m.a(), m.b()
    kit.write(
        "m",
        "def a():\n    def i():\n        return 2\n    return i\n"
        "def b():\n    def j():\n        return 3\n    return j\n",
    )
    calls = []
    real = gc.get_referrers

    def counting(*objs: object) -> list[object]:
        calls.append(len(objs))
        return real(*objs)

    monkeypatch.setattr(gc, "get_referrers", counting)
    kit.ok("m")
    assert calls == [2]
    assert (ia(), jb()) == (2, 3)


def test_recursive_and_module_level_calls(kit: Kit) -> None:
    src = "def fact(n):\n    return 1 if n <= 1 else n * fact(n - 1) * {k}\nR = fact(3)\n"
    kit.write("m", src.format(k=1))
    m = kit.load("m")
    fact = m.fact
    kit.write("m", src.format(k=2))
    kit.ok("m")
    assert fact(3) == 24 and m.R == 24


def test_function_moved_into_class_kind_change_warns(kit: Kit) -> None:
    kit.write("m", "def thing():\n    return 1\n")
    m = kit.load("m")
    held = m.thing
    kit.write("m", "class thing:\n    pass\n")
    r = kit.ok("m")
    assert isinstance(m.thing, type)
    assert held() == 1
    assert any("changed kind" in w for w in r.warnings)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="PEP 695 syntax")
def test_type_params_function(kit: Kit) -> None:
    kit.write("m", "def first[T](xs: list[T]) -> T:\n    return xs[0]\n")
    m = kit.load("m")
    f = m.first
    kit.write("m", "def first[T](xs: list[T]) -> T:\n    return xs[-1]\n")
    kit.ok("m")
    assert f([1, 2]) == 2


def test_callable_object_decorator_with_update_wrapper(kit: Kit) -> None:
    src = """
        import functools
        class Counted:
            def __init__(self, fn):
                self.fn = fn
                self.calls = 0
                functools.update_wrapper(self, fn)
            def __call__(self, *a):
                self.calls += 1
                return self.fn(*a)
        @Counted
        def f():
            return {n}
        """
    kit.write("m", src.format(n=1))
    m = kit.load("m")
    f = m.f
    f()
    kit.write("m", src.format(n=2))
    r = kit.ok("m")
    assert (f(), m.f is f, f.calls) == (2, True, 2)
    assert not r.warnings


def test_partial_held_from_before(kit: Kit) -> None:
    src = "import functools\ndef add(a, b):\n    return (a + b) * {k}\nadd1 = functools.partial(add, 1)\n"
    kit.write("m", src.format(k=1))
    m = kit.load("m")
    add1 = m.add1
    kit.write("m", src.format(k=10))
    kit.ok("m")
    assert add1(1) == 20 and m.add1(1) == 20


def test_function_defaults_refer_to_live_objects(kit: Kit) -> None:
    src = "def f():\n    return {n}\ndef g(cb=f, *, other=f):\n    return cb() + other()\n"
    kit.write("m", src.format(n=1))
    m = kit.load("m")
    f = m.f
    kit.write("m", src.format(n=2))
    kit.ok("m")
    assert m.g() == 4
    assert m.g.__defaults__[0] is f and m.g.__kwdefaults__["other"] is f
