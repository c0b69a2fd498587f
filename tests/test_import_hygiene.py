"""Importing the agent side loads nothing heavy: checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN = ("typer", "rich", "pydantic", "click", "rpyc")


@pytest.mark.parametrize(
    "module",
    ["reloadctl.agent", "reloadctl.agent.auto", "reloadctl.agent.lifecycle", "reloadctl.secrets"],
)
def test_agent_import_loads_nothing_heavy(module: str) -> None:
    code = (
        f"import json, sys; import {module}; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout))
    assert "reloadctl" in loaded
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))


def test_connection_imports_rpyc_lazily() -> None:
    code = "import sys; import reloadctl.client.connection; print('rpyc' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
