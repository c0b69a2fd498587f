"""Classes: identity, members, inheritance, super(), dataclasses, enums, layouts (C)."""

# ruff: noqa: E501 - module sources written inline read best on one line

from __future__ import annotations

import dataclasses
import pickle
import sys
import textwrap

import pytest
from conftest import Kit, actions


def test_method_change_reaches_instances_and_identity_kept(kit: Kit) -> None:
    kit.write("m", "class C:\n    def meth(self):\n        return 1\n")
    m = kit.load("m")
    C, o = m.C, m.C()
    kit.write("m", "class C:\n    def meth(self):\n        return 2\n")
    r = kit.ok("m")
    assert (o.meth(), C().meth(), C is m.C, type(o) is m.C) == (2, 2, True, True)
    assert type(pickle.loads(pickle.dumps(C()))) is m.C
    assert f"{kit.name('m')}.C.meth" in actions(r, "patched")


def test_members_added_removed_aliases_and_instance_state(kit: Kit) -> None:
    kit.write(
        "m",
        """
        class C:
            def __init__(self, a=10):
                self.a = a
                self.b = 22
            def square(self):
                return self.a * self.a
            def zzz(self):
                return 99
        """,
    )
    m = kit.load("m")
    o = m.C(5)
    kit.write(
        "m",
        """
        def outer(self):
            return 'hello'
        class C:
            def __init__(self, a=10):
                self.a = a
                self.b = 11
            def power(self, p):
                return self.a ** p
            also_power = power
            hello = outer
        """,
    )
    r = kit.ok("m")
    assert (o.power(2), o.also_power(3), o.hello(), o.b, m.C(5).b) == (25, 125, "hello", 22, 11)
    assert not hasattr(o, "square") and not hasattr(o, "zzz")
    assert f"{kit.name('m')}.C.zzz" in actions(r, "removed")
    assert f"{kit.name('m')}.C.power" in actions(r, "added")


def test_properties_classmethods_staticmethods_attributes(kit: Kit) -> None:
    src = """
        class C:
            X = {x}
            @property
            def p(self):
                return getattr(self, '_v', {x})
            @classmethod
            def make(cls):
                return (cls.__name__, {x})
            @staticmethod
            def s():
                return {x}
        """
    kit.write("m", src.format(x=1))
    m = kit.load("m")
    o, make, s = m.C(), m.C.make, m.C.__dict__["s"]
    setter = "    @p.setter\n    def p(self, v):\n        self._v = v\n"
    kit.write("m", textwrap.dedent(src.format(x=2)) + setter)
    kit.ok("m")
    assert (o.p, m.C.X, o.X, make(), s.__func__()) == (2, 2, 2, ("C", 2), 2)
    o.p = 7
    assert o.p == 7


def test_inheritance_override_removed(kit: Kit) -> None:
    kit.write(
        "m",
        "class A:\n    def base(self):\n        return 1\n    def foo(self):\n        return 1\n"
        "class B(A):\n    def foo(self):\n        return 42\n",
    )
    m = kit.load("m")
    b = m.B()
    kit.write(
        "m",
        "class A:\n    def base(self):\n        return 2\n    def foo(self):\n        return 1\n"
        "class B(A):\n    pass\n",
    )
    kit.ok("m")
    assert (b.base(), b.foo(), isinstance(b, m.A), isinstance(b, m.B)) == (2, 1, True, True)


def test_subclass_in_other_module_sees_new_methods(kit: Kit) -> None:
    kit.write("base", "class A:\n    def who(self):\n        return 'a1'\n")
    kit.write("sub", "from __P__base import A\nclass B(A):\n    pass\n")
    base, sub = kit.load("base"), kit.load("sub")
    b = sub.B()
    kit.write("base", "class A:\n    def who(self):\n        return 'a2'\n")
    kit.ok("base")
    assert (b.who(), issubclass(sub.B, base.A), sub.A is base.A) == ("a2", True, True)


