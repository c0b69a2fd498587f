"""gunicorn settings for the sample shop: one reloadctl agent in every worker.

``post_fork`` runs in each worker right after the fork, so each worker gets its own agent,
named by its own pid (``gunicorn-<pid>.sock`` in the runtime dir). The master (arbiter) gets
none: it runs no application code, and a thread there would make every later fork unsafe.
"""

from __future__ import annotations

from typing import Any

import reloadctl.agent


def post_fork(server: Any, worker: Any) -> None:
    """gunicorn hook: start this worker's agent (reads RELOADCTL_* settings itself)."""
    reloadctl.agent.start()
