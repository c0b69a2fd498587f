"""reloadctl: live code reloading for running Python processes."""

from __future__ import annotations

__version__ = "0.1.0"
