"""Tests for reloadctl.client.watch: file -> module mapping, and a real watcher on real files."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reloadctl.client.watch import (
    INSTALL_HINT,
    _roots,
    module_name_for,
    modules_for_changes,
    watch_modules,
)
from reloadctl.errors import ConfigError

# -- pure mapping -------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """src/{top.py, pkg/{__init__,sub}.py, pkg/inner/{__init__,deep}.py, ns/mod.py, bad-dir/x.py}"""
    src = tmp_path / "src"
    for rel in [
        "top.py",
        "pkg/__init__.py",
        "pkg/sub.py",
        "pkg/inner/__init__.py",
        "pkg/inner/deep.py",
        "ns/mod.py",
        "bad-dir/x.py",
        "pkg/notes.txt",
    ]:
        f = src / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("X = 1\n")
    return src.resolve()


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        ("top.py", "top"),
        ("pkg/__init__.py", "pkg"),
        ("pkg/sub.py", "pkg.sub"),
        ("pkg/inner/__init__.py", "pkg.inner"),
        ("pkg/inner/deep.py", "pkg.inner.deep"),
        ("ns/mod.py", "ns.mod"),  # namespace package below a root
        ("bad-dir/x.py", None),  # not importable by a dotted name
        ("pkg/notes.txt", None),
    ],
)
def test_module_name_for_a_root(tree: Path, rel: str, expected: str | None) -> None:
    assert module_name_for(tree / rel, [tree]) == expected


@pytest.mark.parametrize("watched", ["", "pkg", "pkg/inner", "pkg/inner/deep.py", "top.py"])
def test_watching_inside_a_package_still_names_from_the_import_root(
    tree: Path, watched: str
) -> None:
    roots = _roots([tree / watched])
    assert roots == [tree]
    assert module_name_for(tree / "pkg/inner/deep.py", roots) == "pkg.inner.deep"


def test_file_outside_every_root_is_ignored(tree: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.py"
    other.write_text("")
    assert module_name_for(other.resolve(), [tree]) is None


def test_deepest_root_wins(tree: Path) -> None:
    # Both src/ and src/ns/ watched as roots: ns/ is not a package, so it is its own root.
    roots = _roots([tree, tree / "ns"])
    assert roots[0] == tree / "ns"
    assert module_name_for(tree / "ns/mod.py", roots) == "mod"


def test_batch_mapping_dedups_sorts_and_drops_deleted_and_non_py(tree: Path) -> None:
    gone = tree / "pkg" / "gone.py"
    changes = [
        (2, str(tree / "pkg/sub.py")),
        (1, str(tree / "pkg/sub.py")),  # atomic save: same file twice
        (2, str(tree / "pkg/__init__.py")),
        (2, str(tree / "pkg/notes.txt")),
        (3, str(gone)),  # deleted
        (1, str(tree / "top.py")),
    ]
    assert modules_for_changes(changes, [tree]) == ["pkg", "pkg.sub", "top"]


# -- argument errors ----------------------------------------------------------------------


def test_no_paths_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        watch_modules([], lambda names: None)


def test_missing_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file or directory"):
        watch_modules([tmp_path / "nope"], lambda names: None)


def test_missing_watchfiles_says_how_to_install(tmp_path: Path) -> None:
    # A real interpreter where `import watchfiles` fails, as it does without the extra.
    code = (
        "import sys, pathlib\n"
        "sys.modules['watchfiles'] = None\n"
        "from reloadctl.client.watch import watch_modules\n"
        "from reloadctl.errors import ConfigError\n"
        "try:\n"
        f"    watch_modules([pathlib.Path({str(tmp_path)!r})], print)\n"
        "except ConfigError as exc:\n"
        "    print('ConfigError:', exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == f"ConfigError: {INSTALL_HINT}"
    assert "reloadctl[watch]" in INSTALL_HINT


# -- a real watcher on real files ---------------------------------------------------------


class Recorder:
    """Collects batches from the watcher thread; waits for a wanted batch with a deadline."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self._cond = threading.Condition()

    def __call__(self, names: list[str]) -> None:
        with self._cond:
            self.batches.append(names)
            self._cond.notify_all()

    def wait_for(
        self, predicate: Callable[[list[str]], bool], poke: Callable[[], None], timeout: float
    ) -> list[str]:
        """Call ``poke`` (a file write) until a batch matches: the watcher may not be ready yet."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while time.monotonic() < deadline:
                for batch in self.batches:
                    if predicate(batch):
                        return batch
                self._cond.release()
                try:
                    poke()
                finally:
                    self._cond.acquire()
                self._cond.wait(timeout=0.3)
        raise AssertionError(f"no matching batch within {timeout}s; got {self.batches}")


@pytest.fixture
def running_watch(tree: Path) -> Iterator[tuple[Recorder, Callable[..., threading.Thread]]]:
    recorder = Recorder()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    errors: list[BaseException] = []

    def start(*paths: Path, **kwargs: object) -> threading.Thread:
        def run() -> None:
            try:
                watch_modules(list(paths), recorder, stop=stop, **kwargs)  # type: ignore[arg-type]
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=run, name="test-watch", daemon=True)
        t.start()
        threads.append(t)
        return t

    yield recorder, start
    stop.set()
    for t in threads:
        t.join(timeout=5)
        assert not t.is_alive(), "watch_modules did not return after stop was set"
    assert errors == []


def _touch(*files: Path) -> Callable[[], None]:
    counter = [0]

    def poke() -> None:
        counter[0] += 1
        for f in files:
            f.write_text(f"X = {counter[0]}\n")

    return poke


def test_saving_a_submodule_reports_its_dotted_name(running_watch, tree: Path) -> None:
    recorder, start = running_watch
    start(tree)
    batch = recorder.wait_for(lambda b: "pkg.sub" in b, _touch(tree / "pkg/sub.py"), 10)
    assert batch == ["pkg.sub"]


def test_two_files_saved_together_arrive_in_one_batch(running_watch, tree: Path) -> None:
    recorder, start = running_watch
    start(tree / "pkg")  # watching the package dir: names still come from src/
    batch = recorder.wait_for(
        lambda b: "pkg" in b or "pkg.inner.deep" in b,
        _touch(tree / "pkg/__init__.py", tree / "pkg/inner/deep.py"),
        10,
    )
    assert batch == ["pkg", "pkg.inner.deep"]


def test_editor_style_atomic_save_counts_and_noise_does_not(running_watch, tree: Path) -> None:
    recorder, start = running_watch
    start(tree)

    def atomic_save() -> None:
        (tree / "pkg/notes.txt").write_text("noise\n")
        tmp = tree / "pkg" / ".sub.py.swp"
        tmp.write_text("X = 2\n")
        os.replace(tmp, tree / "pkg/sub.py")

    batch = recorder.wait_for(lambda b: "pkg.sub" in b, atomic_save, 10)
    assert batch == ["pkg.sub"]
    assert all(b == ["pkg.sub"] for b in recorder.batches)


def test_deleting_a_module_is_not_a_change(running_watch, tree: Path) -> None:
    recorder, start = running_watch
    start(tree)
    # Prove the watcher is live, then delete a file and save another: only the save counts.
    recorder.wait_for(lambda b: b == ["top"], _touch(tree / "top.py"), 10)
    before = len(recorder.batches)
    (tree / "ns/mod.py").unlink()
    time.sleep(0.3)
    recorder.wait_for(lambda b: "pkg.sub" in b, _touch(tree / "pkg/sub.py"), 10)
    assert all("ns.mod" not in b for b in recorder.batches[before:])


def test_polling_backend_works_too(running_watch, tree: Path) -> None:
    recorder, start = running_watch
    start(tree, force_polling=True)
    batch = recorder.wait_for(lambda b: "top" in b, _touch(tree / "top.py"), 15)
    assert batch == ["top"]


def test_stop_returns_promptly(tree: Path) -> None:
    stop = threading.Event()
    t = threading.Thread(
        target=watch_modules, args=([tree], lambda n: None), kwargs={"stop": stop}, daemon=True
    )
    t.start()
    time.sleep(0.3)
    began = time.monotonic()
    stop.set()
    t.join(timeout=5)
    assert not t.is_alive()
    assert time.monotonic() - began < 1.5


def test_exception_in_callback_ends_the_watch(tree: Path) -> None:
    stop = threading.Event()
    raised: list[BaseException] = []

    def boom(names: list[str]) -> None:
        raise RuntimeError(f"callback failed for {names}")

    def run() -> None:
        try:
            watch_modules([tree], boom, stop=stop)
        except RuntimeError as exc:
            raised.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    poke = _touch(tree / "top.py")
    deadline = time.monotonic() + 10
    while t.is_alive() and time.monotonic() < deadline:
        poke()
        t.join(timeout=0.3)
    stop.set()
    t.join(timeout=5)
    assert [str(e) for e in raised] == ["callback failed for ['top']"]
