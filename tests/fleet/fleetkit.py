"""Helpers of the fleet tests: the code the agents run, the real CLI, NDJSON records."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

RELOADCTL = shutil.which("reloadctl", path=str(Path(sys.executable).parent)) or "reloadctl"

FLEETMOD = (
    "VALUE = {value!r}\n\n\ndef value():\n    return VALUE\n\n\n"
    "def healthy():\n    return {healthy}\n"
)
FLEETCHECK = """import fleetmod


def healthy():
    return fleetmod.healthy()


def boom():
    raise RuntimeError("database unreachable")


def hang():
    import time
    time.sleep(30)


not_callable = 3
"""
APP = """import time
import fleetcheck
import fleetmod

print("ready", flush=True)
while True:
    time.sleep(3600)
"""
SECRET = "fleet-test-secret-0123456789abcdef"
#: Settings of the outer environment that must not leak into agents or the CLI.
LEAKY = (
    "RELOADCTL_SECRET",
    "RELOADCTL_HOST",
    "RELOADCTL_AGENT_LISTEN",
    "RELOADCTL_AGENT_ALLOW",
    "RELOADCTL_AGENT_READ_ONLY",
    "RELOADCTL_AGENT_ACCEPT_PUSH",
    "RELOADCTL_AGENT_DISABLE",
    "RELOADCTL_AGENT_INHERIT",
    "RELOADCTL_TLS_CERT",
    "RELOADCTL_TLS_KEY",
    "RELOADCTL_TLS_CA",
    "RELOADCTL_AGENT_TLS_CERT",
    "RELOADCTL_AGENT_TLS_KEY",
    "RELOADCTL_AGENT_TLS_CA",
    "RELOADCTL_CLIENT_TLS_CERT",
    "RELOADCTL_CLIENT_TLS_KEY",
    "RELOADCTL_CLIENT_TLS_CA",
)


@dataclass
class Code:
    """The directory every agent of a bed imports from (namespaces share the filesystem)."""

    root: Path
    app: Path
    env: dict[str, str]

    def write(self, value: str, *, healthy: bool = True) -> None:
        """Rewrite ``fleetmod.py`` (a new mtime, so every agent sees a change)."""
        path = self.root / "fleetmod.py"
        path.write_text(FLEETMOD.format(value=value, healthy=healthy))
        t = time.time() + 1
        os.utime(path, (t, t))

    def cli(self, *args: str, timeout: float = 60) -> tuple[int, list[dict[str, object]], str]:
        """Run the real ``reloadctl`` (NDJSON): exit code, records, stderr."""
        proc = subprocess.run(
            [RELOADCTL, *args, "-o", "ndjson"],
            check=False,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )
        records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        return proc.returncode, records, proc.stderr


def by_target(records: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    """NDJSON records keyed by target (the summary line left out)."""
    return {str(r["target"]): r for r in records if "target" in r}
