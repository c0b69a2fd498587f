"""The changed-file check (reloadctl.ipython.stamps) on real files and real imports."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from reloadctl.ipython.stamps import SourceStamps, library_dirs, source_file


@pytest.fixture
def new_module(tmp_path: Path) -> Iterator[Callable[[str], tuple[str, Path, ModuleType]]]:
    """Write and import a module with a unique name; forgotten afterwards."""
    sys.path.insert(0, str(tmp_path))
    names: list[str] = []

    def make(source: str = "X = 1\n") -> tuple[str, Path, ModuleType]:
        name = f"stampmod_{uuid.uuid4().hex[:12]}"
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        names.append(name)
        return name, path, importlib.import_module(name)

    yield make
    sys.path.remove(str(tmp_path))
    for name in names:
        sys.modules.pop(name, None)


def touch(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_first_sighting_is_recorded_then_an_edit_is_reported_once(new_module) -> None:
    stamps = SourceStamps()
    name, path, _ = new_module()
    assert stamps.changed() == []  # seen for the first time: recorded, not reported
    touch(path, "X = 2\n")
    assert stamps.changed() == [name]
    assert stamps.changed() == []


def test_an_older_mtime_counts_as_a_change(new_module) -> None:
    stamps = SourceStamps()
    name, path, _ = new_module()
    stamps.refresh()
    os.utime(path, (1_000_000, 1_000_000))
    assert stamps.changed() == [name]


def test_a_deleted_file_is_skipped_and_counts_when_it_comes_back(new_module) -> None:
    stamps = SourceStamps()
    name, path, _ = new_module()
    stamps.refresh()
    path.unlink()
    assert stamps.changed() == []
    touch(path, "X = 3\n")
    assert stamps.changed() == [name]


def test_only_and_skip(new_module) -> None:
    stamps = SourceStamps()
    a, pa, _ = new_module()
    b, pb, _ = new_module()
    stamps.refresh()
    touch(pa, "X = 2\n")
    touch(pb, "X = 2\n")
    assert stamps.changed(only=[a], skip=()) == [a]
    assert stamps.changed(skip={b}) == []
    # b's edit is still pending: skipping it did not record its stamp
    assert stamps.changed() == [b]


def test_a_name_bound_to_another_module_object_is_a_new_sighting(new_module) -> None:
    stamps = SourceStamps()
    name, path, _ = new_module()
    stamps.refresh()
    touch(path, "X = 5\n")
    del sys.modules[name]
    importlib.import_module(name)  # a fresh import of the edited file: nothing to reload
    assert stamps.changed() == []


def test_library_modules_are_not_watched_unless_named(new_module) -> None:
    import json.decoder

    assert source_file(json.decoder) is not None
    stamps = SourceStamps()
    watched = set(stamps.watched())
    assert "json.decoder" not in watched and "pytest" not in watched
    explicit: dict[str, bool] = {"json.decoder": True}
    assert "json.decoder" in SourceStamps(explicit).watched()
    assert "pytest" in SourceStamps(library=True).watched()
    assert all(d.endswith(os.sep) for d in library_dirs())


def test_reloadctl_main_and_extension_modules_are_never_watched() -> None:
    import _json  # an extension module (or builtin) without source

    watched = set(SourceStamps(library=True).watched())
    assert not any(name.split(".")[0] == "reloadctl" for name in watched)
    assert "__main__" not in watched
    assert source_file(_json) is None


def test_the_check_stats_only_watched_files(new_module, monkeypatch) -> None:
    """Rule 5: a thousand library modules cost nothing per cell; only watched files are
    stat'ed, and the module map is not rebuilt while sys.modules keeps its size."""
    stamps = SourceStamps()
    name, _, _ = new_module()
    stamps.refresh()
    calls: list[str] = []
    real_stat = os.stat

    def counting_stat(path, *args, **kwargs):
        calls.append(str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    watched = stamps.watched()
    assert stamps.changed() == []
    assert len(calls) == len(watched)
    assert any(name in call for call in calls)


def test_reloadctl_ipython_and_the_agent_import_no_ipython() -> None:
    code = (
        "import json, sys, reloadctl.ipython, reloadctl.agent\n"
        "reloadctl.agent.reload_modules(['json'])\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'IPython')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
