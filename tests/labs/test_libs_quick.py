"""The real-code lab's quick subset: two small real libraries upgraded to their next
release inside a live process must pass their own test suites as in a fresh process, and
every reference held from before must run the new release (labs/libs/run.py --quick)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "labs" / "libs" / "run.py"
#: run.py's exit status when a download or the lab venv's install was impossible
UNAVAILABLE = 75


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_quick_libraries_upgrade_in_place_like_a_fresh_process(tmp_path: Path) -> None:
    out = tmp_path / "lab.json"
    proc = subprocess.run(
        [sys.executable, str(LAB), "--quick", "--methods", "ceiling,reloadctl", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1150,
        check=False,
    )
    if proc.returncode == UNAVAILABLE:
        pytest.skip(f"the lab could not download its libraries: {proc.stderr[-500:]}")
    report = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert out.exists(), report
    runs = json.loads(out.read_text())["runs"]
    assert len(runs) == 2, report
    for run in runs:
        ceiling, hot = run["methods"]["ceiling"], run["methods"]["reloadctl"]
        assert "crash" not in hot, hot["crash"]
        assert ceiling["tests"]["passed"] > 0, report
        assert hot["tests"]["passed"] == ceiling["tests"]["passed"], (run["library"], hot)
        assert hot["tests"]["not_passed"] == ceiling["tests"]["not_passed"], run["library"]
        assert hot["probes"]["total"] > 0 and hot["probes"]["ok"] == hot["probes"]["total"], hot
        assert hot["report"]["statuses"].get("failed", 0) == 0, hot["report"]
    assert proc.returncode == 0, report
