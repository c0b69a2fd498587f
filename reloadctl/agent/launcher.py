"""``python -m reloadctl.agent [options] (-m module | script.py) [args...]``: the agent launcher.

Rules:
1. Options come before the program; everything after ``-m module`` or ``script.py`` belongs
   to the program untouched (``--listen`` after the script is the script's argument).
2. The agent starts first, then the program runs as ``__main__`` like ``python -m module``
   / ``python script.py`` do (``runpy``): ``sys.argv`` is ``[module path or script, *args]``,
   ``sys.path[0]`` is the current directory for ``-m`` and the script's directory for a
   script (never this package's directory).
3. The program's exit status is ours: ``sys.exit(n)``, an exception (traceback, status 1)
   or a normal return (status 0) work as with plain ``python``.
4. A usage error or an agent that cannot start prints one line to stderr and exits 2
   (usage) or 1 (agent); this is a command-line tool, so printing is allowed here only.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from collections.abc import Sequence
from typing import Final, NoReturn

from reloadctl.errors import ReloadctlError

USAGE: Final = (
    "python -m reloadctl.agent [--listen ADDR] [--secret-file FILE] [--allow PATTERN]... "
    "[--read-only] (-m module | script.py) [args...]"
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"reloadctl.agent: error: {message} (usage: {USAGE})\n")
        raise SystemExit(2)


def _parser() -> _Parser:
    parser = _Parser(
        prog="python -m reloadctl.agent",
        usage=USAGE,
        description="Run a Python program with the reloadctl agent started first.",
        add_help=True,
    )
    parser.add_argument("--listen", metavar="ADDR", help="agent address (default: unix socket)")
    parser.add_argument("--secret-file", metavar="FILE", help="chmod 600 file with the secret")
    parser.add_argument(
        "--allow", metavar="PATTERN", action="append", help="reloadable modules (repeatable)"
    )
    parser.add_argument("--read-only", action="store_true", default=None, help="refuse reloads")
    parser.add_argument("-m", dest="module", metavar="module", help="run a module as a script")
    return parser


def _split(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split our options from the program and its arguments (rule 1)."""
    takes_value = {"--listen", "--secret-file", "--allow"}
    ours: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "-m":
            return [*ours, *argv[i : i + 2]], list(argv[i + 2 :])
        if arg.startswith("-m") and len(arg) > 2:
            return [*ours, "-m", arg[2:]], list(argv[i + 1 :])
        if arg in takes_value:
            ours.extend(argv[i : i + 2])
            i += 2
            continue
        if arg == "--":
            return ours, list(argv[i + 1 :])
        if arg.startswith("-") and arg != "-":
            ours.append(arg)
            i += 1
            continue
        return ours, list(argv[i:])
    return ours, []


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), start the agent, run the program."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    ours, program = _split(args_in)
    parser = _parser()
    opts = parser.parse_args(ours)
    if opts.module is None and not program:
        parser.error("give a program to run: -m module or script.py")
    if opts.module is not None and not opts.module:
        parser.error("-m needs a module name")
    if opts.module is None and not os.path.isfile(program[0]):
        parser.error(f"cannot open file {program[0]!r}")

    from reloadctl.agent.lifecycle import start

    # The socket name comes from sys.argv[0] at start(): make it the program's (rule 2).
    sys.argv = [opts.module, *program] if opts.module is not None else list(program)
    try:
        start(
            opts.listen,
            secret_file=opts.secret_file,
            allow=opts.allow,
            read_only=opts.read_only,
        )
    except ReloadctlError as exc:
        sys.stderr.write(f"reloadctl.agent: error: {exc}\n")
        return 1

    if opts.module is not None:
        sys.path[0] = os.getcwd()
        runpy.run_module(opts.module, run_name="__main__", alter_sys=True)
    else:
        script = program[0]
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        runpy.run_path(script, run_name="__main__")
    return 0
