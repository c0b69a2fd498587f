"""The libraries of the real-code lab: two consecutive releases each, where their code and
their test suite live in the sdist, and what their tests need installed."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Library:
    """One library: its PyPI name, the two releases, the top-level importable names, where
    they live in the sdist (``src`` or ``.``), the test paths and the test dependencies."""

    name: str
    old: str
    new: str
    packages: tuple[str, ...]
    tests: tuple[str, ...]
    root: str = "."
    deps: tuple[str, ...] = ()
    #: extra pytest arguments (deselect tests that need the network or a missing tool)
    pytest_args: tuple[str, ...] = field(default_factory=tuple)


LIBRARIES: tuple[Library, ...] = (
    Library("h11", "0.14.0", "0.15.0", ("h11",), ("h11/tests",)),
    Library("six", "1.16.0", "1.17.0", ("six",), ("test_six.py",)),
    Library("itsdangerous", "2.1.2", "2.2.0", ("itsdangerous",), ("tests",), "src", ("freezegun",)),
    Library("click", "8.1.7", "8.1.8", ("click",), ("tests",), "src"),
    Library("jinja2", "3.1.4", "3.1.5", ("jinja2",), ("tests",), "src", ("markupsafe", "trio")),
    Library(
        "pyparsing",
        "3.1.1",
        "3.1.2",
        ("pyparsing",),
        ("tests",),
        ".",
        ("railroad-diagrams", "jinja2"),
    ),
    Library("tomlkit", "0.12.5", "0.13.0", ("tomlkit",), ("tests",), ".", ("pyyaml",)),
    Library("marshmallow", "3.26.1", "4.0.0", ("marshmallow",), ("tests",), "src", ("simplejson",)),
    Library("boltons", "24.0.0", "24.1.0", ("boltons",), ("tests",)),
    Library("tenacity", "8.5.0", "9.0.0", ("tenacity",), ("tests",), ".", ("tornado", "typeguard")),
    Library(
        "humanize", "4.9.0", "4.10.0", ("humanize",), ("tests",), "src", ("freezegun", "coverage")
    ),
    Library("sqlparse", "0.4.4", "0.5.0", ("sqlparse",), ("tests",)),
    Library("tabulate", "0.8.10", "0.9.0", ("tabulate",), ("test",), ".", ("wcwidth",)),
    Library("markdown", "3.6", "3.7", ("markdown",), ("tests",), ".", ("pyyaml",)),
    Library("pyflakes", "3.1.0", "3.2.0", ("pyflakes",), ("pyflakes/test",)),
    Library("decorator", "5.1.0", "5.1.1", ("decorator",), ("src/tests/test.py",), "src"),
)

#: The quick subset the test suite runs (small, only pytest needed).
QUICK: tuple[str, ...] = ("h11", "six")

#: What every worker needs in the lab venv, besides each library's own test deps.
BASE: tuple[str, ...] = ("pytest>=8,<9", "ipython>=8,<10", "jurigged>=0.6,<0.7")


def by_name() -> dict[str, Library]:
    """The libraries keyed by PyPI name."""
    return {lib.name: lib for lib in LIBRARIES}
