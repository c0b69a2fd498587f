"""``client.settings``: each TLS setting is the option, then its variable, then the old
shared name (with one deprecation line), then the default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reloadctl.client.settings import TLS_CA, TLS_CERT, TLS_KEY, TlsFile


@pytest.mark.parametrize(("helper", "name"), [(TLS_CA, "CA"), (TLS_CERT, "CERT"), (TLS_KEY, "KEY")])
@pytest.mark.parametrize(
    ("option", "environ", "expected", "warned"),
    [
        (None, {}, None, False),
        (
            "/o.pem",
            {"RELOADCTL_CLIENT_TLS_{n}": "/n.pem", "RELOADCTL_TLS_{n}": "/x"},
            "/o.pem",
            False,
        ),
        (None, {"RELOADCTL_CLIENT_TLS_{n}": "/n.pem", "RELOADCTL_TLS_{n}": "/x"}, "/n.pem", False),
        (None, {"RELOADCTL_TLS_{n}": " /old.pem "}, "/old.pem", True),
        (None, {"RELOADCTL_CLIENT_TLS_{n}": "  ", "RELOADCTL_TLS_{n}": ""}, None, False),
        (None, {"RELOADCTL_AGENT_TLS_{n}": "/agent.pem"}, None, False),  # never the agent's
    ],
)
def test_option_then_environment_then_old_name(
    helper: TlsFile,
    name: str,
    option: str | None,
    environ: dict[str, str],
    expected: str | None,
    warned: bool,
) -> None:
    lines: list[str] = []
    env = {k.format(n=name): v for k, v in environ.items()}
    assert helper.read(option, env, lines.append) == expected
    if warned:
        assert lines == [
            f"RELOADCTL_TLS_{name} is deprecated: use RELOADCTL_CLIENT_TLS_{name} "
            f"(agents: RELOADCTL_AGENT_TLS_{name})"
        ]
    else:
        assert lines == []


def test_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert TLS_CA.read(Path("ca.pem"), {}) == os.path.join(tmp_path, "ca.pem")
    assert TLS_CERT.read(None, {"RELOADCTL_CLIENT_TLS_CERT": "~/c.pem"}) == str(
        tmp_path / "home" / "c.pem"
    )
