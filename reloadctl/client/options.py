"""The typer options commands share, how a command receives them, and the boundary where an
error becomes a one-line message and an exit code.

Each command is decorated with ``shared(...)``: it is given the selection options as a
``Choice`` and the global options it takes (merged with those given before the command) as
``Settings``. A ``UsageError`` it raises exits 2 with one line, another ``ConfigError``
exits 1 (``client.run`` rule 1).

Annotations are evaluated here (no ``from __future__ import annotations``): typer reads them
from the signatures this module builds.
"""

import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Final, NoReturn, cast

import typer

from reloadctl import __version__
from reloadctl.client.settings import Choice, Output, Settings
from reloadctl.errors import ConfigError, UsageError

__all__ = [
    "ALL_SETTINGS",
    "AllowNewTopLevel",
    "Hosts",
    "Modules",
    "Push",
    "PushRoots",
    "PushWrite",
    "TlsCa",
    "TlsCert",
    "TlsKey",
    "Verify",
    "VersionOpt",
    "WatchPush",
    "fail",
    "shared",
    "warn",
]

Hosts = Annotated[
    list[str] | None,
    typer.Option(
        "--host",
        "-H",
        metavar="TARGET",
        help="Target: inventory name or address (unix:///p.sock, tcp://h:p, tls://h:p, "
        "host[:port]). Repeatable; commas allowed. Default: $RELOADCTL_HOST.",
        show_default=False,
    ),
]
Groups = Annotated[
    list[str] | None,
    typer.Option(
        "--group", "-g", metavar="GROUP", help="Every target of this inventory group. Repeatable."
    ),
]
AllGroups = Annotated[bool, typer.Option("--all", help="Every target in the inventory.")]
Local = Annotated[
    bool, typer.Option("--local", help="Every live agent of this user on this machine.")
]
OutputOpt = Annotated[
    Output | None,
    typer.Option(
        "--output", "-o", help="table, json or ndjson. Default: table on a terminal, else ndjson."
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")]
Verbose = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        show_default=False,
        help="More detail: tracebacks in tables, log lines (-vv: debug).",
    ),
]
Timeout = Annotated[
    float | None,
    typer.Option("--timeout", help="Seconds each target may take to answer. [default: 30]"),
]
ConnectTimeout = Annotated[
    float | None,
    typer.Option("--connect-timeout", help="Seconds to connect to each target. [default: 2]"),
]
Parallel = Annotated[
    int | None,
    typer.Option(
        "--parallel",
        "-P",
        help="Targets at a time. [default: min(32, 4 x CPUs); 64 with a tcp/tls target]",
    ),
]
Deadline = Annotated[
    float | None,
    typer.Option("--deadline", help="Seconds for the whole command; the rest is given up."),
]
SecretFile = Annotated[
    Path | None,
    typer.Option(
        "--secret-file",
        metavar="FILE",
        help="File holding the shared secret (mode 600). Default: $RELOADCTL_SECRET_FILE, "
        "the inventory's secret_file, then $RELOADCTL_SECRET. Never a value on the command "
        "line.",
        show_default=False,
    ),
]
TlsCa = Annotated[
    Path | None,
    typer.Option(
        "--tls-ca",
        metavar="FILE",
        help="CA (PEM) that signed the agents' certificates, for tls:// targets. "
        "Default: $RELOADCTL_CLIENT_TLS_CA, else the system CAs.",
        show_default=False,
    ),
]
TlsCert = Annotated[
    Path | None,
    typer.Option(
        "--tls-cert",
        metavar="FILE",
        help="Client certificate (PEM) for tls:// agents that require one. "
        "Default: $RELOADCTL_CLIENT_TLS_CERT.",
        show_default=False,
    ),
]
TlsKey = Annotated[
    Path | None,
    typer.Option(
        "--tls-key",
        metavar="FILE",
        help="Key (PEM) of --tls-cert. Default: $RELOADCTL_CLIENT_TLS_KEY.",
        show_default=False,
    ),
]
InventoryOpt = Annotated[
    Path | None,
    typer.Option(
        "--inventory",
        metavar="FILE",
        help="Inventory TOML. Default: $RELOADCTL_INVENTORY, else "
        "$XDG_CONFIG_HOME/reloadctl/inventory.toml.",
        show_default=False,
    ),
]
Push = Annotated[
    bool,
    typer.Option("--push", help="Ship this machine's source of the modules (see --root)."),
]
PushRoots = Annotated[
    list[Path] | None,
    typer.Option("--root", help="With --push: where the modules' files are (default: .)."),
]
PushWrite = Annotated[
    bool,
    typer.Option("--write", help="With --push: agents also write the files to their disk."),
]
AllowNewTopLevel = Annotated[
    bool,
    typer.Option(
        "--allow-new-top-level",
        help="With --push: allow a module that shadows an installed or stdlib package.",
    ),
]
WatchPush = Annotated[
    bool,
    typer.Option("--push", help="Ship the saved source to the targets (reload --push)."),
]


