"""Red-team probes beyond the public forty: IPython autoreload/deduperreload, jurigged,
CPython test_importlib reload tests and reported bugs; each test names its origin."""

# ruff: noqa: E501 - module sources written inline read best on one line

from __future__ import annotations

import asyncio
import sys

import pytest
from conftest import Kit, actions

from reloadctl.agent.engine import reload_modules, rollback_modules

# ---------------------------------------------------------------- functions


def test_held_bound_method_runs_new_code(kit: Kit) -> None:
    # IPython autoreload test_smoketest: `bm = obj.method` held across a reload
    kit.write("m", "class C:\n    def meth(self):\n        return 1\n")
    m = kit.load("m")
    o = m.C()
    bm = o.meth
    kit.write("m", "class C:\n    def meth(self):\n        return 2\n")
    kit.ok("m")
    assert (bm(), bm.__func__ is m.C.meth) == (2, True)


def test_static_and_class_methods_held_from_the_class(kit: Kit) -> None:
    # IPython autoreload: classmethod/staticmethod references taken before the reload
    src = "class C:\n    @staticmethod\n    def s():\n        return {x}\n    @classmethod\n    def c(cls):\n        return (cls.__name__, {x})\n"
    kit.write("m", src.format(x=1))
    m = kit.load("m")
    s, c = m.C.s, m.C.c
    kit.write("m", src.format(x=2))
    kit.ok("m")
    assert (s(), c()) == (2, ("C", 2))
    assert c.__self__ is m.C


def test_partial_of_held_function(kit: Kit) -> None:
    # jurigged: functools.partial objects created before the reload
    kit.write(
        "m", "import functools\ndef f(a, b):\n    return a + b\np = functools.partial(f, 1)\n"
    )
    m = kit.load("m")
    import functools

    held = functools.partial(m.f, 10)
    kit.write(
        "m", "import functools\ndef f(a, b):\n    return a * b\np = functools.partial(f, 1)\n"
    )
    kit.ok("m")
    assert (held(3), m.p(3), m.p.func is m.f) == (30, 3, True)


def test_singledispatch_new_registration(kit: Kit) -> None:
    # IPython deduperreload: singledispatch registry gains a type in the new version
    v1 = "import functools\n@functools.singledispatch\ndef show(x):\n    return 'obj'\n@show.register\ndef _(x: int):\n    return 'int'\n"
    kit.write("m", v1)
    m = kit.load("m")
    show = m.show
    kit.write(
        "m", v1.replace("'int'", "'INT'") + "@show.register\ndef _(x: str):\n    return 'str'\n"
    )
    kit.ok("m")
    assert (show(1), show("a"), show(1.0), m.show is show) == ("INT", "str", "obj", True)


def test_contextmanager_function_held(kit: Kit) -> None:
    # reported bug class: contextlib.contextmanager wrappers (functools.wraps) held elsewhere
    src = "import contextlib\n@contextlib.contextmanager\ndef cm():\n    yield {x}\n"
    kit.write("m", src.format(x=1))
    m = kit.load("m")
    cm = m.cm
    kit.write("m", src.format(x=2))
    kit.ok("m")
    with cm() as value:
        assert value == 2
    assert cm is m.cm


def test_async_generator_function_held(kit: Kit) -> None:
    # jurigged: async generator functions are patched like any function
    src = "async def agen():\n    for i in range({n}):\n        yield i\n"
    kit.write("m", src.format(n=2))
    m = kit.load("m")
    agen = m.agen

    async def collect() -> list[int]:
        return [i async for i in agen()]

    kit.write("m", src.format(n=3))
    kit.ok("m")
    assert asyncio.run(collect()) == [0, 1, 2]


def test_keyword_only_argument_added(kit: Kit) -> None:
    # IPython autoreload: signature changes (new kw-only arg with default)
    kit.write("m", "def f(a):\n    return a\n")
    m = kit.load("m")
    f = m.f
    kit.write("m", "def f(a, *, scale=3):\n    return a * scale\n")
    kit.ok("m")
    assert (f(2), f(2, scale=5), f.__kwdefaults__) == (6, 10, {"scale": 3})


def test_global_statement_function(kit: Kit) -> None:
    # CPython reload: functions with `global` rebind the live module's names
    kit.write("m", "N = 0\ndef inc():\n    global N\n    N += 1\n    return N\n")
    m = kit.load("m")
    inc = m.inc
    kit.write("m", "N = 100\ndef inc():\n    global N\n    N += 2\n    return N\n")
    kit.ok("m")
    assert (inc(), m.N) == (102, 102)


def test_function_becomes_class_and_back(kit: Kit) -> None:
    # jurigged: a definition changing kind is replaced with a warning, never a crash
    kit.write("m", "def thing():\n    return 'f'\n")
    m = kit.load("m")
    old = m.thing
    kit.write("m", "class thing:\n    pass\n")
    r = kit.ok("m")
    assert isinstance(m.thing, type) and old() == "f"
    assert any("changed kind" in w for w in r.warnings)
    kit.write("m", "def thing():\n    return 'g'\n")
    r = kit.ok("m")
    assert m.thing() == "g"
    assert any("changed kind" in w for w in r.warnings)


def test_docstring_and_annotations_of_function(kit: Kit) -> None:
    # IPython deduperreload: docstring-only and annotation-only changes
    kit.write("m", 'def f(x: int) -> int:\n    "one"\n    return x\n')
    m = kit.load("m")
    f = m.f
    kit.write("m", 'def f(x: str) -> str:\n    "two"\n    return x\n')
    kit.ok("m")
    assert (f.__doc__, f.__annotations__) == ("two", {"x": str, "return": str})


# ---------------------------------------------------------------- classes


def test_nested_class_instance_held(kit: Kit) -> None:
    # IPython autoreload: instances of nested classes
    src = "class Outer:\n    class Inner:\n        def v(self):\n            return {x}\n"
    kit.write("m", src.format(x=1))
    m = kit.load("m")
    o = m.Outer.Inner()
    kit.write("m", src.format(x=2))
    kit.ok("m")
    assert (o.v(), type(o) is m.Outer.Inner) == (2, True)


def test_method_added_to_base_used_by_subclass_elsewhere(kit: Kit) -> None:
    # IPython #11488: a method added to a base class is seen by a subclass in another module
    kit.write("base", "class Base:\n    pass\n")
    kit.write(
        "sub",
        "from __P__base import Base\nclass Sub(Base):\n    def go(self):\n        return self.helper()\n",
    )
    kit.load("base")
    sub = kit.load("sub")
    o = sub.Sub()
    kit.write("base", "class Base:\n    def helper(self):\n        return 'new'\n")
    kit.ok("base")
    assert o.go() == "new"


def test_class_attribute_mutable_container_follows_source(kit: Kit) -> None:
    # fresh-import semantics: a class-level list literal is the new source's list
    kit.write("m", "class C:\n    ITEMS = [1]\n    def n(self):\n        return len(self.ITEMS)\n")
    m = kit.load("m")
    o = m.C()
    kit.write(
        "m", "class C:\n    ITEMS = [1, 2, 3]\n    def n(self):\n        return len(self.ITEMS)\n"
    )
    kit.ok("m")
    assert (o.n(), m.C.ITEMS) == (3, [1, 2, 3])


