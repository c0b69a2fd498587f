"""Process events: the agent stops at exit; a forked child forgets the parent's agent."""

from __future__ import annotations

import time
from pathlib import Path

from agentkit import run_python


def test_exit_stops_the_agent_quickly_and_removes_the_socket(runtime_dir: Path) -> None:
    code = """
        import reloadctl.agent, socket
        a = reloadctl.agent.start()
        s = socket.socket(socket.AF_UNIX); s.connect(a.address[7:])  # a connection left open
        print(a.address, flush=True)
    """
    started = time.monotonic()
    out = run_python(code, {"XDG_RUNTIME_DIR": str(runtime_dir)})
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - started < 10
    assert out.stderr == ""
    path = Path(out.stdout.strip()[len("unix://") :])
    assert path.parent.is_dir() and not path.exists()


def test_forked_child_forgets_the_parent_agent(runtime_dir: Path) -> None:
    code = """
        import os, sys
        import reloadctl.agent
        from reloadctl.agent import lifecycle
        from reloadctl.client.connection import execute
        from reloadctl.proto.messages import StatusRequest
        a = reloadctl.agent.start()
        pid = os.fork()
        if pid == 0:
            ok = lifecycle.current_agent() is None and not a.running
            b = reloadctl.agent.start()  # the child may start its own agent
            ok = ok and b is not a and b.address != a.address and str(os.getpid()) in b.address
            info = execute(b.address, StatusRequest(), secret=None, connect_timeout=2, timeout=5)
            ok = ok and info.pid == os.getpid()
            b.stop()
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        info = execute(a.address, StatusRequest(), secret=None, connect_timeout=2, timeout=5)
        assert info.pid == os.getpid(), info
        assert os.path.exists(a.address[7:])  # the child did not remove the parent's socket
        print(os.waitstatus_to_exitcode(status))
    """
    out = run_python(code, {"XDG_RUNTIME_DIR": str(runtime_dir)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
    assert out.stderr == ""
