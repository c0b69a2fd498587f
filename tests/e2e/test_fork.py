"""Agents across fork, spawn and exec: which child gets its own agent, and which does not.

Every case runs real interpreters in a private XDG_RUNTIME_DIR and checks the agent of each
process with a real status request (its pid must be the child's own).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentkit import wait_for

from reloadctl.proto.address import parse_socket_name

pytestmark = [pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
RELOADCTL = Path(sys.executable).with_name("reloadctl")

#: Prints one JSON line about this process's agent (checked with a real status request).
REPORT = """
def report(tag):
    import json, os, sys
    from reloadctl.agent import lifecycle
    from reloadctl.client.connection import execute
    from reloadctl.proto.messages import StatusRequest
    agent = lifecycle.current_agent()
    status_pid = None
    if agent is not None:
        agent.wait_serving(10)
        info = execute(agent.address, StatusRequest(), secret=None, connect_timeout=5, timeout=10)
        status_pid = info.pid
    line = json.dumps({
        "tag": tag, "pid": os.getpid(), "address": agent.address if agent else None,
        "status_pid": status_pid,
        "listen_env": os.environ.get("RELOADCTL_AGENT_LISTEN"),
    })
    os.write(1, (line + "\\n").encode())  # one write: lines of concurrent processes never mix
"""


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Path]:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    yield run


def _env(runtime: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RELOADCTL_") and k not in ("PYTHONPATH", "PYTHONWARNINGS")
    }
    env["XDG_RUNTIME_DIR"] = str(runtime)
    env.update(extra)
    return env


def _run_plain(runtime: Path, name: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as the script ``<name>.py`` (its name is the agents' ``prog``); it must
    exit 0."""
    script = runtime.parent / f"{name}.py"
    script.write_text(textwrap.dedent(code))
    out = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(runtime),
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out


