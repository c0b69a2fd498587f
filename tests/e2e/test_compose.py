"""docker-compose.yml: its structure, and its services' exact commands run as local processes.

There is no container engine here, so the test does what compose would do, minus the
containers: it reads the compose file (a block-YAML subset, parsed strictly below), starts
each worker service's command with the service's environment and the Dockerfile's
PYTHONPATH, then runs the client service's entrypoint + command. The only substitutions are
the ones compose itself provides: service hostnames and ports become loopback addresses, the
secret file and the bind-mounted shop directory become temp-dir paths.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
RELOADCTL = Path(sys.executable).with_name("reloadctl")
WORKERS = ("shop-1", "shop-2")

# -- a strict parser for the block-YAML subset the compose file is written in -------------


def _scalar(text: str) -> Any:
    if text.startswith(("[", '"')):
        return json.loads(text)
    if text.startswith(("'", "{", "&", "*", "!", "|", ">")):
        raise ValueError(f"unsupported YAML here: {text!r}")
    return text


def parse_block_yaml(source: str) -> dict[str, Any]:
    """Parse mappings, ``- scalar`` lists, JSON flow lists/strings; reject anything else."""
    lines: list[tuple[int, str, int]] = []
    for number, raw in enumerate(source.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise ValueError(f"line {number}: tab in indentation")
        lines.append((len(raw) - len(raw.lstrip(" ")), stripped, number))

    def block(i: int, indent: int) -> tuple[Any, int]:
        if lines[i][1].startswith("- "):
            items: list[Any] = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                items.append(_scalar(lines[i][1][2:].strip()))
                i += 1
            return items, i
        mapping: dict[str, Any] = {}
        while i < len(lines) and lines[i][0] == indent:
            _, text, number = lines[i]
            key, sep, rest = text.partition(":")
            if not sep or (rest and not rest.startswith(" ")) or key in mapping:
                raise ValueError(f"line {number}: expected a new 'key: value', got {text!r}")
            rest = rest.strip()
            i += 1
            if rest:
                mapping[key] = _scalar(rest)
            elif i < len(lines) and lines[i][0] > indent:
                mapping[key], i = block(i, lines[i][0])
            else:
                raise ValueError(f"line {number}: {key!r} has no value")
        if i < len(lines) and lines[i][0] > indent:
            raise ValueError(f"line {lines[i][2]}: unexpected indentation")
        return mapping, i

    result, end = block(0, 0)
    if end != len(lines):
        raise ValueError(f"line {lines[end][2]}: not parsed")
    assert isinstance(result, dict)
    return result


def test_parser_rejects_what_it_does_not_understand() -> None:
    assert parse_block_yaml('a:\n  b: ["x", "y"]\n  c:\n    - d\n') == {
        "a": {"b": ["x", "y"], "c": ["d"]}
    }
    for bad in ["a: 'x'", "a:\n    b: 1\n  c: 2", "a: {b: 1}", "a\n", "a: 1\na: 2"]:
        with pytest.raises(ValueError):
            parse_block_yaml(bad)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return parse_block_yaml(COMPOSE.read_text())


def _dockerfile_env() -> dict[str, str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


# -- structure ----------------------------------------------------------------------------


def test_compose_structure(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {*WORKERS, "client"}
    secret_name = "reloadctl_secret"
    assert compose["secrets"][secret_name]["file"].startswith("./")
    mount = f"/run/secrets/{secret_name}"
    for name in WORKERS:
        svc = services[name]
        assert svc["build"] == "."
        assert svc["secrets"] == [secret_name]
        assert svc["environment"]["RELOADCTL_SECRET_FILE"] == mount
        listen = svc["command"][svc["command"].index("--agent-listen") + 1]
        assert listen == "tcp://0.0.0.0:7878"
        # the agent port stays inside the compose network; only HTTP is published, on loopback
        assert all(p.startswith("127.0.0.1:") and not p.endswith(":7878") for p in svc["ports"])
        assert svc["healthcheck"]["test"][0] == "CMD"
    client = services["client"]
    assert client["entrypoint"] == ["reloadctl"]
    assert client["environment"]["RELOADCTL_HOST"].split(",") == list(WORKERS)
    assert client["environment"]["RELOADCTL_SECRET_FILE"] == mount
    assert client["secrets"] == [secret_name]
    # the client sees the same sources as the workers, so `watch examples/shop` works there
    assert client["volumes"] == services["shop-1"]["volumes"] == services["shop-2"]["volumes"]
    assert {k: v["condition"] for k, v in client["depends_on"].items()} == dict.fromkeys(
        WORKERS, "service_healthy"
    )
    assert (REPO / "examples/compose/.gitignore").read_text().count("*.secret") == 1
    assert _dockerfile_env()["PYTHONPATH"] == "/app/examples/shop"


# -- the services' commands, run locally --------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Local:
    """What compose provides, mapped onto this machine."""

    def __init__(self, tmp: Path, compose: dict[str, Any]) -> None:
        self.tmp = tmp
        self.shop = tmp / "app" / "examples" / "shop"  # the bind mount's target
        shutil.copytree(REPO / "examples" / "shop", self.shop)
        self.secret = tmp / "secrets" / "reloadctl_secret"
        self.secret.parent.mkdir()
        self.secret.write_text("compose-test-" + os.urandom(16).hex() + "\n")
        self.secret.chmod(0o600)
        self.agent_ports = {name: _free_port() for name in WORKERS}
        self.http_ports = {name: _free_port() for name in WORKERS}
        self.procs: list[subprocess.Popen[str]] = []

    def env(self, service_env: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELOADCTL_")}
        env["XDG_RUNTIME_DIR"] = str(self.tmp / "run")
        env.update(_dockerfile_env())
        env["PYTHONPATH"] = str(self.shop)
        for key, raw in service_env.items():
            value = raw.replace("/run/secrets/reloadctl_secret", str(self.secret))
            for name, port in self.agent_ports.items():
                value = re.sub(rf"\b{re.escape(name)}\b", f"127.0.0.1:{port}", value)
            env[key] = value
        return env

    def worker_argv(self, name: str, command: list[str]) -> list[str]:
        argv = list(command)
        assert argv[0] == "python"
        argv[0] = sys.executable  # the image's python; the script path is relative to /app
        subst = {
            "0.0.0.0": "127.0.0.1",
            "8000": str(self.http_ports[name]),
            "tcp://0.0.0.0:7878": f"tcp://127.0.0.1:{self.agent_ports[name]}",
        }
        return [subst.get(a, a) for a in argv]


@pytest.fixture
def local(tmp_path: Path, compose: dict[str, Any]) -> Iterator[Local]:
    (tmp_path / "run").mkdir(mode=0o700)
    loc = Local(tmp_path, compose)
    yield loc
    for proc in loc.procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in loc.procs:
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
        return body.decode().strip()


def _ndjson(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_compose_services_work_as_local_processes(compose: dict[str, Any], local: Local) -> None:
    services = compose["services"]
    ready: dict[str, dict[str, Any]] = {}
    for name in WORKERS:
        svc = services[name]
        proc = subprocess.Popen(
            local.worker_argv(name, svc["command"]),
            cwd=local.tmp / "app",
            env=local.env(svc["environment"]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        local.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded by the test timeout; empty if it died
        assert line, f"{name} exited: {proc.communicate(timeout=10)}"
        ready[name] = json.loads(line)
        assert ready[name]["agent"] == f"tcp://127.0.0.1:{local.agent_ports[name]}"
        assert "pricing v1" in _get(ready[name]["url"])

    client = services["client"]
    # stdout is a pipe, so reloadctl writes NDJSON, as it does in the container's log.
    argv = [str(RELOADCTL), *client["entrypoint"][1:], *client["command"]]

    def run_client() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            env=local.env(client["environment"]),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    first = run_client()
    assert first.returncode == 0, first.stderr
    records = _ndjson(first.stdout)
    # Nothing edited yet: both agents answer for `pricing` and succeed (the engine decides
    # between reloaded and unchanged; this test is about the compose wiring).
    assert [r["module"] for r in records[:-1]] == ["pricing"] * 2
    assert {r["status"] for r in records[:-1]} <= {"unchanged", "reloaded"}
    assert sum(records[-1]["summary"].values()) == 2

    # The host edit, seen through the bind mount; then the same client command again.
    pricing = local.shop / "pricing.py"
    pricing.write_text(pricing.read_text().replace('"v1"', '"v2"'))
    second = run_client()
    assert second.returncode == 0, second.stderr
    records = _ndjson(second.stdout)
    assert [r["status"] for r in records[:-1]] == ["reloaded", "reloaded"]
    # records stream in completion order; RELOADCTL_HOST named both agents
    assert sorted(r["target"] for r in records[:-1]) == sorted(
        f"127.0.0.1:{local.agent_ports[name]}" for name in WORKERS
    )
    for name in WORKERS:
        body = _get(ready[name]["url"])
        assert body == f"pid {ready[name]['pid']} | " + body.split(" | ", 1)[1]
        assert "pricing v2" in body

    # Without the secret, the same client is rejected by both agents: exit 4.
    no_secret = subprocess.run(
        argv,
        env={**local.env(client["environment"]), "RELOADCTL_SECRET_FILE": ""},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert no_secret.returncode == 4, no_secret
    assert [r["status"] for r in _ndjson(no_secret.stdout)[:-1]] == ["auth_failed"] * 2
    for name in WORKERS:
        assert "pricing v2" in _get(ready[name]["url"])
