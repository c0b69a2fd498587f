"""Fixtures for the fleet tests: a multi-host bed (``netbed``) and the code its agents run."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import netbed as nb
import pytest
from fleetkit import APP, FLEETCHECK, LEAKY, SECRET, Code


@pytest.fixture
def code(tmp_path: Path) -> Code:
    """``fleetmod`` (the module reloaded), ``fleetcheck`` (verify functions), the app."""
    (tmp_path / "fleetcheck.py").write_text(FLEETCHECK)
    app = tmp_path / "app.py"
    app.write_text(APP)
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in LEAKY}
    env.update(
        PYTHONPATH=str(tmp_path),
        PYTHONDONTWRITEBYTECODE="1",
        RELOADCTL_SECRET_FILE=str(secret),
        XDG_RUNTIME_DIR=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
    )
    c = Code(tmp_path, app, env)
    c.write("v1")
    return c


@pytest.fixture
def netbed() -> Iterator[Callable[..., nb.NetBed]]:
    """``netbed(hosts, rtt_ms=..., loss=...)``: a bed torn down after the test, pass or fail
    (and at exit, and by the next run's sweep if this process is killed)."""
    reason = nb.unavailable()
    if reason is not None:
        pytest.skip(f"multi-host bed unavailable: {reason}")
    beds: list[nb.NetBed] = []

    def make(hosts: int, **kwargs: float) -> nb.NetBed:
        bed = nb.NetBed(hosts, **kwargs)
        beds.append(bed)
        return bed

    try:
        yield make
    finally:
        for bed in beds:
            bed.close()
