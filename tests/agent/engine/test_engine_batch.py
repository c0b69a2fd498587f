"""Batches: dependency order, one transaction, package upgrades, dependents, dry run (F)."""

# ruff: noqa: E501 - module sources written inline read best on one line
from __future__ import annotations

import sys

from conftest import Kit, actions

from reloadctl.agent.engine import reload_modules


def test_one_result_per_distinct_name_in_request_order(kit: Kit) -> None:
    kit.write("a", "X = 1\n")
    kit.write("b", "X = 1\n")
    kit.load("a"), kit.load("b")
    kit.write("a", "X = 2\n")
    kit.write("b", "X = 2\n")
    names = [kit.name("b"), kit.name("a"), kit.name("b"), "no_such_module_rl"]
    results = reload_modules(names)
    assert [r.module for r in results] == [kit.name("b"), kit.name("a"), "no_such_module_rl"]
    assert [r.status for r in results] == ["reloaded", "reloaded", "not_loaded"]


def test_dependency_order_module_after_what_it_imports(kit: Kit) -> None:
    kit.write("base", "VALUE = 1\n")
    kit.write("user", "from __P__base import VALUE\nCOPY = VALUE\n")
    base, user = kit.load("base"), kit.load("user")
    kit.write("base", "VALUE = 2\n")
    kit.write("user", "from __P__base import VALUE\nCOPY = VALUE * 10\n")
    # requested user first: it must still run after base, and see base's new VALUE
    results = kit.reload("user", "base")
    assert [r.status for r in results] == ["reloaded", "reloaded"]
    assert (base.VALUE, user.COPY) == (2, 20)


def test_package_after_its_submodules(kit: Kit) -> None:
    kit.write("pkg", "from .sub import f\nSNAP = f()\n", package=True)
    kit.write("pkg.sub", "def f():\n    return 1\n")
    pkg = kit.load("pkg")
    kit.write("pkg.sub", "def f():\n    return 2\n")
    kit.write("pkg", "from .sub import f\nSNAP = f() * 100\n", package=True)
    kit.reload("pkg", "pkg.sub")
    assert (pkg.SNAP, pkg.f()) == (200, 2)


def test_reloading_package_alone_does_not_reload_submodules(kit: Kit) -> None:
    kit.write("pkg", "from .sub import f\n", package=True)
    kit.write("pkg.sub", "def f():\n    return 1\n")
    pkg = kit.load("pkg")
    sub = sys.modules[kit.name("pkg.sub")]
    kit.write("pkg.sub", "def f():\n    return 2\n")
    kit.ok("pkg")
    assert (pkg.f(), sub.f()) == (1, 1)
    assert pkg.sub is sub  # the submodule attribute survives the package's reload


def test_submodule_reload_and_circular_relative_imports(kit: Kit) -> None:
    kit.write("pkg", "", package=True)
    kit.write("pkg.a", "from . import b\ndef fa():\n    return 1\ndef call():\n    return b.fb()\n")
    kit.write("pkg.b", "from . import a\ndef fb():\n    return a.fa() + 10\n")
    a, b = kit.load("pkg.a"), kit.load("pkg.b")
    kit.write("pkg.a", "from . import b\ndef fa():\n    return 2\ndef call():\n    return b.fb()\n")
    kit.ok("pkg.a")
    assert (b.fb(), a.call()) == (12, 12)
    assert sys.modules[kit.name("pkg.a")] is a


def test_batch_failure_rolls_back_every_module(kit: Kit) -> None:
    kit.write("a", "X = 1\ndef f():\n    return 'a1'\n")
    kit.write("b", "import __P__a\nY = 1\n")
    a, b = kit.load("a"), kit.load("b")
    f = a.f
    kit.write("a", "X = 2\ndef f():\n    return 'a2'\n")
    kit.write("b", "import __P__a\nY = 2\nraise RuntimeError('b is broken')\n")
    ra, rb = kit.reload("a", "b")
    assert rb.status == "failed" and rb.error is not None and rb.error.type == "RuntimeError"
    assert ra.status == "failed" and ra.error is not None and ra.error.type == "RolledBack"
    assert ra.error.message.startswith(f"rolled back: {kit.name('b')} failed")
    assert (a.X, f(), a.f(), b.Y) == (1, "a1", "a1", 1)