def warn(message: str) -> None:
    """One line on stderr, prefixed with ``reloadctl: ``."""
    typer.echo(f"reloadctl: {message}", err=True)


def fail(message: str, code: int | None = None) -> NoReturn:
    """``reloadctl: error: message`` on stderr, and exit with ``code`` (default: 1, a local
    problem)."""
    from reloadctl.client.verdict import ExitCode  # here: error paths only pay for it

    typer.echo(f"reloadctl: error: {message}", err=True)
    raise typer.Exit(ExitCode.FAILED if code is None else code)


def _usage(ctx: typer.Context, message: str) -> NoReturn:
    """One line, exit 2 (typer's own usage errors print their usage block instead)."""
    from reloadctl.client.verdict import ExitCode

    fail(f"{message} (see: {ctx.command_path} --help)", ExitCode.USAGE)


def _settings(ctx: typer.Context, **values: object) -> Settings:
    base = ctx.obj if isinstance(ctx.obj, Settings) else Settings()
    merged = base.merged(**values)
    if merged.verbose and not merged.quiet:
        import logging

        # -v: what reloadctl itself logs (stale sockets removed, ...); -vv: rpyc's debug too.
        level = logging.INFO if merged.verbose == 1 else logging.DEBUG
        logging.basicConfig(stream=sys.stderr, level=level, format="reloadctl: %(message)s")
    return merged


Modules = Annotated[
    list[str],
    typer.Argument(help="Dotted module names.", metavar="MODULE...", show_default=False),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"reloadctl {__version__}")
        raise typer.Exit()


VersionOpt = Annotated[
    bool | None,
    typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
]
Verify = Annotated[
    str | None,
    typer.Option(
        "--verify",
        metavar="MODULE:FUNCTION",
        help="Call this zero-argument function in each process after the reload; if it "
        "raises or returns False, that process rolls the reload back (VerifyFailed).",
    ),
]


#: The global options a command also takes after its name (given there, they win).
_SETTING_OPTIONS: Final[dict[str, tuple[object, object]]] = {
    "output": (OutputOpt, None),
    "quiet": (Quiet, False),
    "verbose": (Verbose, 0),
    "timeout": (Timeout, None),
    "connect_timeout": (ConnectTimeout, None),
    "parallel": (Parallel, None),
    "deadline": (Deadline, None),
    "secret_file": (SecretFile, None),
    "inventory": (InventoryOpt, None),
}
_SELECTION_OPTIONS: Final[dict[str, tuple[object, object]]] = {
    "hosts": (Hosts, None),
    "groups": (Groups, None),
    "all_groups": (AllGroups, False),
    "local": (Local, False),
}


def shared(
    *settings: str, select: bool = True
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the selection options (passed to it as ``choice``) and the global
    ``settings`` options (merged with the global ones, passed as ``s``).

    typer reads a command's parameters from its signature, so the wrapper advertises the
    command's own parameters plus these; one definition serves every command.
    """

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        sig = inspect.signature(command)
        ctx_param, *own = (p for p in sig.parameters.values() if p.name not in ("s", "choice"))
        kw = inspect.Parameter.KEYWORD_ONLY
        options = dict(_SELECTION_OPTIONS) if select else {}
        options.update({name: _SETTING_OPTIONS[name] for name in settings})
        added = [
            inspect.Parameter(name, kw, default=default, annotation=annotation)
            for name, (annotation, default) in options.items()
        ]
        selection_params = added[: len(_SELECTION_OPTIONS)] if select else []
        setting_params = added[len(selection_params) :]

        @functools.wraps(command)
        def wrapper(ctx: typer.Context, **values: object) -> None:
            extra: dict[str, object] = {}
            if select:
                # typer gives None or a list for a repeatable option; a Choice holds tuples.
                hosts = cast("list[str] | None", values.pop("hosts"))
                groups = cast("list[str] | None", values.pop("groups"))
                extra["choice"] = Choice(
                    tuple(hosts or ()),
                    tuple(groups or ()),
                    all_groups=bool(values.pop("all_groups")),
                    local=bool(values.pop("local")),
                )
            extra["s"] = _settings(ctx, **{name: values.pop(name) for name in settings})
            try:
                command(ctx, **extra, **values)
            except UsageError as exc:
                _usage(ctx, str(exc))
            except ConfigError as exc:
                fail(str(exc))

        params = [ctx_param, *selection_params, *own, *setting_params]
        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


ALL_SETTINGS: Final = tuple(_SETTING_OPTIONS)
