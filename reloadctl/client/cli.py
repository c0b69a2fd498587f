"""The ``reloadctl`` command line: parse, select targets, fan out, render, exit with a code.

Exit codes are computed in ``exit_code`` and nowhere else. Precedence, first match wins:

1. 130 interrupted (Ctrl-C), whatever else happened;
2. 5   a rollout was aborted (``--max-failures``, ``--fail-fast``, ``rollout abort``);
3. 4   at least one target rejected our credentials (a configuration problem to fix first);
4. 3   a target did not answer (unreachable, timeout, not attempted): silence is never
       success, and never "everything failed" either, since what it did is unknown;
5. 0   every (target, module) record is ``reloaded``/``unchanged``/``not_loaded``
       (``ok`` for ping/status), where ``not_loaded`` counts as failed for a module that no
       selected target has loaded (usually a typo; one stderr line says so);
6. 1   every record failed;
7. 3   some succeeded and some failed, were refused, timed out, were unreachable or were
       not attempted (silence is never success).

Errors before any target is contacted: 2 for usage (typer's own, an empty selection, an
unknown group, a bad address or rollout option), 1 for a local problem (malformed
inventory, unusable secret file, untrusted socket directory, watchfiles missing).
"""

import enum
import functools
import inspect
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final, NoReturn, cast

import typer

from reloadctl import __version__

if TYPE_CHECKING:
    from reloadctl.client.fanout import FanoutOptions, Outcome, Transport
    from reloadctl.client.inventory import Inventory
    from reloadctl.client.rollout import RolloutPlan
    from reloadctl.client.targets import Selection, Target
    from reloadctl.proto.messages import ReloadRequest, RollbackRequest, StatusRequest
    from reloadctl.secrets import Secret