def test_typing_namedtuple_method_change_keeps_class(kit: Kit) -> None:
    # IPython autoreload: NamedTuple classes; only fields are layout
    src = "import typing\nclass P(typing.NamedTuple):\n    x: int\n    y: int = 0\n    def norm(self):\n        return self.x + self.y * {k}\n"
    kit.write("m", src.format(k=1))
    m = kit.load("m")
    P, p = m.P, m.P(1, 2)
    kit.write("m", src.format(k=10))
    r = kit.ok("m")
    assert (m.P is P, p.norm(), r.warnings) == (True, 21, ())


def test_typing_namedtuple_field_change_replaces_with_warning(kit: Kit) -> None:
    # IPython autoreload: NamedTuple field change is a layout change
    kit.write("m", "import typing\nclass P(typing.NamedTuple):\n    x: int\n")
    m = kit.load("m")
    P = m.P
    kit.write("m", "import typing\nclass P(typing.NamedTuple):\n    x: int\n    y: int = 5\n")
    r = kit.ok("m")
    assert m.P is not P and m.P(1).y == 5
    assert any("named tuple fields changed" in w for w in r.warnings)


def test_typed_dict_gains_key(kit: Kit) -> None:
    # typing.TypedDict: required keys follow the new source
    kit.write("m", "import typing\nclass TD(typing.TypedDict):\n    a: int\n")
    m = kit.load("m")
    kit.write("m", "import typing\nclass TD(typing.TypedDict):\n    a: int\n    b: str\n")
    kit.ok("m")
    assert m.TD.__required_keys__ == frozenset({"a", "b"})
    assert set(m.TD.__annotations__) == {"a", "b"}


def test_runtime_checkable_protocol_gains_member(kit: Kit) -> None:
    # typing.Protocol: isinstance follows the new protocol members (abc caches cleared)
    kit.write(
        "m",
        "import typing\n@typing.runtime_checkable\nclass P(typing.Protocol):\n    def a(self): ...\nclass Only:\n    def a(self):\n        return 1\n",
    )
    m = kit.load("m")
    o = m.Only()
    assert isinstance(o, m.P)
    kit.write(
        "m",
        "import typing\n@typing.runtime_checkable\nclass P(typing.Protocol):\n    def a(self): ...\n    def b(self): ...\nclass Only:\n    def a(self):\n        return 1\n",
    )
    kit.ok("m")
    assert not isinstance(o, m.P)


def test_abc_abstract_method_added_and_removed(kit: Kit) -> None:
    # CPython abc: instantiation rules follow the new source's __abstractmethods__
    kit.write(
        "m",
        "import abc\nclass A(abc.ABC):\n    @abc.abstractmethod\n    def f(self): ...\nclass Impl(A):\n    def f(self):\n        return 1\n",
    )
    m = kit.load("m")
    with pytest.raises(TypeError):
        m.A()
    kit.write(
        "m",
        "import abc\nclass A(abc.ABC):\n    def f(self):\n        return 0\nclass Impl(A):\n    def f(self):\n        return 1\n",
    )
    kit.ok("m")
    assert m.A().f() == 0
    kit.write(
        "m",
        "import abc\nclass A(abc.ABC):\n    @abc.abstractmethod\n    def f(self): ...\n    @abc.abstractmethod\n    def g(self): ...\nclass Impl(A):\n    def f(self):\n        return 1\n",
    )
    kit.ok("m")
    with pytest.raises(TypeError):
        m.A()
    with pytest.raises(TypeError):
        m.Impl()


def test_abc_base_gains_abstract_method_subclass_elsewhere(kit: Kit) -> None:
    # like a fresh import: a subclass (in a module not reloaded) missing a new abstract
    # method can no longer be instantiated
    kit.write(
        "base", "import abc\nclass A(abc.ABC):\n    @abc.abstractmethod\n    def f(self): ...\n"
    )
    kit.write(
        "impl", "from __P__base import A\nclass Impl(A):\n    def f(self):\n        return 1\n"
    )
    kit.load("base")
    impl = kit.load("impl")
    assert impl.Impl().f() == 1
    kit.write(
        "base",
        "import abc\nclass A(abc.ABC):\n    @abc.abstractmethod\n    def f(self): ...\n    @abc.abstractmethod\n    def g(self): ...\n",
    )
    kit.ok("base")
    with pytest.raises(TypeError):
        impl.Impl()


def test_abc_register_in_new_source(kit: Kit) -> None:
    # abc virtual subclasses registered by the new body apply to the kept ABC
    kit.write("m", "import abc\nclass A(abc.ABC):\n    pass\nclass X:\n    pass\n")
    m = kit.load("m")
    x = m.X()
    assert not isinstance(x, m.A)
    kit.write("m", "import abc\nclass A(abc.ABC):\n    pass\nclass X:\n    pass\nA.register(X)\n")
    kit.ok("m")
    assert isinstance(x, m.A) and issubclass(m.X, m.A)


def test_total_ordering_follows_new_lt(kit: Kit) -> None:
    # functools.total_ordering: derived comparisons use the new __lt__
    src = "import functools\n@functools.total_ordering\nclass V:\n    def __init__(self, v):\n        self.v = v\n    def __eq__(self, o):\n        return self.v == o.v\n    def __lt__(self, o):\n        return {expr}\n"
    kit.write("m", src.format(expr="self.v < o.v"))
    m = kit.load("m")
    a, b = m.V(1), m.V(2)
    assert a < b and b > a
    kit.write("m", src.format(expr="self.v > o.v"))
    kit.ok("m")
    assert (a < b, b > a, a >= b) == (False, False, True)


def test_eq_and_hash_changes(kit: Kit) -> None:
    # class-level __eq__ added (fresh class gets __hash__ = None) and removed again
    kit.write("m", "class K:\n    def __init__(self, v):\n        self.v = v\n")
    m = kit.load("m")
    a, b = m.K(1), m.K(1)
    kit.write(
        "m",
        "class K:\n    def __init__(self, v):\n        self.v = v\n    def __eq__(self, o):\n        return self.v == o.v\n",
    )
    kit.ok("m")
    assert a == b
    with pytest.raises(TypeError):
        hash(a)
    kit.write(
        "m",
        "class K:\n    def __init__(self, v):\n        self.v = v\n    def __eq__(self, o):\n        return self.v == o.v\n    def __hash__(self):\n        return hash(self.v)\n",
    )
    kit.ok("m")
    assert hash(a) == hash(b)
    kit.write("m", "class K:\n    def __init__(self, v):\n        self.v = v\n")
    kit.ok("m")
    assert a != b and isinstance(hash(a), int)


def test_metaclass_call_changed(kit: Kit) -> None:
    # a metaclass defining __call__ (singletons): the kept class follows the new metaclass code
    src = "class Meta(type):\n    def __call__(cls, *a):\n        return ('made', {x})\nclass S(metaclass=Meta):\n    pass\n"
    kit.write("m", src.format(x=1))
    m = kit.load("m")
    S = m.S
    kit.write("m", src.format(x=2))
    r = kit.ok("m")
    assert (S(), m.S is S, r.warnings) == (("made", 2), True, ())