def test_compile_error_in_batch_applies_nothing(kit: Kit) -> None:
    kit.write("a", "X = 1\n")
    kit.write("b", "Y = 1\n")
    a, b = kit.load("a"), kit.load("b")
    kit.write("a", "X = 2\n")
    kit.write("b", "Y = (\n")
    ra, rb = kit.reload("a", "b")
    assert rb.error is not None and rb.error.type == "SyntaxError"
    assert ra.error is not None and ra.error.type == "RolledBack"
    assert "not applied" in ra.error.message
    assert (a.X, b.Y) == (1, 1)


def test_refused_and_unchanged_members_of_a_batch_do_not_block_it(kit: Kit) -> None:
    kit.write("a", "X = 1\n")
    a = kit.load("a")
    kit.write("a", "X = 2\n")
    results = reload_modules([kit.name("a"), "sys", "not_loaded_rl_x"])
    assert [r.status for r in results] == ["reloaded", "refused", "not_loaded"]
    assert a.X == 2


def test_package_upgrade_in_place_behaves_like_fresh_import(kit: Kit) -> None:
    kit.write("pkg", "from .core import api\nfrom .util import helper\nVERSION = 1\n", package=True)
    kit.write(
        "pkg.util",
        "def helper():\n    return 'h1'\nclass Tool:\n    def use(self):\n        return 'tool1'\n",
    )
    kit.write(
        "pkg.core", "from .util import helper, Tool\ndef api():\n    return 'api1:' + helper()\n"
    )
    kit.write("client", "from __P__pkg import api\nfrom __P__pkg.util import helper, Tool\n")
    pkg, client = kit.load("pkg"), kit.load("client")
    util = sys.modules[kit.name("pkg.util")]
    held_api, held_helper, held_tool = client.api, client.helper, client.Tool()
    # v2: helper and Tool move to a new submodule, core and __init__ change
    kit.write(
        "pkg.helpers",
        "def helper():\n    return 'h2'\nclass Tool:\n    def use(self):\n        return 'tool2'\n",
    )
    kit.write("pkg.util", "from .helpers import helper, Tool\nEXTRA = 1\n")
    kit.write(
        "pkg.core", "from .helpers import helper\ndef api():\n    return 'api2:' + helper()\n"
    )
    kit.write(
        "pkg", "from .core import api\nfrom .helpers import helper\nVERSION = 2\n", package=True
    )
    results = kit.reload("pkg", "pkg.core", "pkg.util", "pkg.helpers")
    assert [r.status for r in results] == ["reloaded", "reloaded", "reloaded", "not_loaded"]
    helpers = sys.modules[kit.name("pkg.helpers")]
    assert (pkg.VERSION, pkg.api(), pkg.helper(), util.EXTRA) == (2, "api2:h2", "h2", 1)
    assert pkg.helpers is helpers and util.helper is helpers.helper
    # everything held from before runs the new code
    assert held_api() == "api2:h2"
    assert held_helper() == "h2"
    assert held_tool.use() == "tool2"


def test_dependents_rebind_from_imports(kit: Kit) -> None:
    kit.write("m", "CONST = 1\nLIMITS = [1]\n")
    kit.write(
        "user", "from __P__m import CONST, LIMITS as L\nDEBUG = 1\ndef get():\n    return CONST\n"
    )
    m, user = kit.load("m"), kit.load("user")
    kit.write("m", "CONST = 2\nLIMITS = [2]\n")
    r = kit.ok("m", dependents=True)
    assert (m.CONST, user.CONST, user.get(), user.L) == (2, 2, 2, [2])
    assert user.DEBUG == 1  # same value as old CONST under another name: untouched
    assert sorted(actions(r, "rebound")) == sorted(
        [f"{kit.name('user')}.CONST", f"{kit.name('user')}.L"]
    )


def test_without_dependents_from_import_copies_stay(kit: Kit) -> None:
    kit.write("m", "CONST = 1\n")
    kit.write("user", "from __P__m import CONST\n")
    m, user = kit.load("m"), kit.load("user")
    kit.write("m", "CONST = 2\n")
    kit.ok("m")
    assert (m.CONST, user.CONST) == (2, 1)


