"""The apps lab in its quick form: one realistic edit per framework app, applied to the
running app and compared with a restart (labs/apps/run.py --quick), in real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "labs" / "apps" / "run.py"
#: app -> what its quick edit must give (never "SILENTLY DIFFERENT").
EXPECTED = {
    "sqlalchemy": "matches restart",  # a model method edited: held instance and session
    "flask": "matches restart",  # a route added: served by the running werkzeug server
    "pydantic": "warned",  # a field added: held instances lack it, said so
    "click": "matches restart",  # a command added to the held group
    "fastapi": "matches restart",  # a route added: served by the running uvicorn
    "celery": "matches restart",  # a task body edited: the running worker runs it
    "django": "matches restart",  # a view body edited: served by the running wsgiref
    "domain": "matches restart",  # an attrs method edited
}


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("app", sorted(EXPECTED))
def test_quick_edit(app: str) -> None:
    pytest.importorskip(app if app not in ("domain",) else "attrs")
    out = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--json", app],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert lines, out.stderr[-3000:]
    *edits, summary = lines
    assert len(edits) == 1, lines
    (edit,) = edits
    assert edit["outcome"] == EXPECTED[app], edit
    assert edit["live"] and edit["live"].get("ok"), edit  # the app answered after the reload
    assert out.returncode == 0, summary
