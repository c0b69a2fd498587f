"""Protocol negotiation against a real protocol-1 reloadctl (this repository before protocol 2).

The old code is the package as of ``PROTOCOL_1_COMMIT`` (``git archive``), run in its own
processes: an old agent served to today's client, and an old client talking to today's agent.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleetkit import SECRET, Code, by_target

from reloadctl.client.connection import execute
from reloadctl.errors import TargetRefused
from reloadctl.proto.messages import AgentInfo, PushedSource, ReloadRequest, StatusRequest
from reloadctl.secrets import Secret

pytestmark = [pytest.mark.e2e]

#: The last commit whose agent and client speak protocol 1 only.
PROTOCOL_1_COMMIT = "84c9803"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def old_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the protocol-1 ``reloadctl`` package."""
    d = tmp_path_factory.mktemp("protocol1")
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", PROTOCOL_1_COMMIT, "reloadctl"],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"the protocol-1 code is not available from git: {exc}")
    subprocess.run(["tar", "-x", "-C", str(d)], input=archive.stdout, check=True, timeout=30)
    return d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def old_agent(old_package: Path, code: Code) -> Iterator[str]:
    port = _free_port()
    env = dict(code.env, PYTHONPATH=f"{old_package}{os.pathsep}{code.root}")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reloadctl.agent",
            "--listen",
            f"tcp://127.0.0.1:{port}",
            str(code.app),
        ],
        env=env,
        cwd=code.root,  # not the repository: '' comes first on sys.path
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        yield f"tcp://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def _is_old(package: Path, env: dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import reloadctl.proto.codec as c; print(c.VERSION)"],
        env=dict(env, PYTHONPATH=str(package)),
        cwd=package,  # not the repository: '' comes first on sys.path
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert out.stdout.strip() == "1"


def test_a_new_client_falls_back_to_protocol_1(
    old_package: Path, old_agent: str, code: Code
) -> None:
    _is_old(old_package, code.env)
    secret = Secret(SECRET.encode())
    info = execute(old_agent, StatusRequest(), secret=secret, connect_timeout=5, timeout=10)
    assert isinstance(info, AgentInfo)
    code.write("v2")
    results = execute(
        old_agent, ReloadRequest(("fleetmod",)), secret=secret, connect_timeout=5, timeout=10
    )
    assert isinstance(results, tuple)
    assert [r.status for r in results] == ["reloaded"]


def test_verify_against_a_protocol_1_agent_is_one_clear_line(old_agent: str, code: Code) -> None:
    secret = Secret(SECRET.encode())
    request = ReloadRequest(("fleetmod",), verify="fleetcheck:healthy")
    with pytest.raises(TargetRefused) as info:
        execute(old_agent, request, secret=secret, connect_timeout=5, timeout=10)
    assert str(info.value) == (
        f"agent at {old_agent} speaks protocol 1; --verify needs an agent that speaks "
        "protocol 2 (upgrade reloadctl where the agent runs)"
    )
    # the CLI shows it, and nothing was reloaded
    code.write("v2")
    rc, records, err = code.cli(
        "reload", "--verify", "fleetcheck:healthy", "-H", old_agent, "fleetmod"
    )
    assert rc != 0
    assert "speaks protocol 1; --verify needs" in err + str(records)
    rc, records, err = code.cli("status", "-H", old_agent)
    assert rc == 0, err
    assert by_target(records)[old_agent]["agent"]["patched"] == [], records  # type: ignore[index]


