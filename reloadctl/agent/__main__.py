"""Entry point of ``python -m reloadctl.agent``: see ``reloadctl.agent.launcher``."""

from __future__ import annotations

import sys

from reloadctl.agent.launcher import main

if __name__ == "__main__":
    sys.exit(main())
