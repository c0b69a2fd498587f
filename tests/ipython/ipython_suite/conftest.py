"""Runs IPython's own autoreload test suite against reloadctl.ipython.

``test_zzz_autoreload.py`` is IPython 9.18.1's ``tests/test_zzz_autoreload.py``, copied
verbatim from the sdist (``pip download --no-deps --no-binary :all: ipython==9.18.1``; the
wheel ships no tests); its license is ``LICENSE.IPython`` beside it (BSD-3-Clause). Its
sha256 is checked below, so an edit fails the run instead of passing silently.

The suite imports ``IPython.extensions.autoreload``; this conftest binds that module name to
``reloadctl.ipython`` while the suite is collected and run (and puts IPython's back after),
so every ``AutoreloadMagics``/``ImportFromTracker`` the tests build is ours. Tests that
cannot apply are listed in ``NOT_APPLICABLE`` with the reason and skipped from here.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import IPython
import pytest

import reloadctl.ipython

SUITE = Path(__file__).with_name("test_zzz_autoreload.py")
SUITE_SHA256 = "f9c2fc17f3891357b3e75d8616f8c3a5afffd624c1123ef56723cce9dc356f94"
TARGET = "IPython.extensions.autoreload"

#: test name -> why it cannot apply to reloadctl.ipython
NOT_APPLICABLE: dict[str, str] = {}

if IPython.version_info[:3] != (9, 18, 1):
    # the suite is the release's own: with another IPython (Python 3.10 gets IPython 8 from
    # the ranges) its fixtures do not match the installed IPython. constraints.txt pins 9.18.1.
    collect_ignore = [SUITE.name]

if hashlib.sha256(SUITE.read_bytes()).hexdigest() != SUITE_SHA256:
    raise RuntimeError(f"{SUITE} differs from IPython 9.18.1's test_zzz_autoreload.py")

_previous = sys.modules.get(TARGET)
# collection imports the suite module now, before any fixture runs
sys.modules[TARGET] = reloadctl.ipython  # type: ignore[assignment]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        reason = NOT_APPLICABLE.get(getattr(item, "originalname", item.name))
        if reason is not None and item.path == SUITE:
            item.add_marker(pytest.mark.skip(reason=f"not applicable: {reason}"))


def pytest_collection_finish(session: pytest.Session) -> None:
    if _previous is None:
        sys.modules.pop(TARGET, None)
    else:
        sys.modules[TARGET] = _previous


@pytest.fixture(autouse=True)
def _ours(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The suite's in-test imports (``from IPython.extensions.autoreload import
    ImportFromTracker``) get reloadctl.ipython too."""
    monkeypatch.setitem(sys.modules, TARGET, reloadctl.ipython)
    yield
