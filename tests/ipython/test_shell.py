"""The extension in a real IPython terminal shell: ``ipython`` reading cells from stdin.

Each test types cells into a fresh ``ipython --simple-prompt`` (one line, one cell, as a
user at the prompt) whose cells edit module files between them, and reads what the shell
printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentkit import short_tmpdir

IPYTHON = str(Path(sys.executable).with_name("ipython"))


@pytest.fixture
def workdir() -> Iterator[Path]:
    with short_tmpdir() as d:
        (d / "ipythondir").mkdir()
        yield d


def run_ipython(workdir: Path, cells: list[str], timeout: float = 60) -> tuple[str, str]:
    """Type ``cells`` into a real IPython shell; returns (stdout, stderr)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "IPYTHONDIR": str(workdir / "ipythondir"),
        "PYTHONPATH": str(workdir),
        "XDG_RUNTIME_DIR": str(workdir),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    script = "\n".join([*cells, "exit", ""])
    proc = subprocess.run(
        [
            IPYTHON,
            "--simple-prompt",
            "--no-banner",
            "--quick",
            "--colors=NoColor",
            "--HistoryManager.enabled=False",
        ],
        input=script,
        capture_output=True,
        text=True,
        env=env,
        cwd=workdir,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr


def write(path: Path, source: str) -> str:
    """A cell that rewrites ``path`` with ``source`` (as an editor would save it)."""
    return f"open({str(path)!r}, 'w').write({textwrap.dedent(source)!r}); None"


def test_mode_2_patches_functions_and_instances_before_the_next_cell(workdir: Path) -> None:
    mod = workdir / "shapes.py"
    mod.write_text(
        "class Sq:\n    def area(self):\n        return 1\n\ndef f():\n    return 'v1'\n"
    )
    out, err = run_ipython(
        workdir,
        [
            "%load_ext reloadctl.ipython",
            "%autoreload 2",
            "from shapes import Sq, f",
            "s = Sq()",
            "print('before', f(), s.area())",
            write(
                mod,
                "class Sq:\n    def area(self):\n        return 4\n\ndef f():\n    return 'v2'\n",
            ),
            "print('after', f(), s.area(), type(s) is Sq)",
        ],
    )
    assert "before v1 1" in out
    assert "after v2 4 True" in out
    assert "autoreload of" not in err


def test_a_syntax_error_is_one_line_with_file_and_line_and_is_not_repeated(workdir: Path) -> None:
    mod = workdir / "calc.py"
    mod.write_text("def f():\n    return 1\n")
    out, err = run_ipython(
        workdir,
        [
            "%load_ext reloadctl.ipython",
            "%autoreload 2",
            "import calc",
            write(mod, "def f():\n    return (\n"),
            "print('broken', calc.f())",
            "print('still', calc.f())",
            write(mod, "def f():\n    return 3\n"),
            "print('fixed', calc.f())",
        ],
    )
    assert "broken 1" in out and "still 1" in out and "fixed 3" in out
    lines = [line for line in (out + err).splitlines() if "[autoreload of calc failed:" in line]
    assert len(lines) == 1, out + err
    assert f"{mod}:2: SyntaxError" in lines[0]


def test_changed_modules_reload_in_one_transaction(workdir: Path) -> None:
    """Two edited modules, one broken: neither is applied; saving the fix applies both."""
    (workdir / "a.py").write_text("X = 1\n")
    (workdir / "b.py").write_text("def g():\n    return 'b1'\n")
    out, err = run_ipython(
        workdir,
        [
            "%load_ext reloadctl.ipython",
            "%autoreload 2",
            "import a, b",
            # one cell saves both files, as a refactoring would
            write(workdir / "a.py", "X = 2\n")
            + ";"
            + write(workdir / "b.py", "def g():\n    return 'b2'\nraise RuntimeError('boom')\n"),
            "print('state', a.X, b.g())",
            "print('again', a.X, b.g())",
            write(workdir / "b.py", "def g():\n    return 'b2'\n"),
            "print('final', a.X, b.g())",
        ],
    )
    assert "state 1 b1" in out, out + err
    assert "again 1 b1" in out
    assert "final 2 b2" in out
    combined = out + err
    assert combined.count("[autoreload of b failed:") == 1
    assert "RuntimeError: boom" in combined


def test_print_shows_what_was_patched(workdir: Path) -> None:
    mod = workdir / "tools.py"
    mod.write_text("def f():\n    return 1\n")
    out, _ = run_ipython(
        workdir,
        [
            "%load_ext reloadctl.ipython",
            "%autoreload 2 --print",
            "import tools",
            write(mod, "def f():\n    return 2\n\ndef g():\n    return 3\n"),
            "print('got', tools.f(), tools.g())",
        ],
    )
    assert "Reloading 'tools'." in out
    assert "patched tools.f" in out and "added tools.g" in out
    assert "got 2 3" in out


def test_mode_3_follows_aliases_and_star_imports_in_the_user_namespace(workdir: Path) -> None:
    mod = workdir / "conf.py"
    mod.write_text("LIMIT = 1\nNAME = 'a'\n")
    out, err = run_ipython(
        workdir,
        [
            "%load_ext reloadctl.ipython",
            "%autoreload 3",
            "from conf import LIMIT as lim",
            "from conf import *",
            "NAME = 'mine'",
            write(mod, "LIMIT = 5\nNAME = 'b'\nEXTRA = 7\n"),
            "print('values', lim, LIMIT, NAME, EXTRA)",
        ],
    )
    # the alias and the star-imported name follow; the name the user reassigned is kept;
    # the new public name arrives
    assert "values 5 5 mine 7" in out, out + err


def test_explicit_mode_reloads_only_aimported_modules(workdir: Path) -> None:
    (workdir / "one.py").write_text("V = 1\n")
    (workdir / "two.py").write_text("V = 1\n")
    out, err = run_ipython(
        workdir,
        [
            "%load_ext reloadctl.ipython",
            "%autoreload 1",
            "%aimport one",
            "import two",
            "%aimport",
            write(workdir / "one.py", "V = 2\n"),
            write(workdir / "two.py", "V = 2\n"),
            "print('values', one.V, two.V)",
        ],
    )
    assert "Modules to reload:\none" in out
    assert "values 2 1" in out, out + err


def test_site_packages_are_not_watched_unless_aimported(workdir: Path) -> None:
    out, _ = run_ipython(
        workdir,
        [
            "%load_ext reloadctl.ipython",
            "%autoreload 2",
            "import IPython, json, sys",
            "ext = get_ipython().magics_manager.registry['AutoreloadMagics']",
            "w = set(ext._reloader.stamps.watched())",
            "print('watched', 'IPython' in w, 'json' in w)",
            "%aimport json",
            "print('marked', 'json' in ext._reloader.stamps.watched())",
        ],
    )
    assert "watched False False" in out
    assert "marked True" in out


def test_reloadctl_magic_starts_reports_and_stops_the_agent(workdir: Path) -> None:
    sockets = repr(f"{workdir}/reloadctl/*.sock")
    out, err = run_ipython(
        workdir,
        [
            "%load_ext reloadctl.ipython",
            "%reloadctl agent",
            f"import glob; print('sockets', len(glob.glob({sockets})))",
            "%reloadctl status",
            "%reloadctl stop",
            f"print('after stop', len(glob.glob({sockets})))",
            "%reloadctl agent tcp://127.0.0.1:0",
            "%reloadctl frobnicate",
        ],
    )
    assert f"reloadctl agent listening at unix://{workdir}/reloadctl/" in out
    assert "sockets 1" in out
    assert "agent: unix://" in out and "autoreload: off" in out
    assert "after stop 0" in out
    # bad lines are one-line usage errors, not tracebacks
    assert "UsageError: reloadctl agent: refusing to listen on tcp://127.0.0.1:0" in out + err
    assert "UsageError: usage: %reloadctl agent [ADDR] | status | stop" in out + err
    assert "Traceback" not in out + err


def test_unload_stops_checking(workdir: Path) -> None:
    mod = workdir / "late.py"
    mod.write_text("V = 1\n")
    out, _ = run_ipython(
        workdir,
        [
            "%load_ext reloadctl.ipython",
            "%autoreload 2",
            "import late",
            "%unload_ext reloadctl.ipython",
            write(mod, "V = 2\n"),
            "print('value', late.V)",
        ],
    )
    assert "value 1" in out


def test_log_records_reloads_and_failures_in_the_autoreload_logger(workdir: Path) -> None:
    mod = workdir / "logged.py"
    mod.write_text("def f():\n    return 1\n")
    out, err = run_ipython(
        workdir,
        [
            "import logging, sys; logging.basicConfig(stream=sys.stdout, level=logging.INFO, "
            "format='LOG %(name)s %(levelname)s %(message)s')",
            "%load_ext reloadctl.ipython",
            "%autoreload 2 --log --hide-errors",
            "import logged",
            write(mod, "def f():\n    return 2\n"),
            "print('v', logged.f())",
            write(mod, "def f(:\n"),
            "print('v', logged.f())",
        ],
    )
    assert "LOG autoreload INFO Reloading 'logged'." in out
    assert "LOG autoreload INFO   logged: patched logged.f" in out
    assert "LOG autoreload WARNING [autoreload of logged failed: " in out
    assert "v 2" in out and out.count("v 2") == 2
    assert "[autoreload of" not in err  # --hide-errors: the log only


def test_a_failed_step_waits_for_its_own_files_and_an_unrelated_save_still_applies(
    workdir: Path,
) -> None:
    (workdir / "a.py").write_text("X = 1\n")
    (workdir / "b.py").write_text("Y = 1\n")
    (workdir / "c.py").write_text("Z = 1\n")
    out, err = run_ipython(
        workdir,
        [
            "%load_ext reloadctl.ipython",
            "%autoreload 2",
            "import a, b, c",
            write(workdir / "a.py", "X = 2\n") + ";" + write(workdir / "b.py", "Y = (\n"),
            "print('step', a.X, b.Y, c.Z)",
            write(workdir / "c.py", "Z = 2\n"),
            "print('unrelated', a.X, b.Y, c.Z)",
            write(workdir / "b.py", "Y = 2\n"),
            "print('fixed', a.X, b.Y, c.Z)",
        ],
    )
    assert "step 1 1 1" in out
    assert "unrelated 1 1 2" in out  # c applied alone; a and b wait for their files
    assert "fixed 2 2 2" in out  # saving b retried the whole failed step
    assert (out + err).count("[autoreload of b failed:") == 1