__all__ = ["app", "exit_code", "main"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_PARTIAL: Final = 3
EXIT_AUTH: Final = 4
EXIT_ABORTED: Final = 5
EXIT_INTERRUPTED: Final = 130

DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_CONNECT_TIMEOUT: Final = 2.0

#: Test seam: replaced by tests with a fake transport; None means connection.execute.
TRANSPORT: "Transport | None" = None


class Output(str, enum.Enum):
    """Output formats (``-o``)."""

    table = "table"
    json = "json"
    ndjson = "ndjson"


app = typer.Typer(
    name="reloadctl",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # plain help: rich costs ~50 ms per --help
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
rollout_app = typer.Typer(
    help="Control a rollout paused with --pause: reloadctl rollout resume ID.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(rollout_app, name="rollout")


# -- option types, shared by the app callback and every command ------------------------------

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
        "Default: $RELOADCTL_TLS_CA, else the system CAs.",
        show_default=False,
    ),
]
TlsCert = Annotated[
    Path | None,
    typer.Option(
        "--tls-cert",
        metavar="FILE",
        help="Client certificate (PEM) for tls:// agents that require one. "
        "Default: $RELOADCTL_TLS_CERT.",
        show_default=False,
    ),
]
TlsKey = Annotated[
    Path | None,
    typer.Option(
        "--tls-key",
        metavar="FILE",
        help="Key (PEM) of --tls-cert. Default: $RELOADCTL_TLS_KEY.",
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


@dataclass(frozen=True, slots=True)
class Settings:
    """Global options merged with a command's own (the command's value wins)."""

    output: Output | None = None
    quiet: bool = False
    verbose: int = 0
    timeout: float | None = None
    connect_timeout: float | None = None
    parallel: int | None = None
    deadline: float | None = None
    secret_file: Path | None = None
    inventory: Path | None = None

    def merged(self, **values: object) -> "Settings":
        """Override with every value that was given (not None/False/0)."""
        given = {
            k: v
            for k, v in values.items()
            if v is not None and v is not False and not (k == "verbose" and v == 0)
        }
        if "verbose" in given:
            given["verbose"] = self.verbose + int(given["verbose"])  # type: ignore[call-overload]
        return replace(self, **given)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Choice:
    """The selection options as given to a command (``-H``, ``-g``, ``--all``, ``--local``)."""

    hosts: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    all_groups: bool = False
    local: bool = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"reloadctl {__version__}")
        raise typer.Exit(EXIT_OK)


# -- the one place exit codes are decided ---------------------------------------------------


def exit_code(
    outcomes: "Sequence[Outcome]",
    *,
    aborted: bool = False,
    interrupted: bool = False,
    typos: Sequence[str] = (),
) -> int:
    """The process exit code for a finished command (precedence in the module docstring).

    Args:
        outcomes: one per selected target.
        aborted: a rollout was aborted.
        interrupted: the user pressed Ctrl-C.
        typos: modules loaded by no selected target (``fanout.modules_loaded_nowhere``).
    """
    from reloadctl.client.fanout import ANSWERED
    from reloadctl.results import (
        AUTH_FAILED,
        NOT_ATTEMPTED,
        NOT_LOADED,
        OK_STATUSES,
        TIMEOUT,
        UNREACHABLE,
    )

    silent = (UNREACHABLE, TIMEOUT, NOT_ATTEMPTED)

    if interrupted:
        return EXIT_INTERRUPTED
    if aborted:
        return EXIT_ABORTED
    if any(o.status == AUTH_FAILED for o in outcomes):
        return EXIT_AUTH
    if any(o.status in silent for o in outcomes):
        # never 1 ("everything failed"): what a silent target did is unknown, maybe applied
        return EXIT_PARTIAL
    verdicts: list[bool] = []
    for o in outcomes:
        if not o.results:
            verdicts.append(o.status == ANSWERED)
        for r in o.results:
            verdicts.append(
                r.status in OK_STATUSES and not (r.status == NOT_LOADED and r.module in typos)
            )
    if all(verdicts):
        return EXIT_OK
    if not any(verdicts):
        return EXIT_FAILED
    return EXIT_PARTIAL


# -- shared plumbing ------------------------------------------------------------------------


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"reloadctl: error: {message}", err=True)
    raise typer.Exit(code)


def _usage(ctx: typer.Context, message: str) -> NoReturn:
    """One line, exit 2 (typer's own usage errors print their usage block instead)."""
    _fail(f"{message} (see: {ctx.command_path} --help)", EXIT_USAGE)


def _settings(ctx: typer.Context, **values: object) -> Settings:
    base = ctx.obj if isinstance(ctx.obj, Settings) else Settings()
    merged = base.merged(**values)
    if merged.verbose and not merged.quiet:
        import logging

        # -v: what reloadctl itself logs (stale sockets removed, ...); -vv: rpyc's debug too.
        level = logging.INFO if merged.verbose == 1 else logging.DEBUG
        logging.basicConfig(stream=sys.stderr, level=level, format="reloadctl: %(message)s")
    return merged


def _output(s: Settings) -> str:
    if s.output is not None:
        return s.output.value
    return "table" if sys.stdout.isatty() else "ndjson"


#: Default pool when a target is remote (tcp/tls): a remote reload waits on round trips,
#: not on the client's CPU, so many can be in flight (one socket each).
REMOTE_PARALLEL = 64


def default_parallel(targets: "Sequence[Target]" = ()) -> int:
    """``min(32, 4 x CPUs)`` for local agents: the client is GIL-bound for them (agent-fleet
    F3); ``REMOTE_PARALLEL`` once a target is tcp:// or tls:// (bound by latency)."""
    if any(t.address.startswith(("tcp://", "tls://")) for t in targets):
        return REMOTE_PARALLEL
    return min(32, 4 * (os.cpu_count() or 1))


def _fanout_options(
    ctx: typer.Context, s: Settings, targets: "Sequence[Target]" = ()
) -> "FanoutOptions":
    from reloadctl.client.fanout import FanoutOptions

    try:
        return FanoutOptions(
            parallel=default_parallel(targets) if s.parallel is None else s.parallel,
            connect_timeout=DEFAULT_CONNECT_TIMEOUT
            if s.connect_timeout is None
            else s.connect_timeout,
            timeout=DEFAULT_TIMEOUT if s.timeout is None else s.timeout,
            deadline=s.deadline,
        )
    except ValueError as exc:
        _usage(ctx, str(exc))


def _inventory(s: Settings, needed: bool) -> "Inventory":
    from reloadctl.client.inventory import Inventory, default_inventory_path, load_inventory
    from reloadctl.errors import InventoryError

    path = s.inventory
    if path is None:
        path = default_inventory_path()
        if not needed and not path.exists():
            return Inventory(path="")
    try:
        return load_inventory(path, required=s.inventory is not None)
    except InventoryError as exc:
        _fail(str(exc), EXIT_FAILED)


def _select(
    ctx: typer.Context, s: Settings, choice: "Choice", *, allow_empty: bool = False
) -> "Selection":
    """The targets ``choice`` selects; usage errors exit 2, local problems exit 1."""
    from reloadctl.client.targets import select_targets
    from reloadctl.errors import AddressError, ConfigError, InventoryError

    hosts, groups, all_groups, local = choice.hosts, choice.groups, choice.all_groups, choice.local
    inv = _inventory(s, needed=bool(groups) or all_groups)
    for g in groups:
        try:
            inv.group(g)
        except InventoryError as exc:
            _usage(ctx, str(exc))
    try:
        selection = select_targets(
            hosts,
            groups,
            all_groups=all_groups,
            local=local,
            inventory=inv,
            resolve_timeout=s.connect_timeout or DEFAULT_CONNECT_TIMEOUT,
        )
    except AddressError as exc:
        _usage(ctx, str(exc))
    except ConfigError as exc:
        _fail(str(exc), EXIT_FAILED)
    if not selection.targets and not allow_empty:
        if local and not (hosts or groups or all_groups):
            _fail("no live reloadctl agent of this user found on this machine", EXIT_FAILED)
        _usage(ctx, "no targets selected: use -H TARGET, -g GROUP, --all or --local")
    return selection


def _secrets(s: Settings, targets: "Sequence[Target]") -> "Callable[[Target], Secret | None]":
    """Load every secret needed up front, so a bad secret file fails before any target."""
    from reloadctl.errors import SecretError
    from reloadctl.secrets import load_secret

    cache: dict[str, Secret | None] = {}

    def key(t: "Target") -> str:
        if s.secret_file is not None:
            return str(s.secret_file)
        return t.secret_file

    try:
        for t in targets:
            k = key(t)
            if k not in cache:
                cache[k] = load_secret(secret_file=k or None)
    except SecretError as exc:
        _fail(str(exc), EXIT_FAILED)
    return lambda t: cache[key(t)]


def _warn(message: str) -> None:
    typer.echo(f"reloadctl: {message}", err=True)


def _run(
    ctx: typer.Context,
    s: Settings,
    selection: "Selection",
    request: "ReloadRequest | RollbackRequest | StatusRequest",
    *,
    kind: str,
    plan: "RolloutPlan | None" = None,
    rollback_prefix: Sequence[str] = (),
) -> NoReturn:
    """Load the secrets, fan ``request`` out, render it and exit with the code."""
    options = _fanout_options(ctx, s, selection.targets)
    secret_for = _secrets(s, selection.targets)
    raise typer.Exit(
        _fan_out(
            s,
            selection.targets,
            request,
            kind=kind,
            options=options,
            secret_for=secret_for,
            plan=plan,
            rollback_prefix=rollback_prefix,
        )
    )


def _fan_out(
    s: Settings,
    targets: "Sequence[Target]",
    request: "ReloadRequest | RollbackRequest | StatusRequest",
    *,
    kind: str,
    options: "FanoutOptions",
    secret_for: "Callable[[Target], Secret | None]",
    plan: "RolloutPlan | None" = None,
    rollback_prefix: Sequence[str] = (),
) -> int:
    """Run ``request`` (through the rollout runner), render every outcome, print the
    typo, abort and interrupt lines, and return the exit code."""
    from reloadctl.client import fanout
    from reloadctl.client.render import Renderer

    renderer = Renderer(
        _output(s),
        kind,
        sys.stdout,
        sys.stderr,
        total=len(targets),
        quiet=s.quiet,
        live=sys.stderr.isatty(),
        verbose=s.verbose > 0,
    )

    def run_batch(
        batch: "Sequence[Target]", cancel: threading.Event, take: "Callable[[Outcome], None]"
    ) -> "fanout.FanoutReport":
        return fanout.run(
            batch,
            request,
            options=options,
            transport=TRANSPORT,
            secret_for=secret_for,
            on_outcome=take,
            cancel=cancel,
        )

    if plan is None:
        # No rollout option: one batch of every target, which is what run_rollout does with
        # an empty plan (never aborts, never pauses), without loading the rollout module.
        batch = run_batch(targets, threading.Event(), renderer.outcome)
        outcomes, interrupted = batch.outcomes, batch.interrupted
        # None: not aborted; else the targets the aborted rollout had already changed
        undo: tuple[Target, ...] | None = None
    else:
        from reloadctl.client.rollout import run_rollout

        report = run_rollout(
            targets,
            request,
            plan=plan,
            run_batch=run_batch,
            on_outcome=renderer.outcome,
            on_event=lambda m: None if s.quiet else _warn(m),
            notify=_warn,
        )
        outcomes, interrupted = report.outcomes, report.interrupted
        undo = report.changed if report.aborted else None
    renderer.finish()
    typos = fanout.modules_loaded_nowhere(outcomes) if kind == "modules" else []
    for module in typos:
        _warn(f"{module}: not loaded by any selected target (a typo?); counted as failed")
    if undo:
        from reloadctl.client.rollout import rollback_command
        from reloadctl.proto.messages import StatusRequest

        modules = [] if isinstance(request, StatusRequest) else list(request.modules)
        _warn("to undo the targets already changed, run:")
        typer.echo("  " + rollback_command(undo, modules, rollback_prefix), err=True)
    if interrupted:
        _warn("interrupted: targets not started are not_attempted")
    return exit_code(
        outcomes,
        aborted=undo is not None,
        interrupted=interrupted,
        typos=typos,
    )


def _rollout_plan(
    ctx: typer.Context,
    *,
    canary: int,
    batch: str | None,
    max_failures: str | None,
    fail_fast: bool,
    ignore_unreachable: bool,
    pause: bool,
) -> "RolloutPlan | None":
    """The plan the rollout options describe; None when none was given (one batch)."""
    if not (canary or batch or max_failures or fail_fast or ignore_unreachable or pause):
        return None  # plain fan-out: the rollout module is not even imported
    from reloadctl.client.rollout import RolloutPlan, parse_sizes, parse_threshold

    try:
        sizes = parse_sizes(batch) if batch else ()
        threshold = parse_threshold(max_failures) if max_failures else None
    except ValueError as exc:
        _usage(ctx, str(exc))
    if canary < 0:
        _usage(ctx, "--canary must be 0 or more")
    if pause and not (canary or sizes):
        _usage(ctx, "--pause needs --canary N or --batch (it pauses after the first batch)")
    return RolloutPlan(canary, sizes, threshold, fail_fast, ignore_unreachable, pause)


def _prefix(s: Settings, changed_secret_files: set[str]) -> list[str]:
    prefix: list[str] = []
    if s.secret_file is not None:
        prefix += ["--secret-file", str(s.secret_file)]
    elif len(changed_secret_files) == 1 and "" not in changed_secret_files:
        prefix += ["--secret-file", next(iter(changed_secret_files))]
    return prefix


# -- commands -------------------------------------------------------------------------------

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


def _shared(
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
        shared = dict(_SELECTION_OPTIONS) if select else {}
        shared.update({name: _SETTING_OPTIONS[name] for name in settings})
        added = [
            inspect.Parameter(name, kw, default=default, annotation=annotation)
            for name, (annotation, default) in shared.items()
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
            command(ctx, **extra, **values)

        params = [ctx_param, *selection_params, *own, *setting_params]
        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


_ALL_SETTINGS: Final = tuple(_SETTING_OPTIONS)


@app.callback()
@_shared(*_ALL_SETTINGS, select=False)
def _root(
    ctx: typer.Context,
    s: Settings,
    *,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Reload Python modules inside running processes, one process or a whole fleet.

    Each target process runs the reloadctl agent (python -m reloadctl.agent app.py, or
    reloadctl.agent.start() in the program). Global options go before the command; most
    can also be given after it.

    \b
    Examples:
      reloadctl reload -H unix:///run/user/1000/reloadctl/app-4242.sock shop.pricing
      reloadctl reload --local shop.pricing shop.cart
      reloadctl -o ndjson reload -g web --canary 1 --batch 25% --max-failures 10% shop.pricing
      reloadctl status --local

    \b
    Exit codes:
      0  every target did what was asked     3  partial: some failed, refused or silent
      1  all failed, or a local error        4  a target rejected our credentials
      2  usage error, empty selection        5  rollout aborted; 130 interrupted
    """
    # connection.execute reads these for tls:// targets (file paths, never secrets)
    for var, path in (
        ("RELOADCTL_TLS_CA", tls_ca),
        ("RELOADCTL_TLS_CERT", tls_cert),
        ("RELOADCTL_TLS_KEY", tls_key),
    ):
        if path is not None:
            os.environ[var] = str(path.expanduser().resolve())
    ctx.obj = s


Modules = Annotated[
    list[str],
    typer.Argument(help="Dotted module names.", metavar="MODULE...", show_default=False),
]


@app.command()
@_shared(*_ALL_SETTINGS)
def reload(
    ctx: typer.Context,
    s: Settings,
    choice: Choice,
    *,
    modules: Modules,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Validate and plan only; change nothing.")
    ] = False,
    dependents: Annotated[
        bool,
        typer.Option(
            "--dependents",
            help="Also rebind `from MODULE import name` copies held by other loaded modules.",
        ),
    ] = False,
    canary: Annotated[
        int, typer.Option("--canary", help="Reload this many targets first, as one batch.")
    ] = 0,
    batch: Annotated[
        str | None, typer.Option("--batch", help="Batch sizes after the canary, e.g. 1,5,25%.")
    ] = None,
    max_failures: Annotated[
        str | None,
        typer.Option(
            "--max-failures",
            help="Abort when failed targets are MORE than N or P% (per batch and overall).",
        ),
    ] = None,
    fail_fast: Annotated[
        bool, typer.Option("--fail-fast", help="Stop at the first failed target.")
    ] = False,
    ignore_unreachable: Annotated[
        bool,
        typer.Option("--ignore-unreachable", help="Unreachable targets do not count as failed."),
    ] = False,
    pause: Annotated[
        bool,
        typer.Option("--pause", help="Wait after the canary for: reloadctl rollout resume ID."),
    ] = False,
    verify: Annotated[
        str | None,
        typer.Option(
            "--verify",
            metavar="MODULE:FUNCTION",
            help="Call this zero-argument function in each process after the reload; if it "
            "raises or returns False, that process rolls the reload back (VerifyFailed).",
        ),
    ] = None,
) -> None:
    """Reload modules in every selected process, as one transaction per process.

    Each process validates the new source first; a module that fails (syntax error,
    exception in its body) leaves that process exactly as it was. One record per
    (target, module); the exit code says whether everything worked.

    \b
    Examples:
      reloadctl reload -H unix:///run/user/1000/reloadctl/app-4242.sock shop.pricing
      reloadctl reload --local --dry-run shop.pricing
      reloadctl reload -H web1 -H web2:7001 -o ndjson shop.pricing shop.cart
      reloadctl reload -g web --canary 1 --batch 25% --max-failures 10% shop.pricing
      reloadctl reload -g web --canary 1 --pause shop.pricing   # then: reloadctl rollout resume ID
    """
    from reloadctl.proto.messages import ReloadRequest

    plan = _rollout_plan(
        ctx,
        canary=canary,
        batch=batch,
        max_failures=max_failures,
        fail_fast=fail_fast,
        ignore_unreachable=ignore_unreachable,
        pause=pause,
    )
    if verify is not None and (":" not in verify or verify.startswith(":") or verify.endswith(":")):
        _usage(ctx, f"--verify {verify!r}: expected MODULE:FUNCTION")
    selection = _select(ctx, s, choice)
    options = _fanout_options(ctx, s)
    request = ReloadRequest(
        tuple(dict.fromkeys(modules)),
        dry_run=dry_run,
        dependents=dependents,
        deadline_s=options.timeout,
        verify=verify or "",
    )
    prefix = _prefix(s, {t.secret_file for t in selection.targets})
    _run(ctx, s, selection, request, kind="modules", plan=plan, rollback_prefix=prefix)


@app.command()
@_shared(*_ALL_SETTINGS)
def rollback(ctx: typer.Context, s: Settings, choice: Choice, *, modules: Modules) -> None:
    """Restore modules to the version each process ran before its last reload.

    \b
    Examples:
      reloadctl rollback -H unix:///run/user/1000/reloadctl/app-4242.sock shop.pricing
      reloadctl rollback -g web shop.pricing
    """
    from reloadctl.proto.messages import RollbackRequest

    selection = _select(ctx, s, choice)
    options = _fanout_options(ctx, s)
    request = RollbackRequest(tuple(dict.fromkeys(modules)), deadline_s=options.timeout)
    _run(ctx, s, selection, request, kind="modules")


def _status(ctx: typer.Context, s: Settings, choice: Choice) -> NoReturn:
    from reloadctl.proto.messages import StatusRequest

    _run(ctx, s, _select(ctx, s, choice), StatusRequest(), kind="agents")


@app.command()
@_shared(*_ALL_SETTINGS)
def ping(ctx: typer.Context, s: Settings, choice: Choice) -> None:
    """Check that every selected agent answers (exit 0 only if all do).

    \b
    Examples:
      reloadctl ping --local
      reloadctl ping -g web --timeout 2
    """
    _status(ctx, s, choice)


@app.command()
@_shared(*_ALL_SETTINGS)
def status(ctx: typer.Context, s: Settings, choice: Choice) -> None:
    """Show each agent: pid, program, Python, versions, uptime, patched modules.

    Patched modules are those reloaded since the agent started, each marked when the
    running code now differs from the source on disk.

    \b
    Examples:
      reloadctl status --local
      reloadctl status -H web1 -o json
    """
    _status(ctx, s, choice)


@app.command()
@_shared("output", "quiet", "verbose", "timeout", "connect_timeout", "parallel", select=False)
def ps(ctx: typer.Context, s: Settings) -> None:
    """List this user's agents on this machine, with their status.

    Agents are found by their sockets in the runtime directory; sockets of processes that
    are gone are stale and are removed.

    \b
    Examples:
      reloadctl ps
      reloadctl ps -o json
    """
    from reloadctl.proto.messages import StatusRequest

    if s.timeout is None:
        s = replace(s, timeout=2.0)  # a local listing should not wait 30 s for a hung agent
    selection = _select(ctx, s, Choice(local=True), allow_empty=True)
    if not selection.targets:
        if not s.quiet:
            _warn("no live reloadctl agent of this user found on this machine")
        from reloadctl.client.render import Renderer

        renderer = Renderer(_output(s), "agents", sys.stdout, sys.stderr, total=0, quiet=True)
        renderer.finish()
        raise typer.Exit(EXIT_OK)
    _run(ctx, s, selection, StatusRequest(), kind="agents")


@app.command()
@_shared("output", "connect_timeout", "inventory")
def targets(ctx: typer.Context, s: Settings, choice: Choice) -> None:
    """Preview the selection without contacting any target.

    Shows, in order, the targets a command with these options would contact (host names
    are resolved).

    \b
    Examples:
      reloadctl targets -g web
      reloadctl targets --all -o json
    """
    import json

    selection = _select(ctx, s, choice)
    records: list[dict[str, object]] = [
        {
            "target": t.name,
            "address": t.address,
            "group": t.group,
            "labels": dict(t.labels),
            "problem": t.problem or None,
        }
        for t in selection.targets
    ]
    out = _output(s)
    if out == "ndjson":
        for record in records:
            typer.echo(json.dumps(record, separators=(",", ":")))
    elif out == "json":
        typer.echo(json.dumps({"targets": records}, indent=2))
    else:
        from reloadctl.client.render import format_table

        rows = [["TARGET", "ADDRESS", "GROUP", "LABELS", "PROBLEM"]]
        for t in selection.targets:
            labels = ",".join(f"{k}={v}" for k, v in t.labels)
            rows.append([t.name, t.address, t.group or "-", labels or "-", t.problem or "-"])
        typer.echo("\n".join(format_table(rows)))
    raise typer.Exit(EXIT_OK)


@app.command()
@_shared(
    "output",
    "quiet",
    "verbose",
    "timeout",
    "connect_timeout",
    "parallel",
    "secret_file",
    "inventory",
)
def watch(
    ctx: typer.Context,
    s: Settings,
    choice: Choice,
    *,
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Source directories or files to watch.", metavar="PATH...", show_default=False
        ),
    ],
) -> None:
    """Reload modules in the selected processes each time their source files are saved.

    Each save becomes one reload of the changed modules on every target; a failed reload
    (say, a syntax error while typing) is reported and watching goes on. Stop with Ctrl-C.
    Needs the watch extra: pip install 'reloadctl[watch]'.

    \b
    Examples:
      reloadctl watch src --local
      reloadctl watch src/shop -H unix:///run/user/1000/reloadctl/app-4242.sock
    """
    from reloadctl.proto.messages import ReloadRequest

    try:
        from reloadctl.client.watch import INSTALL_HINT, watch_modules
    except ImportError:
        _fail("watching needs: pip install 'reloadctl[watch]'", EXIT_FAILED)
    import importlib.util

    if importlib.util.find_spec("watchfiles") is None:
        _fail(INSTALL_HINT, EXIT_FAILED)
    for p in paths:
        if not p.exists():
            _usage(ctx, f"{p} does not exist")
    selection = _select(ctx, s, choice)
    options = _fanout_options(ctx, s)
    secret_for = _secrets(s, selection.targets)
    last = [EXIT_OK]

    def on_change(modules: list[str]) -> None:
        if not modules:
            return
        if not s.quiet:
            _warn(f"changed: {', '.join(modules)}")
        request = ReloadRequest(tuple(modules), deadline_s=options.timeout)
        last[0] = _fan_out(
            s,
            selection.targets,
            request,
            kind="modules",
            options=options,
            secret_for=secret_for,
        )

    if not s.quiet:
        _warn(f"watching {', '.join(map(str, paths))} for {len(selection.targets)} targets")
    from reloadctl.errors import ConfigError

    try:
        watch_modules(paths, on_change)
    except ConfigError as exc:
        _fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    raise typer.Exit(last[0])


def _steer_rollout(rollout_id: str, action: str) -> None:
    from reloadctl.client import rollout
    from reloadctl.errors import ConfigError

    steer = rollout.resume_rollout if action == "resumed" else rollout.abort_rollout
    try:
        steer(rollout_id)
    except ConfigError as exc:
        _fail(str(exc), EXIT_FAILED)
    typer.echo(f"rollout {rollout_id} {action}", err=True)


RolloutId = Annotated[str, typer.Argument(metavar="ID", help="The id the rollout printed.")]


@rollout_app.command("resume")
def rollout_resume(rollout_id: RolloutId) -> None:
    """Let a rollout paused with --pause go on to its next batches.

    \b
    Example:
      reloadctl rollout resume 3f9c2a1b
    """
    _steer_rollout(rollout_id, "resumed")


@rollout_app.command("abort")
def rollout_abort(rollout_id: RolloutId) -> None:
    """Stop a rollout paused with --pause: its later batches are not attempted (it exits 5).

    \b
    Example:
      reloadctl rollout abort 3f9c2a1b
    """
    _steer_rollout(rollout_id, "aborted")


def main() -> None:
    """Console script entry point (``reloadctl``).

    Exits through ``os._exit`` once the output is flushed: tearing down the ~300 modules
    typer and rpyc load takes about 10 ms per run (measured), and nothing of ours needs
    atexit handlers or module finalizers (fan-out threads are daemons holding no output).
    """
    code = 0
    try:
        app()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            sys.stderr.write(exc.code + "\n")
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more can be said
                code = code or 1
    os._exit(code)
