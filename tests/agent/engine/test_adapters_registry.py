"""The adapter extension point: loaded only with their framework, never importing one, and
an adapter's own exception is a ``failed`` reload with nothing changed."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
from conftest import Kit

from reloadctl.agent.engine import adapters

FRAMEWORKS = (
    "flask",
    "werkzeug",
    "sqlalchemy",
    "fastapi",
    "starlette",
    "django",
    "celery",
    "pydantic",
    "click",
    "typer",
    "attrs",
    "attr",
)

PROBE = """
import json, sys, tempfile, pathlib, importlib
import reloadctl.agent
from reloadctl.agent.engine import adapters
for _fw, module, _cls in adapters.ADAPTERS:
    importlib.import_module(module)
d = tempfile.mkdtemp()
pathlib.Path(d, "plain_mod.py").write_text("def f():\\n    return 1\\n")
sys.path.insert(0, d)
import plain_mod
pathlib.Path(d, "plain_mod.py").write_text("def f():\\n    return 2\\n")
(r,) = reloadctl.agent.reload_modules(["plain_mod"])
print(json.dumps([r.status, plain_mod.f(), sorted({m.split('.')[0] for m in sys.modules})]))
"""


def test_agent_and_every_adapter_module_import_no_framework() -> None:
    """Rule 1: ``import reloadctl.agent``, every adapter module, and a reload in a process
    without frameworks load none of them."""
    out = subprocess.run(
        [sys.executable, "-B", "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    status, value, loaded = json.loads(out.stdout)
    assert (status, value) == ("reloaded", 2)
    assert not set(loaded) & set(FRAMEWORKS), sorted(set(loaded) & set(FRAMEWORKS))


class _Boom(adapters.Adapter):
    def begin(self, session: adapters.Session) -> bool:
        return True

    def finish(self, session: adapters.Session) -> None:
        session.namespace["VALUE"] = "damaged"
        raise KeyError("adapter bug")


class _Refuse(adapters.Adapter):
    def begin(self, session: adapters.Session) -> bool:
        return "REFUSE_ME" in session.snapshot

    def finish(self, session: adapters.Session) -> None:
        session.refuse("this change needs a restart")


@pytest.fixture
def fake_framework(monkeypatch: pytest.MonkeyPatch) -> str:
    """A loaded 'framework' module with two adapters in the registry: one raising, one
    refusing (they exercise the engine's guard, not a framework)."""
    holder = types.ModuleType("rlt_fake_adapters")
    holder.Boom = _Boom  # type: ignore[attr-defined]
    holder.Refuse = _Refuse  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rlt_fake_adapters", holder)
    monkeypatch.setattr(
        adapters,
        "ADAPTERS",
        (
            ("rlt_fake_adapters", "rlt_fake_adapters", "Refuse"),
            ("rlt_fake_adapters", "rlt_fake_adapters", "Boom"),
        ),
    )
    return "rlt_fake_adapters"


def test_adapter_exception_is_failed_with_nothing_changed(kit: Kit, fake_framework: str) -> None:
    kit.write("m", "VALUE = 1\ndef f():\n    return 1\n")
    m = kit.load("m")
    f = m.f
    kit.write("m", "VALUE = 2\ndef f():\n    return 2\ndef g():\n    return 3\n")
    result = kit.reload_one("m")
    assert result.status == "failed" and result.error is not None
    assert result.error.type == "AdapterFailed"
    assert "_Boom adapter raised KeyError" in result.error.message
    assert m.VALUE == 1 and m.f is f and f() == 1 and not hasattr(m, "g")


def test_adapter_refusal_is_refused_with_the_reason(kit: Kit, fake_framework: str) -> None:
    kit.write("m", "REFUSE_ME = 1\ndef f():\n    return 1\n")
    m = kit.load("m")
    kit.write("m", "REFUSE_ME = 1\ndef f():\n    return 2\n")
    result = kit.reload_one("m")
    assert result.status == "refused" and result.error is not None
    assert result.error.message == f"{m.__name__}: this change needs a restart"
    assert m.f() == 1


def test_refusal_in_a_batch_rolls_back_the_others(kit: Kit, fake_framework: str) -> None:
    kit.write("a", "REFUSE_ME = 1\nX = 1\n")
    kit.write("b", "Y = 1\n")
    a, b = kit.load("a"), kit.load("b")
    kit.write("a", "REFUSE_ME = 1\nX = 2\n")
    kit.write("b", "Y = 2\n")
    adapters.ADAPTERS = adapters.ADAPTERS[:1]  # the refusing one only (monkeypatched back)
    rb, ra = kit.reload("b", "a")
    assert ra.status == "refused" and rb.status == "failed"
    assert rb.error is not None and rb.error.type == "RolledBack"
    assert (a.X, b.Y) == (1, 1)
