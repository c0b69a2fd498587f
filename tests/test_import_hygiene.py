"""Importing the agent side loads nothing heavy: checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FORBIDDEN = ("typer", "rich", "pydantic", "click", "rpyc", "IPython")


@pytest.mark.parametrize(
    "module",
    [
        "reloadctl.agent",
        "reloadctl.agent.auto",
        "reloadctl.agent.lifecycle",
        "reloadctl.agent.server",
        "reloadctl.transport",
        "reloadctl.secrets",
    ],
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


HOST = """
import json, sys
sys.path.insert(0, sys.argv[1])
import hosted
import reloadctl.agent
agent = reloadctl.agent.start()
print(agent.address, flush=True)
sys.stdin.readline()  # served meanwhile
print(json.dumps(sorted(sys.modules)), flush=True)
agent.stop()
"""


def test_serving_a_client_loads_no_general_purpose_stdlib(runtime_dir: Path) -> None:
    """typing, tempfile (with shutil, bz2, lzma) and hmac stay out of a host that does not
    use them: each is memory in every process that embeds the agent
    (benchmarks/agent_footprint.py). The agent serves a real status and a real reload."""
    from reloadctl.client.connection import execute
    from reloadctl.proto.messages import AgentInfo, ReloadRequest, StatusRequest

    (runtime_dir / "hosted.py").write_text("def f():\n    return 1\n")

    env = {"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(runtime_dir)}
    with subprocess.Popen(
        [sys.executable, "-c", HOST, str(runtime_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as host:
        assert host.stdin is not None and host.stdout is not None
        try:
            address = host.stdout.readline().strip()
            info = execute(address, StatusRequest(), secret=None, connect_timeout=5, timeout=10)
            assert isinstance(info, AgentInfo) and info.pid == host.pid
            (runtime_dir / "hosted.py").write_text("def f():\n    return 2\n")
            results = execute(
                address, ReloadRequest(("hosted",)), secret=None, connect_timeout=5, timeout=10
            )
            assert [r.status for r in results] == ["reloaded"]  # type: ignore[union-attr]
            host.stdin.write("\n")
            host.stdin.flush()
            loaded = set(json.loads(host.stdout.readline()))
        finally:
            host.kill()
    assert {"reloadctl.agent.server", "reloadctl.agent.engine"} <= loaded  # it really served
    assert not loaded & {"typing", "tempfile", "shutil", "hmac"}, sorted(
        loaded & {"typing", "tempfile", "shutil", "hmac"}
    )
