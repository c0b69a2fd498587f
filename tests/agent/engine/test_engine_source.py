"""Static analysis of module code: stored names, imports (dependency order), import *."""

# ruff: noqa: E501 - module sources written inline read best on one line

from __future__ import annotations

import textwrap

from reloadctl.agent.engine.source import analyse, compile_module, function_codes


def _analyse(src: str, package: str = "pkg"):  # type: ignore[no-untyped-def]
    return analyse(compile_module(textwrap.dedent(src), "<test>")[0], package)


def test_stores_and_imports() -> None:
    info = _analyse(
        """
        '''doc'''
        import os.path
        import json as j
        from . import sibling
        from .sub import thing
        from .. import up
        from collections import OrderedDict as OD
        X = 1
        def f():
            import email.message
        class C:
            import csv
        global G
        G = 2
        del X
        """,
        package="pkg.inner",
    )
    assert {"__doc__", "os", "j", "sibling", "thing", "up", "OD", "X", "f", "C", "G"} <= info.stores
    assert "csv" not in info.stores  # bound in the class namespace, not the module
    assert {"os.path", "json", "pkg.inner", "pkg.inner.sibling", "pkg.inner.sub"} <= info.imports
    assert {
        "pkg.inner.sub.thing",
        "pkg",
        "pkg.up",
        "collections",
        "email.message",
        "csv",
    } <= info.imports
    assert not info.star_import


def test_star_import_detected() -> None:
    assert _analyse("from os.path import *\n").star_import


def test_many_names_use_extended_args() -> None:
    src = "".join(f"N{i} = {i}\n" for i in range(300))
    info = _analyse(src)
    assert {f"N{i}" for i in range(300)} <= info.stores


def test_function_codes_paths_skip_comprehensions() -> None:
    code, _warnings = compile_module(
        "def outer():\n    a = [i for i in range(3)]\n    def inner():\n        return lambda: 1\n    return inner\n",
        "<t>",
    )
    (outer,) = [c for c in code.co_consts if hasattr(c, "co_name") and c.co_name == "outer"]
    paths = set(function_codes(outer))
    assert paths == {"inner#0", "inner#0/<lambda>#0"}


def test_compile_warnings_are_returned_not_shown() -> None:
    code, warned = compile_module("X = '\\d'\n", "<w>")
    assert code.co_filename == "<w>"
    assert len(warned) == 1 and "invalid escape sequence" in warned[0]
