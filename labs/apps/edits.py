"""What an edit of a lab app is: a name, the kind of change, and the file changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Edit:
    """One realistic edit. ``changes`` maps a path under ``src/`` to ``(old, new)`` (replace
    the first ``old``) or a list of them, to a whole new text, or to None (delete)."""

    name: str
    kind: str
    changes: dict[str, Any]