def test_flag_with_auto_gains_member_is_replaced_with_warning(kit: Kit) -> None:
    # enum.Flag/auto(): a Flag's bit masks are fixed at class creation, so a Flag that gains
    # members is a documented replacement (warning), and the new class is complete
    kit.write("m", "import enum\nclass F(enum.Flag):\n    A = enum.auto()\n    B = enum.auto()\n")
    m = kit.load("m")
    F, a = m.F, m.F.A
    kit.write(
        "m",
        "import enum\nclass F(enum.Flag):\n    A = enum.auto()\n    B = enum.auto()\n    C = enum.auto()\n",
    )
    r = kit.ok("m")
    assert m.F is not F and a is F.A
    assert any("Flag members added" in w for w in r.warnings)
    assert (m.F.C.value, (m.F.A | m.F.C).value, list(m.F)) == (4, 5, [m.F.A, m.F.B, m.F.C])


def test_flag_method_change_keeps_members(kit: Kit) -> None:
    # enum.Flag: same members, new method code: class and combined members kept
    src = "import enum\nclass F(enum.Flag):\n    A = enum.auto()\n    B = enum.auto()\n    def tag(self):\n        return {t!r}\n"
    kit.write("m", src.format(t="a"))
    m = kit.load("m")
    F, ab = m.F, m.F.A | m.F.B
    kit.write("m", src.format(t="b"))
    r = kit.ok("m")
    assert (m.F is F, ab.tag(), m.F.A | m.F.B == ab, r.warnings) == (True, "b", True, ())


def test_intenum_method_change(kit: Kit) -> None:
    # enum.IntEnum: a method change keeps members and class
    src = (
        "import enum\nclass E(enum.IntEnum):\n    X = 1\n    def tag(self):\n        return {t!r}\n"
    )
    kit.write("m", src.format(t="a"))
    m = kit.load("m")
    x = m.E.X
    kit.write("m", src.format(t="b"))
    kit.ok("m")
    assert (x.tag(), m.E.X is x, x == 1) == ("b", True, True)


def test_dataclass_default_factory_changed(kit: Kit) -> None:
    # dataclasses: field(default_factory=...) changed
    src = "import dataclasses\n@dataclasses.dataclass\nclass D:\n    items: list = dataclasses.field(default_factory={f})\n"
    kit.write("m", src.format(f="list"))
    m = kit.load("m")
    D = m.D
    kit.write("m", src.format(f="lambda: [1]"))
    kit.ok("m")
    assert (D().items, m.D is D) == ([1], True)


def test_class_renamed_old_pruned_new_added(kit: Kit) -> None:
    # IPython deduperreload: class renamed
    kit.write("m", "class Old:\n    def v(self):\n        return 1\n")
    m = kit.load("m")
    o = m.Old()
    kit.write("m", "class New:\n    def v(self):\n        return 2\n")
    r = kit.ok("m")
    assert not hasattr(m, "Old") and m.New().v() == 2 and o.v() == 1
    assert f"{kit.name('m')}.Old" in actions(r, "removed")


def test_function_registered_elsewhere_follows_every_later_version(kit: Kit) -> None:
    # pydantic#6079 / plugin registries: the entry a decorator added at v2 (the v2 function
    # object) must not be frozen at v2 when v3 is applied; rollback takes it back to v2
    kit.write("reg", "HANDLERS = []\ndef register(fn):\n    HANDLERS.append(fn)\n    return fn\n")
    src = "from __P__reg import register\n@register\ndef h():\n    return {x}\n"
    kit.write("m", src.format(x=1))
    reg = kit.load("reg")
    m = kit.load("m")
    for x in (2, 3):
        kit.write("m", src.format(x=x))
        kit.ok("m")
    assert [h() for h in reg.HANDLERS] == [3, 3, 3]
    (r,) = rollback_modules([m.__name__])
    assert r.status == "reloaded"
    assert [h() for h in reg.HANDLERS] == [2, 2, 3]


def test_class_registered_by_decorator_in_other_module(kit: Kit) -> None:
    # plugin registries: the registry in another module holds the class object the new body
    # made; it has the new code. LIMIT: objects it makes are not instances of the live class
    # (only a heap walk could re-point the registry); documented in the engine's policies.
    kit.write("reg", "REG = {}\ndef register(cls):\n    REG[cls.__name__] = cls\n    return cls\n")
    kit.write(
        "m",
        "from __P__reg import register\n@register\nclass P:\n    def v(self):\n        return 1\n",
    )
    reg = kit.load("reg")
    m = kit.load("m")
    o = m.P()
    kit.write(
        "m",
        "from __P__reg import register\n@register\nclass P:\n    def v(self):\n        return 2\n",
    )
    kit.ok("m")
    assert (reg.REG["P"]().v(), o.v(), m.P().v()) == (2, 2, 2)


def test_init_subclass_changed_in_base(kit: Kit) -> None:
    # __init_subclass__ of a kept base applies to classes defined by the new body
    src = "class Base:\n    seen = []\n    def __init_subclass__(cls, **kw):\n        super().__init_subclass__(**kw)\n        cls.tag = {t!r}\nclass A(Base):\n    pass\n"
    kit.write("m", src.format(t="one"))
    m = kit.load("m")
    A = m.A
    kit.write("m", src.format(t="two"))
    kit.ok("m")
    assert (A.tag, m.A is A) == ("two", True)


# ---------------------------------------------------------------- module level


def test_module_getattr_and_dir_pep562(kit: Kit) -> None:
    # PEP 562 hooks change and disappear like any definition
    kit.write(
        "m", "def __getattr__(name):\n    return 'v1:' + name\ndef __dir__():\n    return ['a']\n"
    )
    m = kit.load("m")
    assert m.zz == "v1:zz"
    kit.write("m", "def __getattr__(name):\n    return 'v2:' + name\n")
    kit.ok("m")
    assert m.zz == "v2:zz" and "__dir__" not in vars(m)
    kit.write("m", "X = 1\n")
    kit.ok("m")
    with pytest.raises(AttributeError):
        m.zz


def test_dunder_all_changes(kit: Kit) -> None:
    # `from m import *` follows the new __all__
    kit.write("m", "__all__ = ['a']\na = 1\nb = 2\n")
    m = kit.load("m")
    kit.write("m", "__all__ = ['b']\na = 1\nb = 2\n")
    kit.ok("m")
    ns: dict[str, object] = {}
    exec(f"from {m.__name__} import *", ns)
    assert "b" in ns and "a" not in ns
    kit.write("m", "a = 1\n_b = 2\n")
    kit.ok("m")
    assert not hasattr(m, "__all__")


def test_star_import_from_sibling_follows_sibling(kit: Kit) -> None:
    # IPython #10395-like: `from .sibling import *` re-run after the sibling changed
    kit.write("pkg", "", package=True)
    kit.write("pkg.s", "A = 1\nB = 2\n")
    kit.write("pkg.a", "from .s import *\n")
    a = kit.load("pkg.a")
    assert (a.A, a.B) == (1, 2)
    kit.write("pkg.s", "A = 10\nC = 3\n")
    rs = kit.reload("pkg.s", "pkg.a")
    assert [r.status for r in rs] == ["reloaded", "reloaded"], rs
    assert (a.A, a.C, hasattr(a, "B")) == (10, 3, False)


