"""The engine is safe to embed: importing it loads none of the CLI's or transport's libraries
and writes nothing on stdout/stderr while it reloads."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_engine_import_and_reload_stay_light_and_silent(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "light_mod_rl.py").write_text("def f():\n    return 1\n")
    script = textwrap.dedent(
        """
        import sys, os
        sys.dont_write_bytecode = True
        import light_mod_rl
        from reloadctl.agent.engine import reload_modules
        with open("light_mod_rl.py", "w") as fh:
            fh.write("def f():\\n    return 2\\n")
        st = os.stat("light_mod_rl.py")
        os.utime("light_mod_rl.py", (st.st_atime + 5, st.st_mtime + 5))
        (r,) = reload_modules(["light_mod_rl"])
        assert r.status == "reloaded" and light_mod_rl.f() == 2, r
        (r,) = reload_modules(["sys"])
        assert r.status == "refused"
        heavy = [m for m in ("rpyc", "typer", "rich", "pydantic", "click") if m in sys.modules]
        assert not heavy, heavy
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
