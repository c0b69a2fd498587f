"""reloadctl.client.push: module names to files as the import system maps them, stable reads,
digests, the size limit, local syntax checks, and the version-mismatch lines of status."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from reloadctl.client.push import (
    check_syntax,
    collect,
    import_roots,
    read_source,
    version_mismatches,
)
from reloadctl.errors import PushError, PushSourceNotFound
from reloadctl.proto.messages import AgentInfo
from reloadctl.results import PatchedModule


def tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_a_package_ships_its_whole_tree_and_a_module_only_its_file(tmp_path: Path) -> None:
    tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "A = 1\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/b.py": "B = 1\n",
            "pkg/nsdir/c.py": "C = 1\n",  # no __init__.py: not a regular subpackage
            "pkg/__pycache__/a.cpython-311.pyc": "junk",
            "pkg/not-a-name.py": "",
            "solo.py": "S = 1\n",
        },
    )
    bundle = collect(["pkg", "solo"], [tmp_path])
    assert [f.module for f in bundle.files] == ["pkg", "pkg.a", "pkg.sub", "pkg.sub.b", "solo"]
    assert [f.path for f in bundle.files] == [
        "pkg/__init__.py",
        "pkg/a.py",
        "pkg/sub/__init__.py",
        "pkg/sub/b.py",
        "solo.py",
    ]
    assert bundle.trees == ("pkg",)
    assert [f.is_package for f in bundle.files] == [True, False, True, False, False]
    assert bundle.size == len("A = 1\nB = 1\nS = 1\n")
    only = collect(["pkg.a"], [tmp_path])
    assert [f.module for f in only.files] == ["pkg.a"] and only.trees == ()


def test_roots_are_searched_in_order_and_a_package_wins_over_a_module(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    tree(first, {"m.py": "X = 'first'\n"})
    tree(second, {"m.py": "X = 'second'\n", "both/__init__.py": "P = 1\n", "both.py": "M = 1\n"})
    assert collect(["m"], [first, second]).files[0].source == "X = 'first'\n"
    assert collect(["m"], [second, first]).files[0].source == "X = 'second'\n"
    assert collect(["both"], [second]).files[0].path == "both/__init__.py"


def test_a_name_without_a_file_names_the_roots(tmp_path: Path) -> None:
    with pytest.raises(PushSourceNotFound, match=r"nosuch\.mod: no nosuch/mod\.py or .* under"):
        collect(["nosuch.mod"], [tmp_path])
    with pytest.raises(PushSourceNotFound, match="not a module name"):
        collect(["bad-name"], [tmp_path])


def test_text_is_decoded_like_the_import_system_and_hashed_as_the_engine_does(
    tmp_path: Path,
) -> None:
    path = tmp_path / "latin.py"
    path.write_bytes(b"# -*- coding: latin-1 -*-\r\nNAME = '\xe9'\r\n")
    f = read_source(path, "latin", "latin.py", False)
    assert f.source == "# -*- coding: latin-1 -*-\nNAME = '\u00e9'\n"
    assert f.sha256 == hashlib.sha256(f.source.encode("utf-8")).hexdigest()
    (tmp_path / "bad.py").write_bytes(b"X = '\xff'\n")
    with pytest.raises(PushError, match="cannot decode"):
        collect(["bad"], [tmp_path])


def test_the_size_limit_is_a_clear_error(tmp_path: Path) -> None:
    tree(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "x" * 600, "pkg/b.py": "y" * 600})
    assert collect(["pkg"], [tmp_path], limit=1200).size == 1200
    with pytest.raises(PushError, match=r"over its size limit: more than 1000 bytes"):
        collect(["pkg"], [tmp_path], limit=1000)


def test_a_file_rewritten_while_read_gives_one_consistent_version_or_an_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "busy.py"
    versions = [f"X = {i!r}\n" + "#" * (i * 997 % 50_000) for i in range(40)]
    path.write_text(versions[0])
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            path.write_text(versions[i % len(versions)])
            i += 1

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    seen = errors = 0
    try:
        for _ in range(200):
            try:
                f = read_source(path, "busy", "busy.py", False)
            except PushError as exc:
                assert "kept changing while it was read" in str(exc)
                errors += 1
                continue
            seen += 1
            # never a mix of two versions; "" is the instant between truncate and write,
            # which is a real state of the file (an editor's non-atomic save shows it too)
            assert f.source in versions or f.source == ""
            assert f.sha256 == hashlib.sha256(f.source.encode()).hexdigest()
    finally:
        stop.set()
        t.join(5)
    assert seen + errors == 200


def test_check_syntax_reports_file_and_line(tmp_path: Path) -> None:
    files = {"pkg/__init__.py": "", "pkg/ok.py": "X = 1\n", "pkg/bad.py": "X = 1\ndef f(:\n"}
    tree(tmp_path, files)
    lines = check_syntax(collect(["pkg"], [tmp_path]))
    assert len(lines) == 1 and lines[0].startswith("pkg/bad.py:2: SyntaxError:")


def test_import_roots_climb_out_of_packages(tmp_path: Path) -> None:
    tree(tmp_path, {"src/pkg/__init__.py": "", "src/pkg/inner/__init__.py": "", "src/top.py": ""})
    src = (tmp_path / "src").resolve()
    assert import_roots([tmp_path / "src/pkg/inner"]) == [src]
    assert import_roots([tmp_path / "src/top.py"]) == [src]


def _info(*patched: PatchedModule) -> AgentInfo:
    return AgentInfo(1, "p", "3.11.7", "0", 0.0, 0.0, patched=patched)


def test_version_mismatches_name_each_version_and_its_targets() -> None:
    pushed = PatchedModule("m", 1, 0.0, True, origin="push:aaaaaaaaaaaa", digest="a" * 64)
    disk = PatchedModule("m", 1, 0.0, False, origin="disk", digest="b" * 64)
    same = [("t1", _info(pushed)), ("t2", _info(pushed))]
    assert version_mismatches(same) == []
    lines = version_mismatches([*same, ("t3", _info(disk)), ("t4", _info())])
    assert lines == [
        "m: targets run different versions: push:aaaaaaaaaaaa on 2 (t1, t2); "
        "disk:bbbbbbbbbbbb on 1 (t3); not patched on 1 (t4)"
    ]


def test_a_target_that_cannot_say_its_version_is_not_a_version_of_its_own() -> None:
    # a protocol-1 agent reports a patched module without origin or digest
    pushed = PatchedModule("m", 1, 0.0, True, origin="push:aaaaaaaaaaaa", digest="a" * 64)
    old = PatchedModule("m", 3, 0.0, None)
    assert version_mismatches([("t1", _info(pushed)), ("t2", _info(old))]) == []
    assert version_mismatches([("t1", _info(old)), ("t2", _info(old))]) == []
    lines = version_mismatches([("t1", _info(pushed)), ("t2", _info(old)), ("t3", _info())])
    assert lines == [
        "m: targets run different versions: push:aaaaaaaaaaaa on 1 (t1); not patched on 1 (t3)"
    ]