def test_conditional_definition_on_version(kit: Kit) -> None:
    # CPython stdlib idiom: two defs of one name under `if sys.version_info`
    src = "import sys\nif sys.version_info >= (3, 0):\n    def f():\n        return {x}\nelse:\n    def f():\n        return -1\n"
    kit.write("m", src.format(x=1))
    m = kit.load("m")
    f = m.f
    kit.write("m", src.format(x=2))
    kit.ok("m")
    assert (f(), m.f is f) == (2, True)


def test_persistent_state_idiom_try_nameerror(kit: Kit) -> None:
    # IPython/Guido idiom: `try: X except NameError: X = []` survives the reload
    src = "try:\n    STATE\nexcept NameError:\n    STATE = []\ndef add(v):\n    STATE.append(v)\n    return len(STATE) * {k}\n"
    kit.write("m", src.format(k=1))
    m = kit.load("m")
    m.add("a")
    state = m.STATE
    kit.write("m", src.format(k=10))
    kit.ok("m")
    assert (m.STATE is state, m.add("b")) == (True, 20)


def test_type_checking_only_import_is_pruned(kit: Kit) -> None:
    # fresh import: a name imported only under `if TYPE_CHECKING:` does not exist at run time
    kit.write("m", "from collections import OrderedDict\nX = 1\n")
    m = kit.load("m")
    assert hasattr(m, "OrderedDict")
    kit.write(
        "m",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from collections import OrderedDict\nX = 2\n",
    )
    kit.ok("m")
    assert not hasattr(m, "OrderedDict") and m.X == 2


def test_del_at_top_level(kit: Kit) -> None:
    # a name the new body binds and then deletes is gone, like in a fresh import
    kit.write("m", "helper = 1\nX = helper + 1\n")
    m = kit.load("m")
    kit.write("m", "helper = 5\nX = helper + 1\ndel helper\n")
    kit.ok("m")
    assert (m.X, hasattr(m, "helper")) == (6, False)


def test_body_thread_stopped_by_hook(kit: Kit) -> None:
    # reloader/pydevd hooks: a module that starts a thread stops it before the reload
    src = (
        "import threading\n"
        "STOP = threading.Event()\n"
        "T = threading.Thread(target=STOP.wait, name='rlt-{v}', daemon=True)\n"
        "T.start()\n"
        "def __before_reload__():\n"
        "    STOP.set()\n"
        "    T.join(5)\n"
    )
    kit.write("m", src.format(v=1))
    m = kit.load("m")
    t1 = m.T
    kit.write("m", src.format(v=2))
    r = kit.ok("m")
    try:
        assert not t1.is_alive() and m.T.is_alive() and m.T is not t1
        assert f"{kit.name('m')}.__before_reload__" in actions(r, "hook")
    finally:
        m.STOP.set()
        m.T.join(5)


def test_new_import_on_reload(kit: Kit) -> None:
    # a module importing a module not loaded before (here a fresh sibling) on reload
    kit.write("m", "X = 1\n")
    m = kit.load("m")
    kit.write("dep", "V = 42\n")
    kit.write("m", "import __P__dep as dep\nX = dep.V\n")
    kit.ok("m")
    assert m.X == 42 and m.dep.V == 42


def test_relative_import_beyond_package_fails_cleanly(kit: Kit) -> None:
    # CPython: `from .. import x` beyond the top-level package is ImportError; nothing applied
    kit.write("m", "X = 1\n")
    m = kit.load("m")
    kit.write("m", "X = 2\nfrom .. import nothing\n")
    r = kit.reload_one("m")
    assert r.status == "failed" and r.error is not None and r.error.type == "ImportError"
    assert m.X == 1


def test_three_versions_with_v1_references(kit: Kit) -> None:
    # jurigged: v1 -> v2 -> v3 quickly, references from v1 follow every version
    src = "def f():\n    return {x}\nclass C:\n    def m(self):\n        return {x}\n"
    kit.write("m", src.format(x=1))
    m = kit.load("m")
    f, o = m.f, m.C()
    bm = o.m
    for x in (2, 3):
        kit.write("m", src.format(x=x))
        kit.ok("m")
    assert (f(), o.m(), bm(), f is m.f, type(o) is m.C) == (3, 3, 3, True, True)


def test_rollback_after_two_reloads(kit: Kit) -> None:
    # rollback restores the state before the last reload (v2), then refuses a second time
    src = "X = {x}\ndef f():\n    return {x}\n"
    kit.write("m", src.format(x=1))
    m = kit.load("m")
    f = m.f
    for x in (2, 3):
        kit.write("m", src.format(x=x))
        kit.ok("m")
    (r,) = rollback_modules([m.__name__])
    assert r.status == "reloaded"
    assert (m.X, f(), m.f is f) == (2, 2, True)
    (r,) = rollback_modules([m.__name__])
    assert r.status == "refused"
    assert (m.X, f()) == (2, 2)


# ---------------------------------------------------------------- failures


def _assert_v1_intact(m: object, f: object, o: object) -> None:
    assert m.X == 1  # type: ignore[attr-defined]
    assert f() == 1  # type: ignore[operator]
    assert o.meth() == 1  # type: ignore[attr-defined]
    assert type(o) is m.C  # type: ignore[attr-defined]
    assert not hasattr(m, "Y")


_V1 = "X = 1\ndef f():\n    return 1\nclass C:\n    def meth(self):\n        return 1\n"


@pytest.mark.parametrize(
    ("v2", "error"),
    [
        # exception in a class body
        (
            "class C:\n    def meth(self):\n        return 2\n    raise ValueError('body')\n",
            "ValueError",
        ),
        # exception in a decorator
        (
            "def deco(fn):\n    raise KeyError('deco')\nclass C:\n    @deco\n    def meth(self):\n        return 2\n",
            "KeyError",
        ),
        # exception in __init_subclass__
        (
            "class B:\n    def __init_subclass__(cls):\n        raise TypeError('sub')\nclass C(B):\n    def meth(self):\n        return 2\n",
            "TypeError",
        ),
        # recursion error in the body
        ("def r(n):\n    return r(n + 1)\nr(0)\n", "RecursionError"),
        # SystemExit in the body
        ("import sys\nsys.exit(3)\n", "SystemExit"),
    ],
    ids=["class-body", "decorator", "init-subclass", "recursion", "systemexit"],
)
def test_failures_roll_back_everything(kit: Kit, v2: str, error: str) -> None:
    # IPython smoketest / CPython test_failing_reload: nothing half applied
    kit.write("m", _V1)
    m = kit.load("m")
    f, o = m.f, m.C()
    kit.write("m", "X = 2\nY = 1\ndef f():\n    return 2\n" + v2)
    r = kit.reload_one("m")
    assert r.status == "failed" and r.error is not None and r.error.type == error, r
    _assert_v1_intact(m, f, o)


def test_set_name_failure_rolls_back(kit: Kit) -> None:
    # __set_name__ raising (wrapped in RuntimeError before 3.12): rolled back
    kit.write("m", _V1)
    m = kit.load("m")
    f, o = m.f, m.C()
    kit.write(
        "m",
        "X = 2\nY = 1\ndef f():\n    return 2\nclass D:\n    def __set_name__(self, owner, name):\n        raise ValueError('x')\nclass C:\n    d = D()\n    def meth(self):\n        return 2\n",
    )
    r = kit.reload_one("m")
    assert r.status == "failed" and r.error is not None
    assert r.error.type in ("RuntimeError", "ValueError")
    _assert_v1_intact(m, f, o)