def test_zero_arg_super_and_method_that_stops_using_it(kit: Kit) -> None:
    kit.write(
        "m",
        """
        class A:
            def f(self):
                return 1
        class B(A):
            def f(self):
                return super().f() + 10
            def g(self):
                return super(B, self).f() + 10
            def h(self):
                return super().f() * 2
            def k(self):
                return 5
        """,
    )
    m = kit.load("m")
    b = m.B()
    kit.write(
        "m",
        """
        class A:
            def f(self):
                return 1
        class B(A):
            def f(self):
                return super().f() + 20
            def g(self):
                return super(B, self).f() + 20
            def h(self):
                return 1234
            def k(self):
                return super().f() + 100
        """,
    )
    kit.ok("m")
    assert (b.f(), b.g(), m.B().f(), b.h(), b.k()) == (21, 21, 21, 1234, 101)


def test_new_subclass_of_kept_class_and_module_level_instances(kit: Kit) -> None:
    kit.write("m", "class A:\n    def v(self):\n        return 1\nDEFAULT = A()\n")
    m = kit.load("m")
    A = m.A
    kit.write(
        "m",
        "class A:\n    def v(self):\n        return 2\n"
        "class D(A):\n    pass\nDEFAULT = A()\nREGISTRY = {'a': A, 'd': D}\n",
    )
    kit.ok("m")
    assert m.A is A
    assert issubclass(m.D, A) and isinstance(m.D(), A)
    assert type(m.DEFAULT) is A and m.DEFAULT.v() == 2
    assert m.REGISTRY["a"] is A


def test_init_changed_old_instances_not_reinitialised(kit: Kit) -> None:
    kit.write("m", "class C:\n    def __init__(self):\n        self.x = 1\n")
    m = kit.load("m")
    o = m.C()
    o.x = 5
    kit.write("m", "class C:\n    def __init__(self):\n        self.x = 1\n        self.y = 7\n")
    kit.ok("m")
    assert (o.x, hasattr(o, "y"), m.C().y) == (5, False, 7)


def test_dataclass_gains_field_and_frozen_dataclass(kit: Kit) -> None:
    kit.write(
        "m",
        """
        from dataclasses import dataclass
        @dataclass
        class P:
            x: int
            def norm(self):
                return self.x
        @dataclass(frozen=True)
        class F:
            x: int
            def norm(self):
                return self.x
        """,
    )
    m = kit.load("m")
    p, fz = m.P(3), m.F(3)
    kit.write(
        "m",
        """
        from dataclasses import dataclass
        @dataclass
        class P:
            x: int
            y: int = 0
            def norm(self):
                return self.x * 2
        @dataclass(frozen=True)
        class F:
            x: int
            def norm(self):
                return self.x * 2
        """,
    )
    kit.ok("m")
    assert (p.norm(), fz.norm(), fz == m.F(3), m.P(1).y, p.y, repr(p)) == (
        6,
        6,
        True,
        0,
        0,
        "P(x=3, y=0)",
    )
    assert len(dataclasses.fields(m.P)) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        fz.x = 4  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.F(1).x = 2  # type: ignore[misc]
    assert hash(m.F(3)) == hash(fz)


def test_enum_member_added_keeps_identity(kit: Kit) -> None:
    kit.write(
        "m",
        "from enum import Enum\nclass Color(Enum):\n    RED = 1\n    GREEN = 2\n"
        "    def up(self):\n        return self.name.lower()\n",
    )
    m = kit.load("m")
    c = m.Color.RED
    kit.write(
        "m",
        "from enum import Enum\nclass Color(Enum):\n    RED = 1\n    GREEN = 2\n"
        "    BLUE = 3\n    CRIMSON = 1\n    def up(self):\n        return self.name.upper()\n",
    )
    r = kit.ok("m")
    Color = m.Color
    assert c is Color.RED and Color(1) is c and Color["RED"] is c
    assert Color.BLUE.value == 3 and isinstance(Color.BLUE, Color) and Color(3) is Color.BLUE
    assert Color.CRIMSON is c  # a new alias of an existing member
    assert [x.name for x in Color] == ["RED", "GREEN", "BLUE"]
    assert c.up() == "RED"
    assert not r.warnings