def test_push_against_a_protocol_1_agent_is_one_clear_line(
    old_agent: str, code: Code, tmp_path: Path
) -> None:
    secret = Secret(SECRET.encode())
    text = "VALUE = 'pushed'\n"
    pushed = PushedSource(
        "fleetmod", "fleetmod.py", text, hashlib.sha256(text.encode()).hexdigest()
    )
    line = (
        f"agent at {old_agent} speaks protocol 1; --push needs an agent that speaks "
        "protocol 2 (upgrade reloadctl where the agent runs)"
    )
    with pytest.raises(TargetRefused) as info:
        execute(
            old_agent,
            ReloadRequest(("fleetmod",), push=(pushed,)),
            secret=secret,
            connect_timeout=5,
            timeout=10,
        )
    assert str(info.value) == line
    # the CLI: one record saying so, no traceback, and nothing was reloaded
    src = tmp_path / "src"
    src.mkdir()
    (src / "fleetmod.py").write_text(text)
    rc, records, err = code.cli("reload", "--push", "--root", str(src), "-H", old_agent, "fleetmod")
    assert rc == 1, err
    record = by_target(records)[old_agent]
    assert record["status"] == "refused", records
    assert line in str(record["error"]), record
    assert "Traceback" not in err
    rc, records, err = code.cli("status", "-H", old_agent)
    assert rc == 0, err
    assert by_target(records)[old_agent]["agent"]["patched"] == [], records  # type: ignore[index]


OLD_STATUS_CLIENT = textwrap.dedent(
    """
    import sys
    from reloadctl.client.connection import execute
    from reloadctl.proto.messages import StatusRequest
    from reloadctl.secrets import Secret
    import reloadctl.proto.codec as codec
    assert codec.VERSION == 1
    info = execute(sys.argv[1], StatusRequest(), secret=Secret(sys.argv[2].encode()),
                   connect_timeout=5, timeout=10)
    print(",".join("%s:%d" % (p.module, p.reloads) for p in info.patched))
    """
)


def test_an_old_client_reads_the_status_of_pushed_code_in_protocol_1(
    old_package: Path, code: Code
) -> None:
    # protocol 2's origin and digest of a patched module must not reach a protocol-1
    # client, which refuses any field it does not know
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reloadctl.agent",
            "--listen",
            address,
            "--accept-push",
            str(code.app),
        ],
        env=code.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        text = "VALUE = 'pushed'\n\n\ndef value():\n    return VALUE\n"
        digest = hashlib.sha256(text.encode()).hexdigest()
        results = execute(
            address,
            ReloadRequest(
                ("fleetmod",), push=(PushedSource("fleetmod", "fleetmod.py", text, digest),)
            ),
            secret=Secret(SECRET.encode()),
            connect_timeout=5,
            timeout=10,
        )
        assert isinstance(results, tuple) and [r.status for r in results] == ["reloaded"]
        info = execute(
            address, StatusRequest(), secret=Secret(SECRET.encode()), connect_timeout=5, timeout=10
        )
        assert isinstance(info, AgentInfo)
        assert [(p.module, p.origin) for p in info.patched] == [("fleetmod", f"push:{digest[:12]}")]
        out = subprocess.run(
            [sys.executable, "-c", OLD_STATUS_CLIENT, address, SECRET],
            env=dict(code.env, PYTHONPATH=f"{old_package}{os.pathsep}{code.root}"),
            cwd=code.root,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "fleetmod:1"
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


OLD_CLIENT = textwrap.dedent(
    """
    import sys
    from reloadctl.client.connection import execute
    from reloadctl.proto.messages import ReloadRequest, StatusRequest
    from reloadctl.secrets import Secret
    import reloadctl.proto.codec as codec
    assert codec.VERSION == 1
    secret = Secret(sys.argv[2].encode())
    execute(sys.argv[1], StatusRequest(), secret=secret, connect_timeout=5, timeout=10)
    results = execute(sys.argv[1], ReloadRequest(("fleetmod",)), secret=secret,
                      connect_timeout=5, timeout=10)
    print(",".join(r.status for r in results))
    """
)


def test_an_old_client_is_answered_in_protocol_1(old_package: Path, code: Code) -> None:
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "reloadctl.agent", "--listen", address, str(code.app)],
        env=code.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        code.write("v2")
        time.sleep(0.01)
        out = subprocess.run(
            [sys.executable, "-c", OLD_CLIENT, address, SECRET],
            env=dict(code.env, PYTHONPATH=f"{old_package}{os.pathsep}{code.root}"),
            cwd=code.root,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "reloaded"
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