def test_reload_hook_failure_restores_cache(kit: Kit) -> None:
    # a failing __reload__ rolls back module, classes, held functions and lru caches' code
    kit.write("m", "import functools\nX = 1\n@functools.lru_cache\ndef sq(v):\n    return v * v\n")
    m = kit.load("m")
    sq = m.sq
    assert sq(3) == 9
    kit.write(
        "m",
        "import functools\nX = 2\n@functools.lru_cache\ndef sq(v):\n    return v * v * v\ndef __reload__(old):\n    raise RuntimeError('no')\n",
    )
    r = kit.reload_one("m")
    assert r.status == "failed" and r.error is not None and r.error.type == "RuntimeError"
    assert (m.X, sq(3), sq(4), hasattr(m, "__reload__")) == (1, 9, 16, False)


def test_fixed_version_applies_after_failure(kit: Kit) -> None:
    # IPython smoketest: after a failed reload, the fixed version applies cleanly
    kit.write("m", _V1)
    m = kit.load("m")
    f, o = m.f, m.C()
    kit.write(
        "m", "X = 2\ndef f():\n    return 2\nclass C:\n    def meth(self):\n        return 2\n1/0\n"
    )
    assert kit.reload_one("m").status == "failed"
    kit.write(
        "m", "X = 3\ndef f():\n    return 3\nclass C:\n    def meth(self):\n        return 3\n"
    )
    kit.ok("m")
    assert (m.X, f(), o.meth(), type(o) is m.C) == (3, 3, 3, True)


# ---------------------------------------------------------------- pydantic


def test_pydantic_field_validator_and_method(kit: Kit) -> None:
    # pydantic#6079 / IPython: v2 model with a field added, a validator changed, a method changed
    pytest.importorskip("pydantic")
    v1 = (
        "import pydantic\n"
        "class M(pydantic.BaseModel):\n"
        "    a: int\n"
        "    @pydantic.field_validator('a')\n"
        "    @classmethod\n"
        "    def check(cls, v):\n"
        "        return v + 1\n"
        "    def show(self):\n"
        "        return f'v1 {self.a}'\n"
    )
    kit.write("m", v1)
    m = kit.load("m")
    M, old = m.M, m.M(a=1)
    assert old.a == 2
    v2 = (
        "import pydantic\n"
        "class M(pydantic.BaseModel):\n"
        "    a: int\n"
        "    b: str = 'x'\n"
        "    @pydantic.field_validator('a')\n"
        "    @classmethod\n"
        "    def check(cls, v):\n"
        "        return v * 10\n"
        "    def show(self):\n"
        "        return f'v2 {self.a}'\n"
    )
    kit.write("m", v2)
    kit.ok("m")
    new = m.M(a=1)
    assert (m.M is M, type(new) is M, new.a, new.b, old.show(), new.show()) == (
        True,
        True,
        10,
        "x",
        "v2 2",
        "v2 10",
    )
    assert set(M.model_fields) == {"a", "b"}
    assert M.model_validate({"a": 2}).a == 20


def test_reloadlab_still_clean_after_probes() -> None:
    # sanity: the engine never left a lock or a module behind for other tests
    assert reload_modules([]) == []
    assert "asyncio" in sys.modules


# ---------------------------------------------------------------- round two


def test_cached_property_changed(kit: Kit) -> None:
    # functools.cached_property: new instances compute with the new function; values cached
    # in instances from before stay (they are instance state)
    src = "import functools\nclass C:\n    @functools.cached_property\n    def p(self):\n        return {x}\n"
    kit.write("m", src.format(x=1))
    m = kit.load("m")
    cached, fresh = m.C(), m.C()
    assert cached.p == 1
    kit.write("m", src.format(x=2))
    kit.ok("m")
    assert (cached.p, fresh.p, m.C().p) == (1, 2, 2)


def test_generic_alias_of_kept_class(kit: Kit) -> None:
    # typing.Generic: a module-level alias `IntBox = Box[int]` made by the new body must
    # build instances of the live class
    src = "import typing\nT = typing.TypeVar('T')\nclass Box(typing.Generic[T]):\n    def v(self):\n        return {x}\nIntBox = Box[int]\n"
    kit.write("m", src.format(x=1))
    m = kit.load("m")
    Box, held = m.Box, m.IntBox
    kit.write("m", src.format(x=2))
    kit.ok("m")
    made = m.IntBox()
    assert (type(made) is Box, made.v(), type(held()) is Box, m.IntBox.__origin__ is Box) == (
        True,
        2,
        True,
        True,
    )


def test_method_moved_from_class_to_its_base(kit: Kit) -> None:
    # IPython deduperreload: a method moves up to the base class of the same module
    kit.write("m", "class B:\n    pass\nclass C(B):\n    def f(self):\n        return 'C1'\n")
    m = kit.load("m")
    o = m.C()
    kit.write("m", "class B:\n    def f(self):\n        return 'B2'\nclass C(B):\n    pass\n")
    kit.ok("m")
    assert (o.f(), "f" in vars(m.C), m.B().f()) == ("B2", False, "B2")


def test_typing_overload_definitions(kit: Kit) -> None:
    # typing.overload: several defs of one qualname, the last one is the implementation
    src = "import typing\n@typing.overload\ndef f(x: int) -> int: ...\n@typing.overload\ndef f(x: str) -> str: ...\ndef f(x):\n    return x * {k}\n"
    kit.write("m", src.format(k=1))
    m = kit.load("m")
    f = m.f
    kit.write("m", src.format(k=2))
    kit.ok("m")
    assert (f(2), f("a"), m.f is f) == (4, "aa", True)


def test_lru_cache_on_method(kit: Kit) -> None:
    # functools.lru_cache on a method: cache cleared, held bound method runs the new code
    src = "import functools\nclass C:\n    @functools.lru_cache(maxsize=None)\n    def sq(self, v):\n        return v * {k}\n"
    kit.write("m", src.format(k=1))
    m = kit.load("m")
    o = m.C()
    sq = o.sq
    assert sq(3) == 3
    kit.write("m", src.format(k=10))
    kit.ok("m")
    assert (sq(3), o.sq(3)) == (30, 30)


def test_exception_class_caught_by_other_module(kit: Kit) -> None:
    # an `except m.Err` elsewhere still catches what the new code raises (identity kept)
    kit.write("m", "class Err(Exception):\n    pass\ndef boom():\n    raise Err('v1')\n")
    kit.write(
        "user",
        "import __P__m as m\ndef call():\n    try:\n        m.boom()\n    except m.Err as e:\n        return str(e)\n",
    )
    kit.load("m")
    user = kit.load("user")
    Err = user.m.Err
    kit.write(
        "m",
        "class Err(Exception):\n    def __str__(self):\n        return 'custom'\ndef boom():\n    raise Err('v2')\n",
    )
    kit.ok("m")
    assert (user.call(), user.m.Err is Err) == ("custom", True)


def test_dataclass_post_init_and_field_default_changed(kit: Kit) -> None:
    # dataclasses: __post_init__ and a plain default changed; old instances keep their data
    src = "import dataclasses\n@dataclasses.dataclass\nclass D:\n    a: int = {a}\n    def __post_init__(self):\n        self.b = self.a * {k}\n"
    kit.write("m", src.format(a=1, k=1))
    m = kit.load("m")
    D, old = m.D, m.D()
    kit.write("m", src.format(a=5, k=10))
    kit.ok("m")
    new = D()
    assert (old.a, old.b, new.a, new.b, m.D is D) == (1, 1, 5, 50, True)


