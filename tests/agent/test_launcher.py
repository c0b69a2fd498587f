"""``python -m reloadctl.agent`` and ``reloadctl.agent.auto`` in real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentkit import short_tmpdir

PROBE = textwrap.dedent(
    """
    import json, os, sys
    from reloadctl.agent import lifecycle
    from reloadctl.client.connection import execute
    from reloadctl.proto.messages import StatusRequest
    agent = lifecycle.current_agent()
    info = None
    if agent is not None:
        info = execute(agent.address, StatusRequest(), secret=None, connect_timeout=2, timeout=5)
    print(json.dumps({
        "name": __name__,
        "argv": sys.argv,
        "path0": sys.path[0],
        "address": agent.address if agent else None,
        "status_pid": info.pid if info else None,
        "pid": os.getpid(),
        "program": info.program if info else None,
    }))
    sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
    """
)


@pytest.fixture
def workdir() -> Iterator[Path]:
    with short_tmpdir() as d:
        (d / "pkg").mkdir()
        (d / "pkg" / "__init__.py").write_text("")
        (d / "pkg" / "probe.py").write_text(PROBE)
        (d / "scripts").mkdir()
        (d / "scripts" / "probe_script.py").write_text(PROBE)
        yield d


def _env(workdir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RELOADCTL_") and k not in ("PYTHONPATH",)
    }
    env["XDG_RUNTIME_DIR"] = str(workdir)
    env.update(extra)
    return env


def launch(
    workdir: Path, *args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, object] | None]:
    out = subprocess.run(
        [sys.executable, "-m", "reloadctl.agent", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(workdir, **env),
        check=False,
    )
    data = json.loads(out.stdout.splitlines()[-1]) if out.stdout.strip() else None
    return out, data


def test_module_mode(workdir: Path) -> None:
    out, data = launch(workdir, "-m", "pkg.probe", "a", "--listen", "b")
    assert out.returncode == 0, out.stderr
    assert data is not None
    assert data["name"] == "__main__"
    assert data["argv"] == [str(workdir / "pkg" / "probe.py"), "a", "--listen", "b"]
    assert data["path0"] == str(workdir)
    assert data["status_pid"] == data["pid"]
    assert str(data["address"]).endswith(f"/reloadctl/pkg.probe-{data['pid']}.sock")
    assert out.stderr == ""


def test_script_mode_and_exit_code(workdir: Path) -> None:
    out, data = launch(workdir, "scripts/probe_script.py", "x", PROBE_EXIT="7")
    assert out.returncode == 7, out.stderr
    assert data is not None
    assert data["name"] == "__main__"
    assert data["argv"] == ["scripts/probe_script.py", "x"]
    assert data["path0"] == str(workdir / "scripts")
    assert str(data["address"]).endswith(f"/probe_script-{data['pid']}.sock")
    assert data["status_pid"] == data["pid"]


def test_listen_and_secret_file_options(workdir: Path) -> None:
    secret = workdir / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    sock = workdir / "explicit.sock"
    out, _data = launch(
        workdir, "--listen", f"unix://{sock}", "--secret-file", str(secret), "-m", "pkg.probe"
    )
    # the probe connects without a secret: the agent must refuse it
    assert out.returncode != 0
    assert "TargetAuthFailed" in out.stderr
    assert not sock.exists()  # removed at exit


def test_exception_in_program_exits_1_with_its_traceback(workdir: Path) -> None:
    (workdir / "boom.py").write_text("raise RuntimeError('boom')\n")
    out, _ = launch(workdir, "boom.py")
    assert out.returncode == 1
    assert "RuntimeError: boom" in out.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((), "give a program"),
        (("--listen",), "expected one argument"),
        (("--bogus", "-m", "x"), "unrecognized"),
        (("missing.py",), "cannot open file"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    workdir: Path, args: tuple[str, ...], fragment: str
) -> None:
    out, _ = launch(workdir, *args)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1
    assert fragment in out.stderr


def test_agent_start_failure_exits_1(workdir: Path) -> None:
    out, _ = launch(workdir, "--listen", "tcp://127.0.0.1:0", "-m", "pkg.probe")
    assert out.returncode == 1
    assert "RELOADCTL_SECRET_FILE" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def _auto(workdir: Path, value: str) -> subprocess.CompletedProcess[str]:
    code = "import reloadctl.agent.auto\n" + PROBE
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(workdir, RELOADCTL_AGENT_LISTEN=value),
        check=False,
    )


def test_auto_activation_default(workdir: Path) -> None:
    out = _auto(workdir, "1")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["status_pid"] == data["pid"]
    assert out.stderr == ""


@pytest.mark.parametrize("value", ["__import__('os').system('touch pwned')", "tcp://127.0.0.1:0"])
def test_auto_activation_never_evaluates_nor_raises(workdir: Path, value: str) -> None:
    out = _auto(workdir, value)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["address"] is None  # not started: bad address / no secret
    assert not (workdir / "pwned").exists()
    assert out.stderr == ""  # logged, not printed (the host configured no logging)


# -- pre-fork servers, inheritance, notes ------------------------------------------------------


@pytest.mark.parametrize(
    ("program", "args", "env", "expected"),
    [
        ("gunicorn", ["-w", "2", "app:wsgi"], {}, "gunicorn"),
        ("/venv/bin/gunicorn", ["app:wsgi"], {}, "gunicorn"),  # even one worker: a master
        ("uvicorn", ["--workers", "2", "app:asgi"], {}, "uvicorn"),
        ("uvicorn", ["--workers=4", "app:asgi"], {}, "uvicorn"),
        ("uvicorn", ["app:asgi"], {"WEB_CONCURRENCY": "3"}, "uvicorn"),
        ("uvicorn", ["--reload", "app:asgi"], {}, "uvicorn"),
        ("uvicorn", ["app:asgi"], {}, None),  # serves in this very process
        ("uvicorn", ["--workers", "1", "app:asgi"], {}, None),
        ("hypercorn", ["-w", "2", "app:asgi"], {}, "hypercorn"),
        ("celery", ["-A", "proj", "worker"], {}, "celery"),
        ("celery", ["-A", "proj", "worker", "--pool", "solo"], {}, None),
        ("celery", ["-A", "proj", "worker", "-P=threads"], {}, None),
        ("celery", ["-A", "proj", "beat"], {}, None),
        ("myservice.main", ["--workers", "2"], {}, None),
        ("script.py", [], {}, None),
    ],
)
def test_prefork_server_detection(
    program: str, args: list[str], env: dict[str, str], expected: str | None
) -> None:
    from reloadctl.agent.auto import prefork_server

    assert prefork_server(program, args, env) == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["python", "-m", "gunicorn", "-w", "2"], ("gunicorn", ["-w", "2"])),
        (["python", "-W", "error", "-X", "dev", "-mpkg", "a"], ("pkg", ["a"])),
        (["python", "-I", "script.py", "-m", "x"], ("script.py", ["-m", "x"])),
        (
            ["python", "-c", "print(1)", "--multiprocessing-fork"],
            ("-c", ["print(1)", "--multiprocessing-fork"]),
        ),
        (["python"], ("", [])),
    ],
)
def test_program_of_an_interpreter_command_line(
    argv: list[str], expected: tuple[str, list[str]]
) -> None:
    from reloadctl.agent.auto import program_of

    assert program_of(argv) == expected


def test_listen_for_a_prefork_master_is_a_usage_error(workdir: Path) -> None:
    out, _ = launch(workdir, "--listen", "unix:///tmp/x.sock", "-m", "gunicorn", "app:wsgi")
    assert out.returncode == 2
    assert "add --master" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out, _ = launch(workdir, "--no-inherit", "-m", "gunicorn", "app:wsgi")
    assert out.returncode == 2
    assert "neither gunicorn's master nor its workers" in out.stderr


def test_unhookable_reloader_gets_a_note_and_runs(workdir: Path) -> None:
    (workdir / "manage.py").write_text(PROBE)
    out, data = launch(workdir, "manage.py", "runserver")
    assert out.returncode == 0
    assert data is not None and data["status_pid"] == data["pid"]  # it still gets its agent
    (note,) = out.stderr.strip().splitlines()
    assert note.startswith("reloadctl.agent: note: Django's autoreloader")
    assert "--noreload" in note
    out, _ = launch(workdir, "manage.py", "runserver", "--noreload")
    assert out.stderr == ""


def test_second_agent_in_the_launched_program_is_refused_with_the_first_address(
    workdir: Path,
) -> None:
    (workdir / "second.py").write_text(
        textwrap.dedent(
            """
            import sys
            import reloadctl.agent
            from reloadctl.agent import lifecycle
            from reloadctl.errors import AgentAlreadyRunning
            first = lifecycle.current_agent()
            assert reloadctl.agent.start() is first  # plain start(): the launcher's agent
            try:
                reloadctl.agent.start("unix:///tmp/elsewhere.sock")
            except AgentAlreadyRunning as exc:
                print(first.address in str(exc), exc)
            """
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "reloadctl.agent", "second.py"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(workdir),
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("True a reloadctl agent already runs in this process at unix://")


def test_launcher_exports_inheritance_for_the_programs_workers(workdir: Path) -> None:
    code = (
        "import json, os\n"
        "prefixes = ('RELOADCTL_', 'PYTHONPATH')\n"
        "print(json.dumps({k: v for k, v in os.environ.items() if k.startswith(prefixes)}))\n"
    )
    (workdir / "env_probe.py").write_text(code)
    out, data = launch(workdir, "--allow", "pkg.*", "env_probe.py")
    assert out.returncode == 0, out.stderr
    assert data is not None
    assert data["RELOADCTL_AGENT_INHERIT"] == "1"
    assert data["RELOADCTL_AGENT_PROGRAM"] == "env_probe"
    assert data["RELOADCTL_AGENT_ALLOW"] == "pkg.*"
    assert str(data["PYTHONPATH"]).split(os.pathsep)[0].endswith("reloadctl/agent/bootstrap")
    out, data = launch(workdir, "--no-inherit", "env_probe.py")
    assert data == {}
