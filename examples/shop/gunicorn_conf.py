"""gunicorn settings for the sample shop: one reloadctl agent in every worker.

``post_fork`` runs in each worker right after the fork, so each worker gets its own agent,
named by its own pid (``gunicorn-<pid>.sock`` in the runtime dir). The master (arbiter) gets
none: it runs no application code, and a thread there would make every later fork unsafe.
"""

from __future__ import annotations

import logging
from typing import Any

import reloadctl.agent
from reloadctl.errors import ReloadctlError


def post_fork(server: Any, worker: Any) -> None:
    """gunicorn hook: start this worker's agent (reads RELOADCTL_* settings itself)."""
    try:
        reloadctl.agent.start()
    except ReloadctlError:
        # A bad agent setting must not stop the worker from booting: gunicorn halts when
        # workers fail to boot, and serving without live reload beats not serving.
        logging.getLogger("gunicorn.error").exception("reloadctl agent not started")