def test_module_partial_in_registry_dict(kit: Kit) -> None:
    # module-level containers holding partials and functions refer to the live functions
    kit.write(
        "m",
        "import functools\ndef f(a, b):\n    return a + b\nROUTES = {'x': functools.partial(f, 1), 'y': f}\n",
    )
    m = kit.load("m")
    f = m.f
    kit.write(
        "m",
        "import functools\ndef f(a, b):\n    return a - b\nROUTES = {'x': functools.partial(f, 1), 'y': f}\n",
    )
    kit.ok("m")
    assert (m.ROUTES["x"].func is f, m.ROUTES["y"] is f, m.ROUTES["x"](5)) == (True, True, -4)


def test_class_with_init_subclass_kwargs(kit: Kit) -> None:
    # __init_subclass__ keyword arguments change: the kept subclass gets the new attributes
    src = "class Base:\n    def __init_subclass__(cls, tag='', **kw):\n        super().__init_subclass__(**kw)\n        cls.tag = tag\nclass A(Base, tag={t!r}):\n    pass\n"
    kit.write("m", src.format(t="one"))
    m = kit.load("m")
    A = m.A
    kit.write("m", src.format(t="two"))
    kit.ok("m")
    assert (A.tag, m.A is A) == ("two", True)


def test_type_checking_else_branch_is_bound(kit: Kit) -> None:
    # `if TYPE_CHECKING: ... else: X = ...`: the else branch runs at run time
    kit.write("m", "X = 1\nY = 1\n")
    m = kit.load("m")
    kit.write("m", "import typing\nif typing.TYPE_CHECKING:\n    X = 0\nelse:\n    Y = 2\n")
    kit.ok("m")
    assert (hasattr(m, "X"), m.Y) == (False, 2)


def test_object_holding_the_function_like_click_command(kit: Kit) -> None:
    # jurigged (patches code wherever it is held) / click, celery, typer: a decorator that
    # returns an object keeping the function as an attribute; the object held from before
    # must run the new code
    kit.write(
        "cli",
        "class Command:\n    def __init__(self, fn):\n        self.callback = fn\n    def __call__(self):\n        return self.callback()\n",
    )
    src = "from __P__cli import Command\n@Command\ndef hello():\n    return {x}\n"
    kit.write("m", src.format(x=1))
    kit.load("cli")
    m = kit.load("m")
    held = m.hello
    kit.write("m", src.format(x=2))
    kit.ok("m")
    assert (held(), m.hello(), m.hello.callback is held.callback) == (2, 2, True)


def test_dunder_new_and_class_getitem_changed(kit: Kit) -> None:
    # implicit staticmethod (__new__) and classmethod (__class_getitem__) members
    src = "class C:\n    def __new__(cls, *a):\n        o = super().__new__(cls)\n        o.tag = {x}\n        return o\n    def __class_getitem__(cls, item):\n        return (cls.__name__, item, {x})\n"
    kit.write("m", src.format(x=1))
    m = kit.load("m")
    C = m.C
    kit.write("m", src.format(x=2))
    kit.ok("m")
    assert (C().tag, C[int], m.C is C) == (2, ("C", int, 2), True)


def test_module_level_instance_attribute_functions_are_live(kit: Kit) -> None:
    # a router object made by the new body holds the functions its decorator saw: they are
    # the live functions (like a fresh import, `app.routes['/'] is m.index`)
    kit.write(
        "web",
        "class App:\n    def __init__(self):\n        self.routes = {}\n    def route(self, path):\n        def deco(fn):\n            self.routes[path] = fn\n            return fn\n        return deco\n",
    )
    src = "from __P__web import App\napp = App()\n@app.route('/')\ndef index():\n    return {x}\n"
    kit.write("m", src.format(x=1))
    kit.load("web")
    m = kit.load("m")
    index = m.index
    kit.write("m", src.format(x=2))
    kit.ok("m")
    assert (m.app.routes["/"](), m.app.routes["/"] is index, index is m.index) == (2, True, True)


def test_enum_members_as_keys_and_in_sets_and_tuples(kit: Kit) -> None:
    # fresh import: `PRICES[Color.RED]` works with the live member; members in sets and
    # tuples made by the new body are the live members
    src = "import enum\nclass Color(enum.Enum):\n    RED = 1\n    GREEN = 2\nPRICES = {{Color.RED: {x}}}\nWARM = {{Color.RED}}\nORDER = (Color.GREEN, Color.RED)\nNESTED = {{'order': (Color.RED,)}}\n"
    kit.write("m", src.format(x=1))
    m = kit.load("m")
    red = m.Color.RED
    kit.write("m", src.format(x=2))
    kit.ok("m")
    assert m.Color.RED is red
    assert (m.PRICES[red], red in m.WARM, m.ORDER[1] is red, m.NESTED["order"][0] is red) == (
        2,
        True,
        True,
        True,
    )


def test_exception_tuple_catches_live_class(kit: Kit) -> None:
    # `except ERRORS:` with a module-level tuple of the module's own exception classes
    src = "class Err(Exception):\n    pass\nERRORS = (Err, KeyError)\ndef boom():\n    raise Err({x!r})\ndef safe():\n    try:\n        boom()\n    except ERRORS as e:\n        return str(e)\n"
    kit.write("m", src.format(x="v1"))
    m = kit.load("m")
    Err = m.Err
    kit.write("m", src.format(x="v2"))
    kit.ok("m")
    assert (m.safe(), m.ERRORS[0] is Err) == ("v2", True)


def test_pydantic_nested_models_keep_classes(kit: Kit) -> None:
    # pydantic v2: a model field typed with another model of the module validates into the
    # live class after the reload
    pytest.importorskip("pydantic")
    src = "import typing\nimport pydantic\nclass A(pydantic.BaseModel):\n    x: int\n    def tag(self):\n        return {t!r}\nclass B(pydantic.BaseModel):\n    a: A\n    many: list[A] = []\n    maybe: typing.Optional[A] = None\n    either: A | None = None\n"
    kit.write("m", src.format(t="one"))
    m = kit.load("m")
    A, B = m.A, m.B
    kit.write("m", src.format(t="two"))
    kit.ok("m")
    b = m.B(a={"x": 1}, many=[{"x": 2}], maybe={"x": 3}, either={"x": 4})
    assert (m.A is A, m.B is B, type(b.a) is A, b.a.tag()) == (True, True, True, "two")
    assert [type(v) is A for v in (b.many[0], b.maybe, b.either)] == [True, True, True]


def test_class_level_tuples_and_sets_name_live_objects(kit: Kit) -> None:
    # class attributes holding the module's classes in tuples/sets (`retry_on = (Err,)`)
    src = "class Err(Exception):\n    pass\nclass Job:\n    retry_on = (Err, KeyError)\n    kinds = {{Err}}\n    def run(self):\n        try:\n            raise Err({x})\n        except self.retry_on:\n            return 'retried'\n"
    kit.write("m", src.format(x=1))
    m = kit.load("m")
    Err, o = m.Err, m.Job()
    kit.write("m", src.format(x=2))
    kit.ok("m")
    assert (o.run(), m.Job.retry_on[0] is Err, Err in m.Job.kinds) == ("retried", True, True)


