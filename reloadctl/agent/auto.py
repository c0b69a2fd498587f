"""Importing this module starts the agent when ``RELOADCTL_AGENT_LISTEN`` is set.

``RELOADCTL_AGENT_LISTEN=1`` (or empty-but-set is ignored) starts the default unix-socket
agent; any other value is parsed as an address (never evaluated). The other settings come
from the environment as for ``start()``. Problems are logged through
``logging.getLogger("reloadctl.agent.auto")``; nothing is raised into the importer, so
a ``sitecustomize`` or a ``.pth`` file can import this safely.
"""

from __future__ import annotations

import logging
import os

from reloadctl.agent.config import LISTEN_ENV

log = logging.getLogger(__name__)


def activate() -> None:
    """Start the agent if ``RELOADCTL_AGENT_LISTEN`` asks for it; never raises."""
    raw = os.environ.get(LISTEN_ENV, "").strip()
    if not raw:
        return
    try:
        from reloadctl.agent.lifecycle import start

        start(None if raw == "1" else raw)
    except Exception as exc:  # noqa: BLE001 - an import hook must never break the host
        log.error("reloadctl agent not started (%s=%r): %s", LISTEN_ENV, raw[:100], exc)


activate()
