"""Failure classes found on real libraries (issue 13): typing constructs and hostile objects,
package bodies that rely on submodule attributes, generated classes, modules that replace
their own sys.modules entry, held references, and dependents through aliases and stars."""

# ruff: noqa: E501 - module sources written inline read best on one line
from __future__ import annotations

import sys

import pytest
from conftest import Kit, actions

TYPING_V1 = """
import typing
from typing import Annotated, Literal, Generic, TypeVar, List, Callable, Dict, Optional
T = TypeVar("T")
class Box(Generic[T]):
    def get(self):
        return 1
IntBox = Box[int]
SPECIAL = {"list": List, "callable": Callable, "dict": Dict, "box": Box}
ALIASES = [List, Callable[..., int], Annotated[int, "meta"], Literal["a", "b"], Optional[Box[int]]]
PAIR = (List, Dict)
class Holder:
    kinds = {"l": List, "c": Callable}
    ann: Annotated[int, "x"] = 1
    lit = Literal["x"]
    items = [Box[int], List]
    def f(self, x: List[int] = None) -> Literal["x"]:
        return "x"
def fn(x: Annotated[Box[int], "m"], cb: Callable = Callable) -> Dict:
    return {}
"""


def test_typing_constructs_everywhere_reload_without_engine_errors(kit: Kit) -> None:
    source = TYPING_V1
    kit.write("ty", source)
    mod = kit.load("ty")
    box, holder = mod.Box, mod.Holder
    kit.write("ty", source.replace("return 1", "return 2") + "\nNEW = Literal['n']\n")
    kit.ok("ty")
    assert mod.Box is box and mod.Holder is holder
    assert box().get() == 2
    assert mod.IntBox().get() == 2
    assert mod.SPECIAL["box"] is box


@pytest.mark.skipif(sys.version_info < (3, 12), reason="the type statement is 3.12+")
def test_type_alias_statement_and_pep695_generics(kit: Kit) -> None:
    kit.write(
        "pep",
        "type Pair[T] = tuple[T, T]\nclass C[T]:\n    def f(self) -> Pair[T]:\n        return 1\nALIASES = {'p': Pair, 'c': C[int]}\n",
    )
    mod = kit.load("pep")
    cls = mod.C
    kit.write(
        "pep",
        "type Pair[T] = tuple[T, T]\nclass C[T]:\n    def f(self) -> Pair[T]:\n        return 2\nALIASES = {'p': Pair, 'c': C[int]}\n",
    )
    kit.ok("pep")
    assert mod.C is cls and cls().f() == 2


HOSTILE = """
class Liar:
    def __getattr__(self, name):
        return self  # every attribute exists, even __wrapped__, __origin__, __args__
    def __eq__(self, other):
        raise RuntimeError("no equality")
    __hash__ = None
class Raiser:
    def __getattr__(self, name):
        raise RuntimeError(f"no {name}")
    @property
    def __class__(self):
        raise RuntimeError("no class")
    @property
    def __dict__(self):
        raise RuntimeError("no dict")
class Meta(type):
    def __getattr__(cls, name):
        raise RuntimeError(name)
class WithMeta(metaclass=Meta):
    def f(self):
        return VERSION
class Gen:
    def __class_getitem__(cls, item):
        return Liar()
VERSION = 1
LIAR = Liar()
RAISER = Raiser()
ITEMS = [Liar(), Raiser(), Gen[int]]
MAP = {"a": Liar(), "b": Raiser()}
def use(x=Liar(), y=Raiser()):
    return VERSION
"""


def test_objects_whose_getattr_eq_or_class_lie_or_raise(kit: Kit) -> None:
    kit.write("hostile", HOSTILE)
    mod = kit.load("hostile")
    use, with_meta = mod.use, mod.WithMeta
    kit.write("hostile", HOSTILE.replace("VERSION = 1", "VERSION = 2"))
    r = kit.reload_one("hostile")
    assert r.status == "reloaded", r
    assert use() == 2 and mod.use is use
    assert mod.WithMeta is with_meta and with_meta().f() == 2


