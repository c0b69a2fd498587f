"""The shared reloadlab runner: every scenario must pass against this engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parents[3].parent / "shared" / "reloadlab" / "run.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_all_reloadlab_scenarios_pass() -> None:
    if not RUNNER.exists():
        pytest.skip(f"{RUNNER} not found")
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "-v", "-j", "2"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "scenarios pass" in proc.stdout
