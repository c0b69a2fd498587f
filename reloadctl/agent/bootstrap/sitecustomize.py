"""Agent bootstrap for the worker processes of a program whose agent passes on to them.

Agent inheritance (``reloadctl.agent.forks`` rule 3) puts this directory first on
``PYTHONPATH``, so every interpreter the program starts imports this file at start-up,
the way ``ddtrace-run`` and ``opentelemetry-instrument`` bootstrap theirs. It only imports
``reloadctl.agent.auto``, which decides from the environment and the command line whether
this process gets an agent (a multiprocessing worker does, a ``python -c`` helper does
not), then runs the ``sitecustomize`` this one hides, if there is one. Nothing here may
break the interpreter's start-up: every failure is swallowed.
"""

from __future__ import annotations

import contextlib
import os
import sys


def _activate() -> None:
    # Another interpreter without reloadctl, or a broken install: start-up goes on.
    with contextlib.suppress(Exception):
        import reloadctl.agent.auto  # noqa: F401 - importing it activates the agent


def _chain() -> None:
    """Run the next ``sitecustomize`` on ``sys.path`` (the one this file shadows).

    Its exceptions propagate: ``site`` reports them exactly as it would without us.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    from importlib.machinery import PathFinder

    spec = PathFinder.find_spec("sitecustomize", sys.path)
    if spec is None or spec.loader is None:
        return
    module = type(sys)("sitecustomize")
    module.__spec__ = spec
    module.__file__ = spec.origin
    module.__loader__ = spec.loader
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


_activate()
_chain()
