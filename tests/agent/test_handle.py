"""The Agent's cost to its host: imports, idle thread, stop before any client."""

from __future__ import annotations

import time
from pathlib import Path

from agentkit import run_python

from reloadctl.agent import start

# -- cost to the host -------------------------------------------------------------------------


def test_import_and_idle_agent_load_no_rpyc_engine_or_typing(runtime_dir: Path) -> None:
    code = """
        import sys, time
        import reloadctl.agent
        after_import = sorted(m for m in sys.modules if m.startswith("reloadctl"))
        agent = reloadctl.agent.start()
        agent.wait_serving(5)
        time.sleep(0.2)
        # (ast is not checked: it comes with dataclasses, which the settings are made of)
        heavy = [m for m in ("rpyc", "msgpack", "typing", "reloadctl.agent.engine",
                             "tempfile", "ipaddress", "pathlib") if m in sys.modules]
        from reloadctl.client.connection import execute
        from reloadctl.proto.messages import StatusRequest
        info = execute(agent.address, StatusRequest(), secret=None, connect_timeout=5, timeout=10)
        print(after_import, heavy, info.pid == __import__("os").getpid(),
              "reloadctl.agent.engine" in sys.modules)
    """
    out = run_python(code, {"XDG_RUNTIME_DIR": str(runtime_dir)})
    assert out.returncode == 0, out.stderr
    # import: the package file only; an idle agent: none of the heavy modules; a status
    # answered without loading the engine
    assert out.stdout.strip() == "['reloadctl', 'reloadctl.agent'] [] True False"


def test_stop_before_any_client_ends_the_thread_at_once(runtime_dir: Path) -> None:
    agent = start()
    path = Path(agent.address[len("unix://") :])
    assert agent.wait_serving(5)
    thread = agent._thread
    assert thread is not None and thread.is_alive()
    started = time.monotonic()
    agent.stop()
    assert time.monotonic() - started < 1.0
    assert not thread.is_alive()  # woken from its wait for a first client
    assert not path.exists()