def test_an_engine_error_in_an_optional_step_becomes_a_warning(kit: Kit) -> None:
    # a class whose members make the engine's patching raise: the class is replaced by the
    # new one with a warning, the rest of the module is patched, the reload is not blocked
    src = (
        "class Angry(type):\n"
        "    def __setattr__(cls, name, value):\n"
        "        if VERSION > 1 and not name.startswith('_'):\n"
        "            raise RuntimeError('frozen class')\n"
        "        super().__setattr__(name, value)\n"
        "class Frozen(metaclass=Angry):\n"
        "    def m(self):\n"
        "        return VERSION\n"
        "def f():\n"
        "    return VERSION\n"
        "VERSION = 1\n"
    )
    kit.write("angry", src)
    mod = kit.load("angry")
    f = mod.f
    kit.write(
        "angry",
        src.replace("VERSION = 1", "VERSION = 2").replace(
            "return VERSION\n", "return VERSION * 10\n", 1
        ),
    )
    r = kit.reload_one("angry")
    assert r.status == "reloaded", r
    assert f() == 2 and mod.Frozen().m() == 20


def test_engine_failure_after_the_body_is_failed_with_the_engine_error_type(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reloadctl.agent.engine import namespace

    kit.write("e", "X = 1\ndef f():\n    return X\n")
    mod = kit.load("e")
    f = mod.f
    kit.write("e", "X = 2\ndef f():\n    return X * 10\n")

    def broken(*args: object, **kwargs: object) -> object:
        raise AttributeError("__args__")

    monkeypatch.setattr(namespace, "_defined", broken)
    r = kit.reload_one("e")
    assert r.status == "failed" and r.error is not None
    assert r.error.type == "EngineError", r.error
    assert "__args__" in r.error.message
    assert mod.X == 1 and f() == 1 and mod.f is f  # nothing changed


def test_package_body_sees_already_loaded_submodules_as_attributes(kit: Kit) -> None:
    # release 1 deletes its submodule attribute; release 2 uses it after ``from .core import``
    kit.write(
        "pkg",
        "from .core import x\nfrom . import exceptions\ndel core\ndel exceptions\n",
        package=True,
    )
    kit.write("pkg.core", "x = 1\n")
    kit.write("pkg.exceptions", "class Error(Exception):\n    pass\n")
    pkg = kit.load("pkg")
    assert not hasattr(pkg, "core")
    kit.write(
        "pkg",
        "from .core import x\nfrom .exceptions import Error\nVALUE = core.x + 1\nE = exceptions.Error\n",
        package=True,
    )
    results = kit.reload("pkg", "pkg.core", "pkg.exceptions")
    assert {r.module: r.status for r in results}[kit.name("pkg")] == "reloaded", results
    assert pkg.VALUE == 2 and pkg.E is pkg.Error
    assert pkg.core is sys.modules[kit.name("pkg.core")]


BUILDER = '''
"""A tiny attrs-like class builder: generated __init__ and __setattr__ with private globals."""
def field(validator=None):
    return ("field", validator)
def define(cls):
    fields = {k: v for k, v in vars(cls).items() if isinstance(v, tuple) and v[:1] == ("field",)}
    globs = {f"_v_{k}": v[1] for k, v in fields.items()}
    lines = ["def __init__(self, " + ", ".join(fields) + "):"]
    for k, (_tag, validator) in fields.items():
        if validator is not None:
            lines.append(f"    _v_{k}({k})")
        lines.append(f"    object.__setattr__(self, {k!r}, {k})")
    lines.append("    pass")
    ns = {}
    exec(compile("\\n".join(lines), f"<generated init {cls.__qualname__}>", "exec"), globs, ns)
    init = ns["__init__"]
    init.__qualname__ = cls.__qualname__ + ".__init__"
    init.__module__ = cls.__module__
    body = {k: v for k, v in vars(cls).items() if k not in fields and k not in ("__dict__", "__weakref__")}
    body["__slots__"] = tuple(fields)
    body["__init__"] = init
    return type(cls)(cls.__name__, cls.__bases__, body)
'''


def test_generated_methods_follow_a_changed_validator(kit: Kit) -> None:
    kit.write("builder", BUILDER)
    model = (
        "from __P__builder import define, field\n"
        "def positive(v):\n    if v < 0:\n        raise ValueError('negative')\n"
        "def small(v):\n    if v > 10:\n        raise ValueError('too big')\n"
        "@define\nclass Point:\n    x = field(validator=positive)\n    def norm(self):\n        return abs(self.x)\n"
    )
    kit.write("model", model)
    mod = kit.load("model")
    point = mod.Point
    held = point(3)
    init = point.__init__
    with pytest.raises(ValueError, match="negative"):
        point(-1)
    kit.write("model", model.replace("validator=positive", "validator=small"))
    kit.ok("model")
    assert mod.Point is point and type(held) is point
    point(-1)  # the new validator accepts it
    with pytest.raises(ValueError, match="too big"):
        point(11)
    with pytest.raises(ValueError, match="too big"):
        init(held, 11)  # the __init__ held from before runs the new generated code


def test_module_that_replaces_its_sys_modules_entry_reloads_again(kit: Kit) -> None:
    src = (
        "import sys, types\n"
        "VERSION = 1\n"
        "def f():\n    return VERSION\n"
        "class _Lazy(types.ModuleType):\n"
        "    def __getattr__(self, name):\n"
        "        return getattr(_real, name)\n"
        "_real = sys.modules[__name__]\n"
        "sys.modules[__name__] = _Lazy(__name__)\n"
    )
    kit.write("lazy", src)
    kit.load("lazy")
    first = sys.modules[kit.name("lazy")]
    assert first.__spec__ is None and first.f() == 1
    for version in (2, 3):
        kit.write("lazy", src.replace("VERSION = 1", f"VERSION = {version}"))
        r = kit.reload_one("lazy")
        assert r.status == "reloaded", r
        assert sys.modules[kit.name("lazy")].f() == version


def test_held_instances_get_new_methods_and_keep_their_class(kit: Kit) -> None:
    kit.write("pkg", "from .shapes import Shape, area\n__all__ = ['Shape', 'area']\n", package=True)
    kit.write(
        "pkg.shapes",
        "class Shape:\n    def __init__(self, w):\n        self.w = w\n    def area(self):\n        return self.w\ndef area(s):\n    return s.area()\n",
    )
    pkg = kit.load("pkg")
    held = pkg.Shape(2)
    bound = held.area
    from_import = pkg.area
    kit.write(
        "pkg.shapes",
        "class Shape:\n    def __init__(self, w):\n        self.w = w\n    def area(self):\n        return self.w * 10\n    def perimeter(self):\n        return 4 * self.w\ndef area(s):\n    return s.area() + 1\n",
    )
    kit.write("pkg.extra", "from .shapes import Shape\nclass Square(Shape):\n    pass\n")
    kit.write(
        "pkg",
        "from .shapes import Shape, area\nfrom .extra import Square\n__all__ = ['Shape', 'area', 'Square']\n",
        package=True,
    )
    results = kit.reload("pkg", "pkg.shapes", "pkg.extra")
    assert [r.status for r in results] == ["reloaded", "reloaded", "not_loaded"]
    assert type(held) is pkg.Shape and isinstance(held, pkg.Shape)
    assert held.perimeter() == 8 and bound() == 20 and from_import(held) == 21
    assert issubclass(pkg.Square, pkg.Shape)


def test_dependents_follow_aliases_of_replaced_objects(kit: Kit) -> None:
    kit.write("m", "def f():\n    return 1\n")
    kit.write("user", "from __P__m import f as g\n")
    kit.load("m")
    user = kit.load("user")
    # free variables change: f is replaced, not patched; the alias must follow
    kit.write(
        "m",
        "def deco(fn):\n    def inner():\n        return fn() * 10\n    return inner\n@deco\ndef f():\n    return 2\n",
    )
    r = kit.ok("m", dependents=True)
    assert user.g() == 20, actions(r, "rebound")
    assert f"{kit.name('user')}.g" in actions(r, "rebound")


def test_dependents_star_import_receives_new_public_names(kit: Kit) -> None:
    kit.write("m", "__all__ = ['a']\ndef a():\n    return 1\n")
    kit.write("star", "from __P__m import *\nLOCAL = 1\n")
    kit.write("plain", "from __P__m import a\n")
    kit.load("m")
    star, plain = kit.load("star"), kit.load("plain")
    kit.write("m", "__all__ = ['a', 'b']\ndef a():\n    return 1\ndef b():\n    return 2\n")
    r = kit.ok("m", dependents=True)
    assert star.b() == 2, r
    assert not hasattr(plain, "b")  # it named what it imports: nothing is added
    assert f"{kit.name('star')}.b" in actions(r, "rebound")
    # without dependents=True nothing is added elsewhere
    kit.write(
        "m", "__all__ = ['a', 'b', 'c']\ndef a():\n    return 1\ndef b():\n    return 2\nc = 3\n"
    )
    kit.ok("m")
    assert not hasattr(star, "c")


def test_tuple_keys_deep_in_tables_name_the_kept_classes(kit: Kit) -> None:
    # h11's state machine: {SERVER: {IDLE: {(Request, CLIENT): SEND_BODY}}}, classes as keys
    src = (
        "class Sentinel(type):\n    pass\n"
        "class CLIENT(metaclass=Sentinel):\n    pass\n"
        "class SERVER(metaclass=Sentinel):\n    pass\n"
        "class Request:\n    pass\n"
        "TABLE = {SERVER: {'idle': {'deeper': {(Request, CLIENT): 'send-body'}}}}\n"
        "def lookup():\n    return TABLE[SERVER]['idle']['deeper'][(Request, CLIENT)]\n"
    )
    kit.write("table", src)
    mod = kit.load("table")
    client, request = mod.CLIENT, mod.Request
    kit.write("table", src.replace("'send-body'", "'SEND-BODY'"))
    kit.ok("table")
    assert mod.CLIENT is client and mod.Request is request
    assert mod.TABLE[mod.SERVER]["idle"]["deeper"][(request, client)] == "SEND-BODY"
    assert mod.lookup() == "SEND-BODY"


def test_lazy_attributes_are_never_resolved_by_the_engine(kit: Kit) -> None:
    # six's moved modules: any attribute lookup imports the module they stand for
    src = (
        "RESOLVED = []\n"
        "class Lazy:\n"
        "    def __init__(self, name):\n        self.name = name\n"
        "    def __getattr__(self, attr):\n"
        "        RESOLVED.append(attr)\n"
        "        raise ModuleNotFoundError(f'No module named {self.name!r}')\n"
        "class Moves:\n    gnu = Lazy('_gdbm_absent')\n    def f(self):\n        return 1\n"
        "ITEMS = [Lazy('x')]\nONE = Lazy('y')\n"
    )
    kit.write("lazymoves", src)
    mod = kit.load("lazymoves")
    moves = mod.Moves
    kit.write("lazymoves", src.replace("return 1", "return 2"))
    r = kit.ok("lazymoves")
    assert not r.warnings, r.warnings
    assert mod.Moves is moves and moves().f() == 2
    assert mod.RESOLVED == []


def test_sorted_batch_with_function_level_cycle_applies_the_package_last(kit: Kit) -> None:
    # click: core imports decorators inside functions, decorators imports core at top; the
    # package, first in sorted order, imports a name only the new decorators defines
    kit.write("pkg", "from .core import f\nfrom .decorators import d\n", package=True)
    kit.write("pkg.core", "def f():\n    from .decorators import d\n    return d()\n")
    kit.write("pkg.decorators", "from .core import f\ndef d():\n    return 1\n")
    pkg = kit.load("pkg")
    kit.write(
        "pkg.decorators",
        "from .core import f\ndef d():\n    return 2\nclass HelpOption:\n    pass\n",
    )
    kit.write("pkg.core", "def f():\n    from .decorators import d\n    return d() * 10\n")
    kit.write("pkg", "from .core import f\nfrom .decorators import d, HelpOption\n", package=True)
    results = kit.reload("pkg", "pkg.core", "pkg.decorators")
    assert [r.status for r in results] == ["reloaded"] * 3, results
    assert pkg.f() == 20 and pkg.HelpOption.__name__ == "HelpOption"


def test_a_package_is_never_picked_to_break_a_cycle_before_its_submodules(kit: Kit) -> None:
    kit.write("pkg", "from .a import A\nfrom .b import B\n", package=True)
    kit.write("pkg.a", "from . import b\nA = 1\n")
    kit.write("pkg.b", "from . import a\nB = 1\n")
    pkg = kit.load("pkg")
    kit.write("pkg.a", "from . import b\nA = 2\n")
    kit.write("pkg.b", "from . import a\nB = 2\nC = 3\n")
    kit.write("pkg", "from .a import A\nfrom .b import B, C\n", package=True)
    results = kit.reload("pkg", "pkg.a", "pkg.b")
    assert [r.status for r in results] == ["reloaded"] * 3, results
    assert (pkg.A, pkg.B, pkg.C) == (2, 2, 3)


TOKENS = (
    "class _TokenType(tuple):\n"
    "    parent = None\n"
    "    def __getattr__(self, name):\n"
    "        new = _TokenType(self + (name,))\n"
    "        setattr(self, name, new)\n"
    "        new.parent = self\n"
    "        return new\n"
    "Token = _TokenType()\n"
    "Keyword = Token.Keyword\n"
    "def is_token(x):\n    return isinstance(x, _TokenType)\n"
)


def test_module_level_instances_of_a_tuple_subclass_stay_instances_of_its_class(kit: Kit) -> None:
    # sqlparse's tokens: instances with a __dict__ and a variable size cannot change class
    kit.write("tokens", TOKENS)
    mod = kit.load("tokens")
    cls, keyword = mod._TokenType, mod.Keyword
    kit.write(
        "tokens",
        TOKENS.replace(
            "    parent = None\n",
            "    parent = None\n    def __repr__(self):\n        return 'Token.' + '.'.join(self)\n",
        ),
    )
    r = kit.ok("tokens")
    assert not r.warnings, r.warnings
    assert mod._TokenType is cls and mod.Keyword is keyword  # the equal old instance stands in
    assert mod.is_token(mod.Keyword) and repr(mod.Keyword) == "Token.Keyword"
    # a new instance with no old counterpart: the class is replaced, with a warning
    kit.write("tokens", TOKENS + "Name = Token.Name\n")
    r = kit.ok("tokens")
    assert any("cannot take the kept class" in w for w in r.warnings), r.warnings
    assert mod.is_token(mod.Name) and mod.is_token(mod.Keyword)


def test_new_subclass_of_a_kept_slotted_class_is_built_on_the_kept_class(kit: Kit) -> None:
    src = (
        "class Token:\n    __slots__ = ('value',)\n"
        "class TokenList(Token):\n    __slots__ = ('tokens',)\n    def kind(self):\n        return 'list'\n"
    )
    kit.write("sql", src)
    mod = kit.load("sql")
    token_list = mod.TokenList
    kit.write(
        "sql",
        src
        + "class Over(TokenList):\n    def kind(self):\n        return 'over:' + super().kind()\n",
    )
    r = kit.ok("sql")
    assert not r.warnings, r.warnings
    assert mod.TokenList is token_list and issubclass(mod.Over, token_list)
    assert mod.Over().kind() == "over:list"


def test_a_module_the_upgrade_removed_leaves_sys_modules_instead_of_failing_the_batch(
    kit: Kit,
) -> None:
    # marshmallow 4 dropped marshmallow.base and marshmallow.warnings
    kit.write("pkg", "from .base import Base\nfrom . import warnings\n", package=True)
    kit.write("pkg.base", "class Base:\n    pass\n")
    kit.write("pkg.warnings", "X = 1\n")
    pkg = kit.load("pkg")
    kit.write("pkg.base", None)
    kit.write("pkg.warnings", None)
    kit.write("pkg.fields", "class Field:\n    pass\n")
    kit.write("pkg", "from .fields import Field\n", package=True)
    results = kit.reload("pkg", "pkg.base", "pkg.fields", "pkg.warnings")
    assert [r.status for r in results] == ["reloaded", "reloaded", "not_loaded", "reloaded"], (
        results
    )
    assert actions(results[1], "removed") == [kit.name("pkg.base")]
    assert results[1].warnings and "removed from sys.modules" in results[1].warnings[0]
    assert kit.name("pkg.base") not in sys.modules and not hasattr(pkg, "Base")
    assert not hasattr(pkg, "warnings") and pkg.Field.__name__ == "Field"


def test_a_vanished_module_without_its_package_in_the_batch_still_fails(kit: Kit) -> None:
    kit.write("pkg", "", package=True)
    kit.write("pkg.gone", "X = 1\n")
    kit.load("pkg.gone")
    kit.write("pkg.gone", None)
    (r,) = kit.reload("pkg.gone")
    assert r.status == "failed" and r.error is not None and r.error.type == "FileNotFoundError"
    assert kit.name("pkg.gone") in sys.modules


def test_named_tuples_in_new_tables_hold_the_kept_functions(kit: Kit) -> None:
    # tabulate: TableFormat(lineabove=_html_begin, ...) compared with ``==`` to the global
    src = (
        "from collections import namedtuple\n"
        "Fmt = namedtuple('Fmt', 'begin name')\n"
        "def _html_begin():\n    return '<table>'\n"
        "FORMATS = {'html': Fmt(_html_begin, 'html')}\n"
        "def is_html(fmt):\n    return fmt.begin == _html_begin\n"
    )
    kit.write("fmt", src)
    mod = kit.load("fmt")
    begin = mod._html_begin
    kit.write("fmt", src.replace("'<table>'", "'<table class=x>'"))
    kit.ok("fmt")
    assert mod._html_begin is begin and mod.FORMATS["html"].begin is begin
    assert mod.is_html(mod.FORMATS["html"]) and begin() == "<table class=x>"
