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
5. The program's worker processes get their own agents (inheritance, ``agent.forks``
   rule 3: forked children, multiprocessing children) unless ``--no-inherit``.
6. A known pre-fork server (``auto.prefork_server``: gunicorn, uvicorn/hypercorn with
   workers, celery's prefork worker) gets no agent in its master, only in its workers
   (``start_in_children``), unless ``--master`` asks for one there too; ``--listen`` then
   needs ``--master`` (it names one process; each worker listens on its own socket).
7. A program known to run the application in a re-executed interpreter, which no hook
   reaches (``UNHOOKABLE``: Django's and Flask's reloaders), gets a one-line note on
   stderr saying how to embed the agent by hand; the program runs anyway.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from collections.abc import Callable, Sequence

from reloadctl.errors import ReloadctlError

# Start-up time is the program's: typing is only for the type checker (annotations are
# strings), and argparse's formatter must not import shutil for the terminal width.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final, NoReturn

USAGE: Final = (
    "python -m reloadctl.agent [--listen ADDR] [--secret-file FILE] [--allow PATTERN]... "
    "[--read-only] [--no-inherit] [--master] (-m module | script.py) [args...]"
)


def _django_reloader(prog: str, args: Sequence[str]) -> bool:
    django = prog in ("manage", "django", "django-admin")
    return django and "runserver" in args and "--noreload" not in args


def _flask_reloader(prog: str, args: Sequence[str]) -> bool:
    reloads = "--reload" in args or "--debug" in args
    return prog == "flask" and "run" in args and reloads and "--no-reload" not in args


#: (test on the program name and its args, note): rule 7.
UNHOOKABLE: Final[tuple[tuple[Callable[[str, Sequence[str]], bool], str], ...]] = (
    (
        _django_reloader,
        "Django's autoreloader serves from a re-executed interpreter, which gets no agent: "
        "add --noreload (reloadctl reloads in place), or call reloadctl.agent.start() in "
        "your AppConfig.ready()",
    ),
    (
        _flask_reloader,
        "Flask's reloader serves from a re-executed interpreter, which gets no agent: add "
        "--no-reload (reloadctl reloads in place), or call reloadctl.agent.start() in "
        "create_app()",
    ),
)


class _Formatter(argparse.RawDescriptionHelpFormatter):  # keeps the examples as written
    def __init__(self, prog: str) -> None:
        columns = os.environ.get("COLUMNS", "")
        width = int(columns) if columns.isdigit() else 80
        super().__init__(prog, width=max(40, width - 2))


EXAMPLES: Final = """examples:
  python -m reloadctl.agent app.py --port 8000        # a script, unchanged
  python -m reloadctl.agent -m myservice.main         # a module, like python -m
  python -m reloadctl.agent -m gunicorn -w 4 app:wsgi # one agent per worker
  python -m reloadctl.agent --listen tcp://0.0.0.0:7878 --secret-file /run/secrets/rc app.py
then, from another terminal: reloadctl reload --local MODULE"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"reloadctl.agent: error: {message} (usage: {USAGE})\n")
        raise SystemExit(2)


def _parser() -> _Parser:
    parser = _Parser(
        prog="python -m reloadctl.agent",
        usage=USAGE,
        description="Run a Python program with the reloadctl agent started first.",
        epilog=EXAMPLES,
        add_help=True,
        formatter_class=_Formatter,
    )
    parser.add_argument("--listen", metavar="ADDR", help="agent address (default: unix socket)")
    parser.add_argument("--secret-file", metavar="FILE", help="chmod 600 file with the secret")
    parser.add_argument(
        "--allow", metavar="PATTERN", action="append", help="reloadable modules (repeatable)"
    )
    parser.add_argument("--read-only", action="store_true", default=None, help="refuse reloads")
    parser.add_argument(
        "--no-inherit",
        action="store_true",
        help="no agents in the program's worker processes (forked, multiprocessing)",
    )
    parser.add_argument(
        "--master",
        action="store_true",
        help="also start an agent in a pre-fork server's master (gunicorn, uvicorn --workers)",
    )
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


def _note(name: str, args: Sequence[str]) -> None:
    """Rule 7: one line on stderr for a program whose application no hook reaches."""
    prog = os.path.basename(name).removesuffix(".py").split(".")[0]
    notes = [note for test, note in UNHOOKABLE if test(prog, list(args))]
    for note in notes:
        sys.stderr.write(f"reloadctl.agent: note: {note}\n")


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

    from reloadctl.agent.auto import prefork_server

    name = opts.module if opts.module is not None else program[0]
    args = program if opts.module is not None else program[1:]
    server = prefork_server(name, args)
    workers_only = server is not None and not opts.master
    if workers_only and opts.no_inherit:
        parser.error(f"--no-inherit: neither {server}'s master nor its workers would get an agent")
    if workers_only and opts.listen is not None:
        parser.error(
            f"--listen names one process, and each {server} worker listens on its own socket; "
            "add --master for an agent at ADDR in the master"
        )
    _note(name, args)

    from reloadctl.agent.lifecycle import start, start_in_children

    # The socket name comes from sys.argv[0] at start(): make it the program's (rule 2).
    sys.argv = [opts.module, *program] if opts.module is not None else list(program)
    try:
        if workers_only:
            start_in_children(
                secret_file=opts.secret_file, allow=opts.allow, read_only=opts.read_only
            )
        else:
            start(
                opts.listen,
                secret_file=opts.secret_file,
                allow=opts.allow,
                read_only=opts.read_only,
                inherit=not opts.no_inherit,
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