def test_dataclass_default_is_live_enum_member(kit: Kit) -> None:
    # dataclass field default naming an enum member of the same module
    src = "import dataclasses, enum\nclass Color(enum.Enum):\n    RED = 1\n@dataclasses.dataclass\nclass D:\n    color: Color = Color.RED\n    n: int = {n}\n"
    kit.write("m", src.format(n=1))
    m = kit.load("m")
    red = m.Color.RED
    kit.write("m", src.format(n=2))
    kit.ok("m")
    d = m.D()
    assert (d.color is red, d.n, m.D.color is red) == (True, 2, True)


def test_singledispatchmethod_in_class(kit: Kit) -> None:
    # functools.singledispatchmethod: registrations follow the new class body
    src = "import functools\nclass C:\n    @functools.singledispatchmethod\n    def f(self, x):\n        return 'obj'\n    @f.register\n    def _(self, x: int):\n        return {r!r}\n"
    kit.write("m", src.format(r="int1"))
    m = kit.load("m")
    o = m.C()
    kit.write("m", src.format(r="int2"))
    kit.ok("m")
    assert (o.f(1), o.f("s")) == ("int2", "obj")


def test_compile_warnings_are_reported_not_printed(
    kit: Kit, capfd: pytest.CaptureFixture[str]
) -> None:
    # the agent never writes on the host's stderr: a SyntaxWarning/DeprecationWarning of
    # compiling the new source (invalid escape) goes into the result's warnings
    kit.write("m", "X = 1\n")
    m = kit.load("m")
    kit.write("m", "X = 2\nBAD = '\\d'\n")  # the file says '\d': an invalid escape
    r = kit.ok("m")
    assert m.X == 2
    assert any("escape" in w for w in r.warnings), r.warnings
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_failed_reload_undoes_abc_registrations_and_abstract_updates(kit: Kit) -> None:
    # all or nothing: a failing __reload__ takes back the ABC registry merge and the
    # abstract-method recomputation of subclasses in other modules
    kit.write(
        "base",
        "import abc\nclass A(abc.ABC):\n    @abc.abstractmethod\n    def f(self): ...\nclass X:\n    pass\n",
    )
    kit.write(
        "impl", "from __P__base import A\nclass Impl(A):\n    def f(self):\n        return 1\n"
    )
    base = kit.load("base")
    impl = kit.load("impl")
    x = base.X()
    kit.write(
        "base",
        "import abc\nclass A(abc.ABC):\n    @abc.abstractmethod\n    def f(self): ...\n    @abc.abstractmethod\n    def g(self): ...\nclass X:\n    pass\nA.register(X)\ndef __reload__(old):\n    raise RuntimeError('no')\n",
    )
    r = kit.reload_one("base")
    assert r.status == "failed"
    assert (isinstance(x, base.A), impl.Impl().f(), base.A.__abstractmethods__) == (
        False,
        1,
        frozenset({"f"}),
    )


def test_failed_reload_undoes_registry_alias_sync(kit: Kit) -> None:
    # all or nothing: entries registered by an earlier reload go back with the kept function
    kit.write("reg", "HANDLERS = []\ndef register(fn):\n    HANDLERS.append(fn)\n    return fn\n")
    src = "from __P__reg import register\n@register\ndef h():\n    return {x}\n"
    kit.write("m", src.format(x=1))
    reg = kit.load("reg")
    kit.load("m")
    kit.write("m", src.format(x=2))
    kit.ok("m")
    kit.write("m", src.format(x=3) + "def __reload__(old):\n    raise RuntimeError('no')\n")
    assert kit.reload_one("m").status == "failed"
    assert [h() for h in reg.HANDLERS[:2]] == [2, 2]


def test_batch_failure_undoes_translated_containers_and_partials(kit: Kit) -> None:
    # a batch where the second module fails: the first is exactly as before
    kit.write(
        "a",
        "import functools, enum\nclass Color(enum.Enum):\n    RED = 1\ndef f():\n    return 1\nP = functools.partial(f)\nPRICES = {Color.RED: 1}\n",
    )
    kit.write("b", "Y = 1\n")
    a = kit.load("a")
    b = kit.load("b")
    p, prices, red = a.P, a.PRICES, a.Color.RED
    kit.write(
        "a",
        "import functools, enum\nclass Color(enum.Enum):\n    RED = 1\ndef f():\n    return 2\nP = functools.partial(f)\nPRICES = {Color.RED: 2}\n",
    )
    kit.write("b", "Y = 2\n1/0\n")
    rs = kit.reload("a", "b")
    assert [r.status for r in rs] == ["failed", "failed"]
    assert (a.P is p, a.PRICES is prices, a.PRICES[red], a.f(), p(), b.Y) == (
        True,
        True,
        1,
        1,
        1,
        1,
    )


def test_body_replacing_itself_in_sys_modules_then_failing(kit: Kit) -> None:
    # CPython test_module_replaced: a body may put another object in sys.modules; when the
    # body then fails, the process is as it was (the module back in sys.modules)
    kit.write("m", "X = 1\n")
    m = kit.load("m")
    kit.write(
        "m", "import sys, types\nsys.modules[__name__] = types.ModuleType(__name__)\nX = 2\n1/0\n"
    )
    r = kit.reload_one("m")
    assert r.status == "failed"
    assert (sys.modules[m.__name__] is m, m.X) == (True, 1)


def test_body_replacing_itself_in_sys_modules(kit: Kit) -> None:
    # CPython test_module_replaced: like a fresh import, the replacement is what sys.modules
    # holds afterwards; the reload reports it
    kit.write("m", "X = 1\n")
    m = kit.load("m")
    kit.write(
        "m",
        "import sys, types\n_new = types.ModuleType(__name__)\n_new.spam = 3\nsys.modules[__name__] = _new\n",
    )
    r = kit.ok("m")
    assert sys.modules[m.__name__].spam == 3
    assert any("sys.modules" in w for w in r.warnings), r.warnings


def test_super_in_classmethod_of_subclass(kit: Kit) -> None:
    # zero-argument super() inside a classmethod of a kept subclass
    src = "class A:\n    @classmethod\n    def make(cls):\n        return ['A']\nclass B(A):\n    @classmethod\n    def make(cls):\n        return super().make() + [{x!r}]\n"
    kit.write("m", src.format(x="B1"))
    m = kit.load("m")
    B = m.B
    kit.write("m", src.format(x="B2"))
    kit.ok("m")
    assert (B.make(), m.B is B) == (["A", "B2"], True)


def test_namedtuple_default_changed_keeps_class(kit: Kit) -> None:
    # typing.NamedTuple: a changed default is not a layout change; the generated __new__
    # follows the new default
    src = "import typing\nclass P(typing.NamedTuple):\n    x: int\n    y: int = {d}\n"
    kit.write("m", src.format(d=0))
    m = kit.load("m")
    P = m.P
    kit.write("m", src.format(d=7))
    kit.ok("m")
    assert (m.P is P, P(1).y, P._field_defaults) == (True, 7, {"y": 7})


