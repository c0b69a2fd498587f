"""Importing this module starts the agent the environment asks for; it never raises.

Rules:
1. ``RELOADCTL_AGENT_LISTEN=ADDR`` (``1``: the default unix socket) starts an agent in the
   process that imports this module; the value is parsed as an address, never evaluated.
   The variable is consumed (removed from ``os.environ``), so the programs this process
   starts do not start agents of their own from it.
2. Without it, ``RELOADCTL_AGENT_INHERIT=1`` (exported by a parent whose agent passes on to
   its workers, see ``agent.forks`` rule 3) is honoured by worker processes only, as
   told by the command line (``sys.orig_argv``):
   - a multiprocessing child started by spawn (``--multiprocessing-fork``; uvicorn
     ``--workers``, ``Pool`` under spawn) starts its own agent on its default socket;
   - the multiprocessing forkserver, and a known pre-fork server started by the program
     (``prefork_server``: e.g. gunicorn re-executing itself), start none but pass
     inheritance on to the children they fork;
   - anything else (multiprocessing's resource tracker, a ``python -c`` helper, another
     program) starts nothing.
3. Other settings come from the environment as for ``start()``. Problems are logged through
   ``logging.getLogger("reloadctl.agent.auto")``, never raised into the importer, so a
   ``sitecustomize`` or a ``.pth`` file can import this module safely.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Final

LISTEN_ENV: Final = "RELOADCTL_AGENT_LISTEN"
INHERIT_ENV: Final = "RELOADCTL_AGENT_INHERIT"

#: Interpreter options that take a value (``python -W error -m x``).
_OPTIONS_WITH_VALUE: Final = frozenset({"-W", "-X", "--check-hash-based-pycs"})
_TRUE: Final = frozenset({"1", "true", "yes", "on"})


def program_of(argv: Sequence[str]) -> tuple[str, list[str]]:
    """``(program, args)`` from an interpreter command line (``sys.orig_argv``).

    ``program`` is the ``-m`` module name, ``-c`` for a command string (then ``args``
    starts with the command), the script path, or ``""`` for an interactive interpreter.
    """
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in ("-m", "-c"):
            return (argv[i + 1] if arg == "-m" and i + 1 < len(argv) else arg), list(
                argv[i + 2 :] if arg == "-m" else argv[i + 1 :]
            )
        if arg.startswith("-m") and len(arg) > 2:
            return arg[2:], list(argv[i + 1 :])
        if arg in _OPTIONS_WITH_VALUE:
            i += 2
            continue
        if arg == "--":
            i += 1
            break
        if arg.startswith("-") and arg != "-":
            i += 1
            continue
        break
    return (argv[i], list(argv[i + 1 :])) if i < len(argv) else ("", [])


def _count_option(args: Sequence[str], *names: str) -> int | None:
    for i, arg in enumerate(args):
        for name in names:
            value = None
            if arg == name and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(name + "="):
                value = arg[len(name) + 1 :]
            if value is not None:
                return int(value) if value.isdigit() else None
    return None


def prefork_server(
    program: str, args: Sequence[str], environ: Mapping[str, str] | None = None
) -> str | None:
    """The name of the pre-fork server ``program args`` runs, else None.

    A pre-fork server runs no application code in its master and starts worker processes
    that do: gunicorn (always), uvicorn and hypercorn with more than one worker (or
    ``--reload``, whose server process is a spawned child), and a celery worker with its
    default prefork pool. ``program`` is a module name or a script path (``-m gunicorn``,
    ``/venv/bin/gunicorn``).
    """
    env = os.environ if environ is None else environ
    name = os.path.basename(program).removesuffix(".py").split(".")[0]
    if name == "gunicorn":
        return name
    if name in ("uvicorn", "hypercorn"):
        workers = _count_option(args, "--workers", "-w")
        if workers is None and name == "uvicorn":
            concurrency = env.get("WEB_CONCURRENCY", "")
            workers = int(concurrency) if concurrency.isdigit() else None
        if (workers is not None and workers > 1) or "--reload" in args:
            return name
        return None
    if name == "celery" and "worker" in args:
        pool = next(
            (a.split("=", 1)[1] for a in args if a.startswith(("--pool=", "-P="))),
            None,
        )
        for i, arg in enumerate(args[:-1]):
            if arg in ("--pool", "-P"):
                pool = args[i + 1]
        if pool in (None, "prefork"):
            return name
    return None


def _role(argv: Sequence[str]) -> str:
    """``"worker"``, ``"master"`` or ``""`` for this process under inheritance (rule 2)."""
    program, args = program_of(argv)
    if program == "-c":
        command = args[0] if args else ""
        if "--multiprocessing-fork" in args[1:] or "multiprocessing.spawn" in command:
            return "worker"
        if "multiprocessing.forkserver" in command:
            return "master"
        return ""
    if program and prefork_server(program, args) is not None:
        return "master"
    return ""


def activate() -> None:
    """Start the agent the environment asks for (rules 1-2); never raises."""
    raw = os.environ.get(LISTEN_ENV, "").strip()
    inherit = os.environ.get(INHERIT_ENV, "").strip().lower() in _TRUE
    if not raw and not inherit:
        return
    try:
        role = "" if raw else _role(getattr(sys, "orig_argv", sys.argv))
        if not raw and not role:
            return  # not a worker: nothing more is imported into this interpreter
        from reloadctl.agent import lifecycle

        if raw:
            lifecycle.start()  # reads the variable (1: the default socket) and consumes it
            return
        if role == "worker":
            from reloadctl.agent.config import default_listen_address
            from reloadctl.proto.address import format_address

            lifecycle.start(format_address(default_listen_address()), inherit=True)
        elif role == "master":
            lifecycle.start_in_children()
    except Exception as exc:  # noqa: BLE001 - an import hook must never break the host
        import logging

        logging.getLogger(__name__).error(
            "reloadctl agent not started (%s=%r): %s", LISTEN_ENV, raw[:100], exc
        )


activate()