def test_enum_member_value_changed_replaces_with_warning(kit: Kit) -> None:
    kit.write("m", "from enum import IntEnum\nclass Level(IntEnum):\n    LOW = 1\n    HIGH = 2\n")
    m = kit.load("m")
    old = m.Level
    kit.write("m", "from enum import IntEnum\nclass Level(IntEnum):\n    LOW = 1\n    HIGH = 3\n")
    r = kit.ok("m")
    assert m.Level is not old and m.Level.HIGH == 3
    assert any(
        "instances created before reload keep the old class" in w and "HIGH" in w
        for w in r.warnings
    ), r.warnings
    assert f"{kit.name('m')}.Level" in actions(r, "replaced")


def test_slots_change_replaces_class_with_warning(kit: Kit) -> None:
    kit.write("m", "class C:\n    __slots__ = ('a',)\n    def v(self):\n        return 1\n")
    m = kit.load("m")
    old_cls, o = m.C, m.C()
    kit.write("m", "class C:\n    __slots__ = ('a', 'b')\n    def v(self):\n        return 2\n")
    r = kit.ok("m")
    assert m.C is not old_cls and type(o) is old_cls
    assert m.C().v() == 2
    assert (
        f"instances created before reload keep the old class {kit.name('m')}.C: __slots__ changed"
        in r.warnings
    )


def test_same_slots_keeps_class(kit: Kit) -> None:
    kit.write("m", "class C:\n    __slots__ = ('a',)\n    def v(self):\n        return 1\n")
    m = kit.load("m")
    o = m.C()
    o.a = 5
    kit.write(
        "m", "class C:\n    __slots__ = ('a',)\n    def v(self):\n        return self.a * 2\n"
    )
    r = kit.ok("m")
    assert type(o) is m.C and o.v() == 10 and not r.warnings
    o2 = m.C()
    o2.a = 1
    assert o2.v() == 2


def test_bases_change_replaces_class(kit: Kit) -> None:
    kit.write("m", "class A:\n    pass\nclass B:\n    pass\nclass C(A):\n    pass\n")
    m = kit.load("m")
    old = m.C
    kit.write("m", "class A:\n    pass\nclass B:\n    pass\nclass C(B):\n    pass\n")
    r = kit.ok("m")
    assert m.C is not old and issubclass(m.C, m.B)
    assert any("bases changed" in w for w in r.warnings)


def test_metaclass_and_abc(kit: Kit) -> None:
    kit.write(
        "m",
        """
        import abc
        class Meta(type):
            def tag(cls):
                return 'meta1'
        class Base(abc.ABC):
            @abc.abstractmethod
            def run(self): ...
        class Impl(Base, metaclass=type(Base)):
            def run(self):
                return 1
        class WithMeta(metaclass=Meta):
            pass
        """,
    )
    m = kit.load("m")
    impl = m.Impl()
    kit.write(
        "m",
        """
        import abc
        class Meta(type):
            def tag(cls):
                return 'meta2'
        class Base(abc.ABC):
            @abc.abstractmethod
            def run(self): ...
            @abc.abstractmethod
            def stop(self): ...
        class Impl(Base, metaclass=type(Base)):
            def run(self):
                return 2
            def stop(self):
                return 0
        class WithMeta(metaclass=Meta):
            pass
        """,
    )
    kit.ok("m")
    assert impl.run() == 2 and isinstance(impl, m.Base)
    assert m.WithMeta.tag() == "meta2"
    assert m.Base.__abstractmethods__ == frozenset({"run", "stop"})
    with pytest.raises(TypeError):
        m.Base()
    m.Impl()


