"""The arrows of DESIGN.md "Layout", read from the source with ``ast`` (nothing is imported).

Layers point one way: ``results``, ``errors`` <- ``proto`` <- ``agent``, ``client``;
``transport`` <- ``agent``, ``client``. The engine imports nothing of reloadctl but
``results`` and ``errors``; agent and client never import each other; only
``reloadctl/transport.py`` reaches into rpyc's private API; no module is over 450 lines.

Every import counts: absolute and relative, at module level, inside functions and under
``if TYPE_CHECKING:``, and ``importlib.import_module``/``__import__`` with a literal name.
The checker itself is tested on small sources at the end, so a broken arrow cannot pass
because the checker stopped seeing it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "reloadctl"
MAX_LINES = 450

#: rpyc's private API (Connection, Channel, Service and Server internals): only
#: reloadctl/transport.py may name these.
RPYC_INTERNALS = frozenset(
    {
        "FRAME_HEADER",
        "FLUSHER",
        "_HANDLERS",
        "_accept_method",
        "_authenticate_and_serve_client",
        "_box",
        "_channel",
        "_cleanup",
        "_closed",
        "_config",
        "_connect",
        "_dispatch",
        "_listen",
        "_local_objects",
        "_local_root",
        "_netref_factory",
        "_protocol",
        "_proxy_cache",
        "_recvlock",
        "_remote_root",
        "_request_callbacks",
        "_send",
        "_sendlock",
        "_seqcounter",
        "_serve_client",
        "_start_in_thread",
        "_unbox",
    }
)
TRANSPORT = "reloadctl.transport"


@dataclass(frozen=True)
class Import:
    """One import of a module file: what it names and where."""

    module: str
    line: int


def module_name(path: Path) -> str:
    """``reloadctl/agent/x.py`` -> ``reloadctl.agent.x`` (a package is its ``__init__``)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> Iterator[Import]:
    """Every module ``source`` imports, relative imports resolved against ``module``.

    ``from a import b`` yields ``a.b`` (b may be a submodule; an attribute of ``a`` then
    still belongs to ``a``'s layer, which is what the rules compare).
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                yield Import(f"{base}.{alias.name}" if alias.name != "*" else base, node.lineno)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if (
                name in ("import_module", "__import__")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                yield Import(first.value, node.lineno)


def rpyc_internals_named(source: str) -> Iterator[tuple[str, int]]:
    """Attribute accesses of ``RPYC_INTERNALS`` names on anything but ``self``/``cls`` (our
    own classes may have a ``_closed`` of their own; rpyc's objects are never ``self``
    outside transport, where its classes are subclassed), and on ``self`` too in a module
    that imports rpyc."""
    tree = ast.parse(source)
    uses_rpyc = any(
        isinstance(n, (ast.Import, ast.ImportFrom))
        and any(
            (a.name if isinstance(n, ast.Import) else (n.module or "")).split(".")[0] == "rpyc"
            for a in n.names
        )
        for n in ast.walk(tree)
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in RPYC_INTERNALS:
            owner = node.value
            if uses_rpyc or not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                yield node.attr, node.lineno


def within(module: str, *prefixes: str) -> bool:
    """``module`` is one of ``prefixes`` or inside one of them."""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def allowed_imports(module: str) -> tuple[str, ...] | None:
    """The reloadctl modules ``module`` may import (None: anything not forbidden)."""
    if module == "reloadctl":
        return ()
    if module in ("reloadctl.errors", "reloadctl.results"):
        return ()
    if module == "reloadctl.secrets":
        return ("reloadctl.errors",)
    if within(module, "reloadctl.agent.engine"):
        return ("reloadctl.results", "reloadctl.errors", "reloadctl.agent.engine")
    if within(module, "reloadctl.proto"):
        return ("reloadctl.results", "reloadctl.errors", "reloadctl.proto")
    if module == TRANSPORT:
        return ("reloadctl.results", "reloadctl.errors", "reloadctl.proto")
    return None


def forbidden_imports(module: str) -> tuple[str, ...]:
    """The reloadctl modules ``module`` must never import."""
    if within(module, "reloadctl.agent"):
        return ("reloadctl.client", "reloadctl.ipython")
    if within(module, "reloadctl.client"):
        return ("reloadctl.agent", "reloadctl.ipython")
    return ()


def arrow_violations(module: str, imports: list[Import]) -> list[str]:
    """The imports of ``module`` that break an arrow, as readable lines."""
    bad: list[str] = []
    allowed = allowed_imports(module)
    for imp in imports:
        if not within(imp.module, "reloadctl"):
            continue
        # a module's own package __init__ runs anyway: naming it is no new arrow
        if module.startswith(imp.module + "."):
            continue
        if allowed is not None and not within(imp.module, *allowed):
            bad.append(f"{module}:{imp.line} imports {imp.module} (allowed: {allowed or 'none'})")
        elif within(imp.module, *forbidden_imports(module)):
            bad.append(f"{module}:{imp.line} imports {imp.module}")
    return bad


def package_files() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 40  # the walk found the package
    return files


def test_every_arrow_holds() -> None:
    bad: list[str] = []
    for path in package_files():
        module = module_name(path)
        imports = list(imports_of(path.read_text(), module, path.name == "__init__.py"))
        bad += arrow_violations(module, imports)
    assert bad == []


def test_only_transport_names_rpyc_internals() -> None:
    bad: list[str] = []
    seen_in_transport: set[str] = set()
    for top in ("reloadctl", "tests", "benchmarks"):
        for path in sorted((ROOT / top).rglob("*.py")):
            found = list(rpyc_internals_named(path.read_text()))
            rel = str(path.relative_to(ROOT))
            if rel == "reloadctl/transport.py":
                seen_in_transport |= {name for name, _ in found}
            else:
                bad += [f"{rel}:{line} names rpyc's {name}" for name, line in found]
    assert bad == []
    # the scan sees what transport does name (else it would see nothing anywhere)
    assert {"FRAME_HEADER", "_connect", "_config"} <= seen_in_transport


def test_no_module_over_the_line_limit() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in package_files()
    }
    over = sorted(f"{p}: {n} lines" for p, n in sizes.items() if n > MAX_LINES)
    assert over == []


# -- the checker finds what it must -----------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "is_package", "source", "expected"),
    [
        (
            "reloadctl.agent.engine.batch",
            False,
            "from reloadctl.proto.messages import ModuleResult\n",
            ["reloadctl.proto.messages.ModuleResult"],
        ),
        (
            "reloadctl.agent.engine.batch",
            False,
            "def f():\n    from ...proto import codec\n",
            ["reloadctl.proto.codec"],
        ),
        (
            "reloadctl.agent.engine.batch",
            False,
            "TYPE_CHECKING = False\nif TYPE_CHECKING:\n    import reloadctl.client.render\n",
            ["reloadctl.client.render"],
        ),
        (
            "reloadctl.agent.server",
            False,
            "import importlib\nm = importlib.import_module('reloadctl.client.fanout')\n",
            ["reloadctl.client.fanout"],
        ),
        ("reloadctl.client", True, "from .. import agent\n", ["reloadctl.agent"]),
        ("reloadctl.client.cli", False, "from ..agent import start\n", ["reloadctl.agent.start"]),
        (
            "reloadctl.proto.codec",
            False,
            "from reloadctl import transport\n",
            ["reloadctl.transport"],
        ),
        (
            "reloadctl.transport",
            False,
            "from reloadctl.agent import config\n",
            ["reloadctl.agent.config"],
        ),
        (
            "reloadctl.errors",
            False,
            "from reloadctl.results import FAILED\n",
            ["reloadctl.results.FAILED"],
        ),
        ("reloadctl.results", False, "from . import errors\n", ["reloadctl.errors"]),
    ],
)
def test_the_checker_sees_broken_arrows(
    module: str, is_package: bool, source: str, expected: list[str]
) -> None:
    imports = list(imports_of(source, module, is_package))
    bad = arrow_violations(module, imports)
    assert [line.split(" imports ")[1].split(" (")[0] for line in bad] == expected


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("reloadctl.agent.engine.batch", "from reloadctl.agent.engine import history\n"),
        ("reloadctl.agent.engine.batch", "from . import history\nimport os\n"),
        ("reloadctl.agent.server", "from reloadctl import transport\nfrom ..proto import auth\n"),
        ("reloadctl.client.connection", "from reloadctl import transport\n"),
        ("reloadctl.transport", "from reloadctl.proto import codec\n"),
    ],
)
def test_the_checker_lets_good_arrows_pass(module: str, source: str) -> None:
    assert arrow_violations(module, list(imports_of(source, module, False))) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("conn._config['x'] = 1\n", ["_config"]),
        ("root._connect(channel, {})\n", ["_connect"]),
        ("server._listen()\n", ["_listen"]),
        ("n = chan.FRAME_HEADER.size\n", ["FRAME_HEADER"]),
        ("conn._channel.compress = False\n", ["_channel"]),
        ("if c._closed or c._recvlock: pass\n", ["_closed", "_recvlock"]),
        ("self._closed = True\n", []),  # our own class's own attribute
        ("from rpyc.core.protocol import Connection\nself._config = {}\n", ["_config"]),
        ("x.closed\n", []),
    ],
)
def test_the_checker_sees_rpyc_internals(source: str, expected: list[str]) -> None:
    assert [name for name, _ in rpyc_internals_named(source)] == expected