def test_pydantic_config_and_model_validator_changed(kit: Kit) -> None:
    # pydantic v2: model_config (extra='forbid') and a model_validator changed
    pytest.importorskip("pydantic")
    src = "import pydantic\nclass M(pydantic.BaseModel):\n    model_config = pydantic.ConfigDict(extra={extra!r})\n    a: int = 0\n    @pydantic.model_validator(mode='after')\n    def check(self):\n        self.a = self.a + {k}\n        return self\n"
    kit.write("m", src.format(extra="ignore", k=1))
    m = kit.load("m")
    M = m.M
    assert M(a=1, zz=2).a == 2
    kit.write("m", src.format(extra="forbid", k=100))
    kit.ok("m")
    assert M(a=1).a == 101
    with pytest.raises(Exception, match="zz"):
        M(a=1, zz=2)


def test_dry_run_plans_star_import_pruning(kit: Kit) -> None:
    # the dry run tells what `from .s import *` will no longer bind (s as loaded now)
    kit.write("pkg", "", package=True)
    kit.write("pkg.s", "A = 1\nB = 2\n")
    kit.write("pkg.a", "from .s import *\n")
    a = kit.load("pkg.a")
    kit.write("pkg.s", "A = 10\n")
    kit.ok("pkg.s")
    kit.write("pkg.a", "from .s import *\nZ = 1\n")
    (r,) = kit.reload("pkg.a", dry_run=True)
    assert r.status == "reloaded"
    assert f"{a.__name__}.B" in actions(r, "removed")
    assert f"{a.__name__}.A" not in actions(r, "removed")
    kit.ok("pkg.a")
    assert (a.A, hasattr(a, "B"), a.Z) == (10, False, 1)


def test_rollback_after_a_failed_reload_restores_the_last_success(kit: Kit) -> None:
    # a failed reload leaves no history: rollback undoes the last successful one
    src = "class Err(Exception):\n    pass\nERRORS = (Err,)\ndef f():\n    return {x}\n"
    kit.write("m", src.format(x=1))
    m = kit.load("m")
    f, Err, errors = m.f, m.Err, m.ERRORS
    kit.write("m", src.format(x=2))
    kit.ok("m")
    kit.write("m", src.format(x=3) + "1/0\n")
    assert kit.reload_one("m").status == "failed"
    assert f() == 2
    (r,) = rollback_modules([m.__name__])
    assert r.status == "reloaded"
    assert (f(), m.ERRORS is errors, m.Err is Err) == (1, True, True)


def test_singledispatch_on_a_class_of_the_same_module(kit: Kit) -> None:
    # functools.singledispatch registry keyed by a class of the module: dispatch on
    # instances of the live class uses the new implementation
    src = "import functools\nclass P:\n    pass\n@functools.singledispatch\ndef show(x):\n    return 'obj'\n@show.register\ndef _(x: P):\n    return {r!r}\n"
    kit.write("m", src.format(r="P1"))
    m = kit.load("m")
    show, o = m.show, m.P()
    kit.write("m", src.format(r="P2"))
    kit.ok("m")
    assert (show(o), show(m.P()), show(1)) == ("P2", "P2", "obj")
    assert m.P in show.registry


def test_instances_inside_new_containers_get_the_kept_class(kit: Kit) -> None:
    # `DEFAULTS = [P(1)]`, `BY_NAME = {'a': P(2)}`: like a fresh import, they are instances
    # of the live class
    src = "class P:\n    def __init__(self, v):\n        self.v = v\n    def get(self):\n        return self.v * {k}\nDEFAULTS = [P(1)]\nBY_NAME = {{'a': P(2)}}\nPAIR = (P(3),)\n"
    kit.write("m", src.format(k=1))
    m = kit.load("m")
    P = m.P
    kit.write("m", src.format(k=10))
    kit.ok("m")
    items = [m.DEFAULTS[0], m.BY_NAME["a"], m.PAIR[0]]
    assert [isinstance(i, P) for i in items] == [True, True, True]
    assert [i.get() for i in items] == [10, 20, 30]


def test_sentinel_default_is_an_instance_of_the_live_class(kit: Kit) -> None:
    # unittest.mock-style sentinels: `MISSING = _Sentinel()` used as a default argument
    src = "class _Sentinel:\n    pass\nMISSING = _Sentinel()\ndef f(x=MISSING, *, y=MISSING):\n    return (isinstance(x, _Sentinel), x is MISSING, y is MISSING, {k})\n"
    kit.write("m", src.format(k=1))
    m = kit.load("m")
    f = m.f
    kit.write("m", src.format(k=2))
    kit.ok("m")
    assert f() == (True, True, True, 2)


def test_make_dataclass_and_functional_namedtuple(kit: Kit) -> None:
    # classes made by functions at top level (dataclasses.make_dataclass, namedtuple)
    src = "import collections, dataclasses\nD = dataclasses.make_dataclass('D', [('a', int, {a})])\nP = collections.namedtuple('P', 'x y', defaults=({a},))\n"
    kit.write("m", src.format(a=1))
    m = kit.load("m")
    D, P = m.D, m.P
    kit.write("m", src.format(a=2))
    r = kit.ok("m")
    assert (m.D is D, D().a, m.P is P, P(0).y, r.warnings) == (True, 2, True, 2, ())


def test_held_property_object_and_setter(kit: Kit) -> None:
    # a property object held from the class, and a setter added by the new version
    src = "class C:\n    def __init__(self):\n        self._v = 1\n    @property\n    def v(self):\n        return self._v * {k}\n"
    kit.write("m", src.format(k=1))
    m = kit.load("m")
    o, prop = m.C(), m.C.v
    kit.write(
        "m", src.format(k=10) + "    @v.setter\n    def v(self, value):\n        self._v = value\n"
    )
    kit.ok("m")
    o.v = 3
    assert (o.v, prop.fget(o)) == (30, 30)


def test_decorator_added_then_removed(kit: Kit) -> None:
    # jurigged / IPython: a function gains a decorator, then loses it; references held from
    # before run the newest body (the kind change is reported)
    kit.write("m", "def f(x):\n    return x + 1\n")
    m = kit.load("m")
    f1 = m.f
    kit.write("m", "import functools\n@functools.lru_cache\ndef f(x):\n    return x + 2\n")
    kit.ok("m")
    assert (m.f(1), f1(1), m.f.cache_info().currsize) == (3, 3, 1)
    f2 = m.f
    kit.write("m", "def f(x):\n    return x + 3\n")
    kit.ok("m")
    assert (m.f(1), f1(1), f2(1)) == (4, 4, 4)


def test_wraps_decorator_added_to_a_held_function(kit: Kit) -> None:
    # a functools.wraps decorator added between versions: the new wrapper is the module's
    # function; the plain function held from before runs the new body (undecorated)
    kit.write(
        "deco",
        "import functools\nCALLS = []\ndef log(fn):\n    @functools.wraps(fn)\n    def wrapper(*a):\n        CALLS.append(fn.__name__)\n        return fn(*a)\n    return wrapper\n",
    )
    kit.write("m", "def f(x):\n    return x + 1\n")
    deco = kit.load("deco")
    m = kit.load("m")
    f1 = m.f
    kit.write("m", "from __P__deco import log\n@log\ndef f(x):\n    return x + 2\n")
    kit.ok("m")
    assert (m.f(1), deco.CALLS, f1(1)) == (3, ["f"], 3)
