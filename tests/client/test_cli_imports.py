"""The CLI keeps heavy imports where they are used: checked in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
from reloadctl.client.cli import app
try:
    app({args!r})
except SystemExit:
    pass
heavy = ("rpyc", "msgpack", "rich", "pydantic", "watchfiles", "tomllib")
heavy += ("reloadctl.client.connection", "reloadctl.client.rollout")
sys.__stdout__.write("\\n" + json.dumps(sorted(m for m in heavy if m in sys.modules)) + "\\n")
"""


def loaded(args: list[str], tmp_path: object) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={
            "PATH": "/usr/bin:/bin",
            "XDG_CONFIG_HOME": f"{tmp_path}/config",
            "XDG_RUNTIME_DIR": f"{tmp_path}/run",
        },
    )
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    ("args", "allowed"),
    [
        ([], []),
        (["--help"], []),
        (["reload", "--help"], []),
        (["--version"], []),
        (["targets", "-H", "127.0.0.1:7000"], []),
        (["ps"], []),
        # A real call needs the transport, and nothing more.
        (
            ["reload", "-H", "unix:///nonexistent/x.sock", "m"],
            ["msgpack", "reloadctl.client.connection", "rpyc"],
        ),
        # The rollout machinery only when a rollout option asks for it.
        (
            ["reload", "--canary", "1", "-H", "unix:///nonexistent/x.sock", "m"],
            ["msgpack", "reloadctl.client.connection", "reloadctl.client.rollout", "rpyc"],
        ),
    ],
)
def test_heavy_imports_only_where_used(
    args: list[str], allowed: list[str], tmp_path: object
) -> None:
    assert loaded(args, tmp_path) == allowed