def test_nested_class_patched_recursively(kit: Kit) -> None:
    src = "class Outer:\n    class Inner:\n        def v(self):\n            return {n}\n"
    kit.write("m", src.format(n=1))
    m = kit.load("m")
    Inner = m.Outer.Inner
    i = Inner()
    kit.write("m", src.format(n=2))
    r = kit.ok("m")
    assert m.Outer.Inner is Inner and i.v() == 2
    assert f"{kit.name('m')}.Outer.Inner.v" in actions(r, "patched")


def test_class_scope_name_as_default(kit: Kit) -> None:
    kit.write("m", "class A:\n    CONST = 12\n    def m(self, val=CONST):\n        return val\n")
    m = kit.load("m")
    a = m.A()
    kit.write(
        "m", "class A:\n    CONST = 12\n    def m(self, val=CONST):\n        return val + 1\n"
    )
    kit.ok("m")
    assert a.m() == 13


def test_pydantic_model(kit: Kit) -> None:
    pytest.importorskip("pydantic")
    src = (
        "from pydantic import BaseModel\nclass M(BaseModel):\n    x: int\n"
        "    def dbl(self):\n        return self.x * {k}\n"
    )
    kit.write("m", src.format(k=2))
    m = kit.load("m")
    M, mi = m.M, m.M(x=3)
    kit.write("m", src.format(k=3))
    kit.ok("m")
    assert (mi.dbl(), m.M(x=1).dbl()) == (9, 3)
    assert m.M is M
    assert type(M.model_validate({"x": 2})) is M


def test_named_tuple_fields_change_replaces(kit: Kit) -> None:
    kit.write("m", "from typing import NamedTuple\nclass P(NamedTuple):\n    x: int\n")
    m = kit.load("m")
    old = m.P
    kit.write(
        "m", "from typing import NamedTuple\nclass P(NamedTuple):\n    x: int\n    y: int = 0\n"
    )
    r = kit.ok("m")
    assert m.P is not old and m.P(1).y == 0
    assert any("named tuple fields changed" in w for w in r.warnings)


def test_class_registry_via_init_subclass(kit: Kit) -> None:
    src = """
        class Plugin:
            registry = {{}}
            def __init_subclass__(cls, **kw):
                super().__init_subclass__(**kw)
                Plugin.registry[cls.__name__] = cls
        class A(Plugin):
            def run(self):
                return {n}
        """
    kit.write("m", src.format(n=1))
    m = kit.load("m")
    A = m.A
    kit.write("m", src.format(n=2))
    kit.ok("m")
    assert m.A is A and m.Plugin.registry["A"] is A and A().run() == 2


@pytest.mark.skipif(sys.version_info < (3, 12), reason="PEP 695 syntax")
def test_generic_class_syntax(kit: Kit) -> None:
    src = "class Box[T]:\n    def __init__(self, v: T):\n        self.v = v\n    def get(self) -> T:\n        return self.v{suffix}\n"
    kit.write("m", src.format(suffix=""))
    m = kit.load("m")
    b = m.Box(2)
    kit.write("m", src.format(suffix=" * 10"))
    kit.ok("m")
    assert b.get() == 20


def test_class_attribute_instances_of_kept_classes(kit: Kit) -> None:
    src = (
        "class Config:\n    def v(self):\n        return {n}\n"
        "class Service:\n    default = Config()\n    @staticmethod\n    def make():\n        return Config()\n"
    )
    kit.write("m", src.format(n=1))
    m = kit.load("m")
    Config = m.Config
    kit.write("m", src.format(n=2))
    kit.ok("m")
    assert type(m.Service.default) is Config and m.Service.default.v() == 2
    assert type(m.Service.make()) is Config


def test_dataclass_with_slots_keeps_class(kit: Kit) -> None:
    src = "from dataclasses import dataclass\n@dataclass(slots=True)\nclass P:\n    x: int\n    def f(self):\n        return self.x * {k}\n"
    kit.write("m", src.format(k=1))
    m = kit.load("m")
    P, p = m.P, m.P(3)
    kit.write("m", src.format(k=2))
    r = kit.ok("m")
    assert (m.P is P, p.f(), m.P(2).f(), repr(p)) == (True, 6, 4, "P(x=3)")
    assert not r.warnings