def test_dry_run_plans_without_executing(kit: Kit) -> None:
    kit.write(
        "m",
        "RUNS = []\nRUNS.append(1)\nOLD = 1\ndef f():\n    return 1\nclass C:\n    def meth(self):\n        return 1\n",
    )
    m = kit.load("m")
    runs, f = m.RUNS, m.f
    kit.write(
        "m",
        "RUNS = []\nRUNS.append(1)\nNEW = 1\ndef f():\n    return 2\nclass C:\n    def meth(self):\n        return 2\n    def more(self):\n        return 3\n",
    )
    r = kit.reload_one("m", dry_run=True)
    assert r.status == "reloaded"
    assert m.RUNS is runs and m.f is f and f() == 1 and hasattr(m, "OLD") and not hasattr(m, "NEW")
    name = kit.name("m")
    assert f"{name}.f" in actions(r, "patched")
    assert f"{name}.C.meth" in actions(r, "patched")
    assert f"{name}.NEW" in actions(r, "added") and f"{name}.C.more" in actions(r, "added")
    assert f"{name}.OLD" in actions(r, "removed")


def test_dry_run_statuses(kit: Kit) -> None:
    kit.write("m", "X = 1\n")
    kit.load("m")
    kit.write("m", "X = 2\n")
    kit.ok("m")
    assert kit.reload_one("m", dry_run=True).status == "unchanged"
    kit.write("m", "X = (\n")
    r = kit.reload_one("m", dry_run=True)
    assert r.status == "failed" and r.error is not None and r.error.type == "SyntaxError"
    assert reload_modules(["sys"], dry_run=True)[0].status == "refused"


def test_failed_upgrade_forgets_submodules_it_imported_first(kit: Kit) -> None:
    kit.write("pkg", "from .core import api\n", package=True)
    kit.write("pkg.core", "def api():\n    return 1\n")
    pkg = kit.load("pkg")
    core = sys.modules[kit.name("pkg.core")]
    kit.write("pkg.extra", "VALUE = 2\n")
    kit.write(
        "pkg.core",
        "from .extra import VALUE\ndef api():\n    return VALUE\nraise RuntimeError('half done')\n",
    )
    (r,) = kit.reload("pkg.core")
    assert r.status == "failed" and r.error is not None and r.error.type == "RuntimeError"
    assert kit.name("pkg.extra") not in sys.modules
    assert not hasattr(pkg, "extra")
    assert core.api() == 1 and not hasattr(core, "VALUE")


def test_cyclic_batch_leaves_no_stale_from_import(kit: Kit) -> None:
    kit.write("pkg", "", package=True)
    kit.write("pkg.a", "from . import b\nfrom .b import LIMIT\nNAME = 'a1'\n")
    kit.write("pkg.b", "from . import a\nLIMIT = 1\ndef name():\n    return a.NAME\n")
    a, b = kit.load("pkg.a"), kit.load("pkg.b")
    kit.write("pkg.a", "from . import b\nfrom .b import LIMIT\nNAME = 'a2'\n")
    kit.write("pkg.b", "from . import a\nLIMIT = 2\ndef name():\n    return a.NAME\n")
    # like a fresh import of the cycle: no stale value left between the batch's modules
    results = kit.reload("pkg.a", "pkg.b")
    assert [r.status for r in results] == ["reloaded", "reloaded"]
    assert (a.LIMIT, b.LIMIT, b.name()) == (2, 2, "a2")
    assert f"{kit.name('pkg.a')}.LIMIT" in actions(results[1], "rebound")


def test_replaced_class_is_not_mistaken_for_a_move(kit: Kit) -> None:
    kit.write("pkg", "", package=True)
    kit.write("pkg.a", "class Config:\n    __slots__ = ('x',)\n")
    kit.write("pkg.b", "class Config:\n    def where(self):\n        return 'b1'\n")
    a, b = kit.load("pkg.a"), kit.load("pkg.b")
    old_a, old_b = a.Config, b.Config
    kit.write("pkg.a", "class Config:\n    __slots__ = ('x', 'y')\n")
    kit.write("pkg.b", "class Config:\n    def where(self):\n        return 'b2'\n")
    ra, rb = kit.reload("pkg.a", "pkg.b")
    assert (ra.status, rb.status) == ("reloaded", "reloaded")
    assert a.Config is not old_a and a.Config.__slots__ == ("x", "y")
    assert b.Config is old_b and old_b().where() == "b2"
    assert old_a.__module__ == kit.name("pkg.a") and not hasattr(old_a, "where")