def _run(
    runtime: Path,
    code: str,
    *,
    python: str = sys.executable,
    flags: tuple[str, ...] = (),
    timeout: float = 40,
    **env: str,
) -> list[dict[str, object]]:
    (runtime.parent / "reportlib.py").write_text(REPORT)
    script = runtime.parent / "main_script.py"
    script.write_text("from reportlib import report\n" + textwrap.dedent(code))
    out = subprocess.run(
        [python, *flags, str(script)],
        cwd=runtime.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(runtime, **env),
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _own(record: dict[str, object]) -> bool:
    """The process has its own agent: status answered by itself, socket named by its pid."""
    address = str(record["address"])
    return record["status_pid"] == record["pid"] and address.endswith(f"-{record['pid']}.sock")


def _socket_pids(runtime: Path) -> set[int]:
    d = runtime / "reloadctl"
    names = (parse_socket_name(p.name) for p in d.iterdir()) if d.is_dir() else iter(())
    return {parsed[1] for parsed in names if parsed is not None}


# -- os.fork ---------------------------------------------------------------------------------

FORK = """
import os, sys
import reloadctl.agent
agent = reloadctl.agent.start(*sys.argv[1:2], inherit=%(inherit)s)
pid = os.fork()
if pid == 0:
    report("child")
    os._exit(0)
os.waitpid(pid, 0)
report("parent")
"""


@pytest.mark.parametrize("inherit", [True, False])
def test_forked_child_gets_its_own_agent_only_with_inheritance(
    runtime: Path, inherit: bool
) -> None:
    records = _run(runtime, FORK % {"inherit": inherit}, flags=("-W", "ignore::DeprecationWarning"))
    by_tag = {r["tag"]: r for r in records}
    assert _own(by_tag["parent"])
    if inherit:
        assert _own(by_tag["child"])
        assert by_tag["child"]["address"] != by_tag["parent"]["address"]
    else:
        assert by_tag["child"]["address"] is None


def test_children_of_a_tcp_agent_listen_on_their_default_unix_socket(runtime: Path) -> None:
    code = """
        import os
        import reloadctl.agent
        agent = reloadctl.agent.start("tcp://127.0.0.1:0", secret=b"s3cret", inherit=True)
        pid = os.fork()
        if pid == 0:
            from reloadctl.agent import lifecycle
            child = lifecycle.current_agent()
            print("CHILD", child.address, child.config.secret is not None, flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
    """
    out = _run_plain(runtime, "tcp_parent", code)
    _, address, has_secret = out.stdout.split()
    # an explicit port cannot be shared: the child has its own private socket, same secret
    assert address.startswith(f"unix://{runtime}/reloadctl/tcp_parent-")
    assert has_secret == "True"


# -- pre-fork masters ------------------------------------------------------------------------

MASTER = """
import json, os, threading
import reloadctl.agent
reloadctl.agent.start_in_children()
pids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        report("worker")
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
threads = len(os.listdir("/proc/self/task"))
print(json.dumps({"tag": "master", "threads": threads, "py_threads": threading.active_count()}))
report("master-agent")
"""


def _interpreters() -> list[str]:
    found = [sys.executable]
    for v in ("3.12", "3.13"):
        py = REPO / f".venv-{v}" / "bin" / "python"
        if py.exists():
            found.append(str(py))
    return found


@pytest.mark.parametrize("python", _interpreters(), ids=lambda p: Path(p).parent.parent.name)
def test_pre_fork_master_stays_single_threaded_and_each_worker_gets_an_agent(
    runtime: Path, python: str
) -> None:
    # -W error::DeprecationWarning: on 3.12+ a fork in a process with a thread warns
    # "This process is multi-threaded, use of fork() may lead to deadlocks" (an error here).
    records = _run(
        runtime,
        MASTER,
        python=python,
        flags=("-W", "error::DeprecationWarning"),
        PYTHONPATH=str(REPO),
    )
    workers = [r for r in records if r["tag"] == "worker"]
    assert len(workers) == 2 and all(_own(w) for w in workers)
    (master,) = [r for r in records if r["tag"] == "master"]
    assert master["threads"] == 1 and master["py_threads"] == 1
    (master_agent,) = [r for r in records if r["tag"] == "master-agent"]
    assert master_agent["address"] is None


# -- the environment: RELOADCTL_AGENT_LISTEN and RELOADCTL_AGENT_INHERIT ----------------------

HELPER = "from reportlib import report; report('helper')"


def test_listen_variable_is_consumed_by_the_process_it_was_meant_for(runtime: Path) -> None:
    code = f"""
        import subprocess, sys
        import reloadctl.agent.auto
        report("main")
        subprocess.run([sys.executable, "-c", "import reloadctl.agent.auto; " + {HELPER!r}],
                       check=True, cwd={str(runtime.parent)!r})
    """
    records = _run(runtime, code, RELOADCTL_AGENT_LISTEN="1")
    by_tag = {r["tag"]: r for r in records}
    assert _own(by_tag["main"]) and by_tag["main"]["listen_env"] is None
    assert by_tag["helper"]["address"] is None and by_tag["helper"]["listen_env"] is None


SPAWNING = f"""
import multiprocessing, subprocess, sys
import reloadctl.agent


def child(tag):
    report(tag)


if __name__ == "__main__":
    reloadctl.agent.start(inherit=True)
    report("main")
    # an exec'd interpreter that is not a worker: no agent, even with the bootstrap
    subprocess.run([sys.executable, "-c", {HELPER!r}], check=True)
    for method in ("spawn", "forkserver"):
        ctx = multiprocessing.get_context(method)
        p = ctx.Process(target=child, args=(method,))
        p.start()
        p.join(30)
        assert p.exitcode == 0, p.exitcode
"""


def test_inheritance_reaches_multiprocessing_workers_but_not_helpers(runtime: Path) -> None:
    records = _run(runtime, SPAWNING, flags=("-W", "ignore::DeprecationWarning"))
    by_tag = {r["tag"]: r for r in records}
    assert _own(by_tag["main"])
    assert by_tag["helper"]["address"] is None
    for method in ("spawn", "forkserver"):
        assert _own(by_tag[method]), by_tag[method]
        # named after the program they work for, not "-c"
        assert f"/main_script-{by_tag[method]['pid']}.sock" in str(by_tag[method]["address"])
    # the forkserver itself (a fresh interpreter that forks the workers) got no agent, and
    # multiprocessing's resource tracker none either: no other process ever had a socket
    # (a forkserver child ends with os._exit, so its socket file may remain, stale)
    assert _socket_pids(runtime) <= {int(str(r["pid"])) for r in records}


# -- the launcher and a multiprocessing pool ---------------------------------------------------

POOL = """\
import json, multiprocessing, os, sys

import pricing


def work(_):
    return os.getpid(), pricing.describe()


if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1])
    with ctx.Pool(2) as pool:  # no initializer: the launcher's inheritance does it
        children = sorted(p.pid for p in pool._pool)
        print(json.dumps({"parent": os.getpid(), "children": children}), flush=True)
        for _line in sys.stdin:  # one line in: one round of answers out
            print(json.dumps(sorted(set(pool.map(work, range(200), chunksize=1)))), flush=True)
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_launcher_gives_every_pool_worker_its_own_agent(runtime: Path, method: str) -> None:
    import shutil

    shop = runtime.parent / "shop"
    shutil.copytree(REPO / "examples" / "shop", shop)
    (shop / "pool_job.py").write_text(POOL)
    env = _env(runtime, PYTHONPATH=str(shop), PYTHONDONTWRITEBYTECODE="1")
    launcher = [sys.executable, "-W", "ignore::DeprecationWarning", "-m", "reloadctl.agent"]
    proc = subprocess.Popen(
        [*launcher, "pool_job.py", method],
        cwd=shop,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:

        def ask() -> set[tuple[int, str]]:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            return {(pid, text) for pid, text in json.loads(line)}

        ready = json.loads(proc.stdout.readline())
        expected = {ready["parent"], *ready["children"]}
        wait_for("every agent's socket", lambda: _socket_pids(runtime) == expected, 20, 0.1)
        # every worker has run the module (spawned workers import it as they start)
        for _ in range(20):
            answers = ask()
            assert {text for _, text in answers} == {"pricing v1: apple 1.20 EUR, pear 0.90 EUR"}
            if {pid for pid, _ in answers} == set(ready["children"]):
                break
        else:
            raise AssertionError(f"not every pool worker answered: {answers}")

        path = shop / "pricing.py"
        path.write_text(path.read_text().replace('"v1"', '"v2"'))
        out = subprocess.run(
            [str(RELOADCTL), "reload", "--local", "pricing"],
            env=env,
            capture_output=True,
            text=True,
            timeout=40,
            check=False,
        )
        assert out.returncode == 0, (out.stdout, out.stderr)
        records = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        assert sorted(r["status"] for r in records if "summary" not in r) == ["reloaded"] * 3
        answers = ask()
        assert {pid for pid, _ in answers} <= set(ready["children"])  # none restarted
        assert {text for _, text in answers} == {"pricing v2: apple 1.20 EUR, pear 0.90 EUR"}
        proc.stdin.close()
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()


def test_listen_address_variable_is_consumed_too(runtime: Path) -> None:
    sock = runtime / "explicit.sock"
    code = f"""
        import subprocess, sys
        import reloadctl.agent.auto
        report("main")
        subprocess.run([sys.executable, "-c", "import reloadctl.agent.auto; " + {HELPER!r}],
                       check=True, cwd={str(runtime.parent)!r})
    """
    records = _run(runtime, code, RELOADCTL_AGENT_LISTEN=f"unix://{sock}")
    by_tag = {r["tag"]: r for r in records}
    assert by_tag["main"]["address"] == f"unix://{sock}"
    assert by_tag["main"]["status_pid"] == by_tag["main"]["pid"]
    assert by_tag["helper"]["address"] is None and by_tag["helper"]["listen_env"] is None


RELOAD_DURING_FORK = """
import os, sys, threading, time
sys.path.insert(0, os.getcwd())
with open("slowmod.py", "w") as f:
    f.write("X = 1\\n")
import slowmod
import reloadctl.agent
with open("slowmod.py", "w") as f:
    f.write("import time\\nX = 2\\ntime.sleep(1.0)\\nY = 2\\n")
st = os.stat("slowmod.py")
os.utime("slowmod.py", ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
results = []
t = threading.Thread(target=lambda: results.extend(reloadctl.agent.reload_modules(["slowmod"])))
t.start()
time.sleep(0.3)  # the new body is running (X is 2, Y does not exist yet)
started = time.monotonic()
pid = os.fork()
if pid == 0:
    print("CHILD", getattr(slowmod, "X", None), getattr(slowmod, "Y", None), flush=True)
    os._exit(0)
waited = time.monotonic() - started
os.waitpid(pid, 0)
t.join()
print("PARENT", results[0].status, round(waited, 2), flush=True)
"""


def test_fork_waits_for_a_running_reload(runtime: Path) -> None:
    (runtime.parent / "during.py").write_text(RELOAD_DURING_FORK)
    out = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "during.py"],
        cwd=runtime.parent,
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(runtime),
        check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    status, waited = lines["PARENT"].split()
    assert status == "reloaded"
    assert lines["CHILD"] == "2 2"  # the child starts from the whole new version
    assert float(waited) >= 0.4  # the fork waited for the rest of the reload


def test_subprocess_with_preexec_fn_gets_no_agent(runtime: Path) -> None:
    # subprocess runs the at-fork hooks only in a preexec_fn child, which then execs: an
    # agent started there would leave a socket nobody serves under a live pid.
    code = """
        import json, os, subprocess, sys
        import reloadctl.agent
        reloadctl.agent.start(inherit=True)
        subprocess.run([sys.executable, "-c", "import time; time.sleep(0.5)"],
                       preexec_fn=lambda: None, check=True)
        print(json.dumps(sorted(os.listdir(os.environ["XDG_RUNTIME_DIR"] + "/reloadctl"))))
    """
    out = _run_plain(runtime, "preexec", code)
    (only,) = json.loads(out.stdout)
    assert only.startswith("preexec-")