def test_class_attributes_set_at_run_time_survive_once_old_code_is_known(kit: Kit) -> None:
    src = "class C:\n    LIMIT = {n}\n    def meth(self):\n        return {n}\n{extra}"
    kit.write("m", src.format(n=1, extra="    def gone(self):\n        return 0\n"))
    m = kit.load("m")
    kit.write("m", src.format(n=2, extra="    OLD = 1\n"))
    kit.ok("m")
    assert not hasattr(m.C, "gone")
    m.C.counter = 7  # run-time state, set by someone else
    kit.write("m", src.format(n=3, extra=""))
    r = kit.ok("m")
    assert m.C.counter == 7
    assert not hasattr(m.C, "OLD")  # bound by the previous body: pruned
    assert m.C().meth() == 3 and m.C.LIMIT == 3
    assert f"{kit.name('m')}.C.OLD" in actions(r, "removed")


def test_descriptors_copied_onto_the_old_class_learn_their_owner(kit: Kit) -> None:
    src = """
        class Field:
            def __set_name__(self, owner, name):
                self.owner, self.name = owner, name
            def __get__(self, obj, objtype=None):
                return (self.owner.__name__, self.name, {n})
        class C:
            f = Field()
        """
    kit.write("m", src.format(n=1))
    m = kit.load("m")
    C, o = m.C, m.C()
    kit.write("m", src.format(n=2))
    kit.ok("m")
    assert o.f == ("C", "f", 2)
    assert C.__dict__["f"].owner is C


def test_enum_members_bound_elsewhere_in_the_module_are_the_live_members(kit: Kit) -> None:
    src = (
        "from enum import Enum\nclass Color(Enum):\n    RED = 1\n{extra}"
        "DEFAULT = Color.RED\nTABLE = {{'r': Color.RED}}\n"
        "def pick(c=Color.RED):\n    return c\nclass Car:\n    color = Color.RED\n"
    )
    kit.write("m", src.format(extra=""))
    m = kit.load("m")
    red = m.Color.RED
    kit.write("m", src.format(extra="    BLUE = 2\n"))
    kit.ok("m")
    assert m.DEFAULT is red and m.TABLE["r"] is red and m.pick() is red and m.Car.color is red


def test_class_defining_its_own_dunder_class_property(kit: Kit) -> None:
    src = "class Proxy:\n    @property\n    def __class__(self):\n        return {cls}\n    def v(self):\n        return {n}\n"
    kit.write("m", src.format(cls="int", n=1))
    m = kit.load("m")
    p = m.Proxy()
    kit.write("m", src.format(cls="str", n=2))
    r = kit.ok("m")
    assert (p.__class__, p.v(), type(p) is m.Proxy) == (str, 2, True)
    assert not r.warnings


def test_super_inside_method_wrapped_by_foreign_closure_decorator(kit: Kit) -> None:
    kit.write(
        "deco",
        "def cached(method):\n    def wrapper(self, *a):\n        return method(self, *a)\n    return wrapper\n",
    )
    src = (
        "from __P__deco import cached\nclass Name(str):\n    @cached\n    def lower(self):\n"
        "        return super().lower() + '{s}'\n"
    )
    kit.write("m", src.format(s="1"))
    m = kit.load("m")
    n = m.Name("AB")
    kit.write("m", src.format(s="2"))
    kit.ok("m")
    assert n.lower() == "ab2" and m.Name("CD").lower() == "cd2"


def test_base_made_on_the_fly_keeps_the_class(kit: Kit) -> None:
    src = "from collections import namedtuple\nclass Pair(namedtuple('Pair', 'a b')):\n    def total(self):\n        return (self.a + self.b) * {k}\n"
    kit.write("m", src.format(k=1))
    m = kit.load("m")
    Pair, p = m.Pair, m.Pair(1, 2)
    kit.write("m", src.format(k=10))
    r = kit.ok("m")
    assert (m.Pair is Pair, p.total(), m.Pair(1, 1).total()) == (True, 30, 20)
    assert not r.warnings


def test_module_level_instance_of_class_forbidding_setattr(kit: Kit) -> None:
    src = (
        "class Policy:\n    def __setattr__(self, name, value):\n        raise AttributeError('read-only')\n"
        "    def limit(self):\n        return {n}\nDEFAULT = Policy()\n"
    )
    kit.write("m", src.format(n=1))
    m = kit.load("m")
    Policy = m.Policy
    kit.write("m", src.format(n=2))
    kit.ok("m")
    assert type(m.DEFAULT) is Policy and m.DEFAULT.limit() == 2


def test_enum_of_object_sentinels_keeps_its_members(kit: Kit) -> None:
    src = "import enum\nclass Sentinel(enum.Enum):\n    UNSET = object()\n    def __repr__(self):\n        return '{r}'\nUNSET = Sentinel.UNSET\n"
    kit.write("m", src.format(r="unset1"))
    m = kit.load("m")
    unset = m.UNSET
    kit.write("m", src.format(r="unset2"))
    r = kit.ok("m")
    assert m.Sentinel.UNSET is unset and m.UNSET is unset and repr(unset) == "unset2"
    assert not r.warnings


def test_classes_whose_module_the_package_rewrote_keep_identity(kit: Kit) -> None:
    # anyio/numpy style: the package re-exports classes and sets __module__ to itself
    kit.write(
        "pkg",
        "from ._impl import Base, Empty\nfor _v in (Base, Empty):\n    _v.__module__ = __name__\n",
        package=True,
    )
    src = "class Base:\n    def v(self):\n        return {n}\nclass Empty(Base):\n    pass\n"
    kit.write("pkg._impl", src.format(n=1))
    pkg = kit.load("pkg")
    Base, Empty, e = pkg.Base, pkg.Empty, pkg.Empty()
    assert Base.__module__ == kit.name("pkg")
    kit.write("pkg._impl", src.format(n=2))
    results = kit.reload("pkg", "pkg._impl")
    assert [r.status for r in results] == ["reloaded", "reloaded"]
    assert not [w for r in results for w in r.warnings]
    assert pkg.Base is Base and pkg.Empty is Empty and e.v() == 2


def test_class_claiming_another_module_is_still_matched(kit: Kit) -> None:
    # _pytest.outcomes.Failed style: ``__module__ = "builtins"`` in the class body
    src = (
        "class Failed(Exception):\n    __module__ = 'builtins'\n"
        "class XFailed(Failed):\n    def why(self):\n        return {n}\n"
    )
    kit.write("m", src.format(n=1))
    m = kit.load("m")
    Failed, XFailed = m.Failed, m.XFailed
    kit.write("m", src.format(n=2))
    r = kit.ok("m")
    assert (m.Failed is Failed, m.XFailed is XFailed, XFailed().why()) == (True, True, 2)
    assert not r.warnings


def test_wrapper_around_staticmethod_with_shared_qualname(kit: Kit) -> None:
    kit.write(
        "deco",
        "import functools\nclass Marker:\n    def __init__(self, fn):\n        self.fn = fn\n"
        "        functools.update_wrapper(self, fn)\n"
        "    def __get__(self, obj, objtype=None):\n        return self.fn.__get__(obj, objtype)\n",
    )
    src = "from __P__deco import Marker\nclass P:\n    @Marker\n    @staticmethod\n    def make():\n        return {n}\n"
    kit.write("m", src.format(n=1))
    m = kit.load("m")
    marker = m.P.__dict__["make"]
    kit.write("m", src.format(n=2))
    r = kit.ok("m")
    assert m.P.make() == 2 and m.P.__dict__["make"] is marker
    assert not r.warnings
