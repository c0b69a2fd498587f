"""The ``reloadctl`` command line: the typer app, its commands and their options.

Each command turns its options into values and hands them to ``client.run`` (selection,
fan-out or rollout, rendering, verdict), then exits with the code it returns. Exit codes
are decided in ``client.verdict`` (its rule 5 has the precedence); before any target is
contacted: 2 for usage (typer's own, an empty selection, an unknown group, a bad address or
rollout option), 1 for a local problem (malformed inventory, unusable secret file,
untrusted socket directory, watchfiles missing), mapped in ``client.options``.

Annotations are evaluated (no ``from __future__ import annotations``): typer reads them.
"""

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from reloadctl.client.options import (
    ALL_SETTINGS,
    AllowNewTopLevel,
    Modules,
    Push,
    PushRoots,
    PushWrite,
    TlsCa,
    TlsCert,
    TlsKey,
    Verify,
    VersionOpt,
    WatchPush,
    fail,
    shared,
    warn,
)
from reloadctl.client.settings import PS_TIMEOUT, TLS_CA, TLS_CERT, TLS_KEY, Choice, Settings

if TYPE_CHECKING:
    from reloadctl.client.rollout import RolloutPlan
    from reloadctl.client.targets import Selection
    from reloadctl.proto.messages import ReloadRequest, RollbackRequest, StatusRequest

__all__ = ["app", "main"]


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


def _run(
    s: Settings,
    selection: "Selection",
    request: "ReloadRequest | RollbackRequest | StatusRequest",
    *,
    kind: str,
    plan: "RolloutPlan | None" = None,
) -> NoReturn:
    """Load the secrets, run ``request`` on the selection and exit with its code."""
    from reloadctl.client import run

    secret_for = run.secrets_for(s, selection.targets)
    prefix = run.rollback_prefix(s, selection.targets) if plan is not None else ()
    code = run.run_request(
        s,
        selection.targets,
        request,
        kind=kind,
        secret_for=secret_for,
        plan=plan,
        prefix=prefix,
        transport=s.transport,
    )
    raise typer.Exit(code)


@app.callback()
@shared(*ALL_SETTINGS, select=False)
def _root(
    ctx: typer.Context,
    s: Settings,
    *,
    version: VersionOpt = None,
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
    # read once, here: the connection gets them as a value, never from os.environ
    s = replace(
        s,
        tls_ca=TLS_CA.read(tls_ca, warn=warn),
        tls_cert=TLS_CERT.read(tls_cert, warn=warn),
        tls_key=TLS_KEY.read(tls_key, warn=warn),
    )
    ctx.obj = s


@app.command()
@shared(*ALL_SETTINGS)
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
            metavar="N|P%",
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
    push: Push = False,
    roots: PushRoots = None,
    write: PushWrite = False,
    allow_new_top_level: AllowNewTopLevel = False,
    verify: Verify = None,
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
      reloadctl reload -g web --verify shop.health:check shop.pricing
      reloadctl reload -g staging --push --root src shop   # ship src/shop/ to every target
    """
    from reloadctl.client import run

    request = run.reload_request(
        modules,
        dry_run=dry_run,
        dependents=dependents,
        deadline_s=run.fanout_options(s).timeout,
        verify=run.verify_spec(verify),
        push=push,
        roots=roots or (),
        write=write,
        allow_new_top_level=allow_new_top_level,
    )
    plan = run.rollout_plan(
        canary,
        batch,
        max_failures,
        fail_fast=fail_fast,
        ignore_unreachable=ignore_unreachable,
        pause=pause,
    )
    _run(s, run.select(s, choice), request, kind="modules", plan=plan)


@app.command()
@shared(*ALL_SETTINGS)
def rollback(ctx: typer.Context, s: Settings, choice: Choice, *, modules: Modules) -> None:
    """Restore modules to the version each process ran before its last reload.

    \b
    Examples:
      reloadctl rollback -H unix:///run/user/1000/reloadctl/app-4242.sock shop.pricing
      reloadctl rollback -g web shop.pricing
    """
    from reloadctl.client import run
    from reloadctl.proto.messages import RollbackRequest

    selection = run.select(s, choice)
    timeout = run.fanout_options(s).timeout
    _run(
        s,
        selection,
        RollbackRequest(tuple(dict.fromkeys(modules)), deadline_s=timeout),
        kind="modules",
    )


def _status(s: Settings, choice: Choice) -> NoReturn:
    from reloadctl.client import run
    from reloadctl.proto.messages import StatusRequest

    _run(s, run.select(s, choice), StatusRequest(), kind="agents")


@app.command()
@shared(*ALL_SETTINGS)
def ping(ctx: typer.Context, s: Settings, choice: Choice) -> None:
    """Check that every selected agent answers (exit 0 only if all do).

    \b
    Examples:
      reloadctl ping --local
      reloadctl ping -g web --timeout 2
    """
    _status(s, choice)


@app.command()
@shared(*ALL_SETTINGS)
def status(ctx: typer.Context, s: Settings, choice: Choice) -> None:
    """Show each agent: pid, program, Python, versions, uptime, patched modules.

    Patched modules are those reloaded since the agent started, each marked when the
    running code now differs from the source on disk.

    \b
    Examples:
      reloadctl status --local
      reloadctl status -H web1 -o json
    """
    _status(s, choice)


@app.command()
@shared("output", "quiet", "verbose", "timeout", "connect_timeout", "parallel", select=False)
def ps(ctx: typer.Context, s: Settings) -> None:
    """List this user's agents on this machine, with their status.

    Agents are found by their sockets in the runtime directory; sockets of processes that
    are gone are stale and are removed.

    \b
    Examples:
      reloadctl ps
      reloadctl ps -o json
    """
    from reloadctl.client import run

    if s.timeout is None:
        s = replace(s, timeout=PS_TIMEOUT)  # a local listing should not wait 30 s for a hung agent
    raise typer.Exit(run.list_agents(s, transport=s.transport))


@app.command()
@shared("output", "connect_timeout", "inventory")
def targets(ctx: typer.Context, s: Settings, choice: Choice) -> None:
    """Preview the selection without contacting any target.

    Shows, in order, the targets a command with these options would contact (host names
    are resolved).

    \b
    Examples:
      reloadctl targets -g web
      reloadctl targets --all -o json
    """
    from reloadctl.client import run
    from reloadctl.client.render import write_targets

    write_targets(run.select(s, choice).targets, run.output_format(s), sys.stdout)


@app.command()
@shared(
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
    push: WatchPush = False,
) -> None:
    """Reload modules in the selected processes each time their source files are saved.

    Each save becomes one reload of the changed modules on every target; a failed reload
    (say, a syntax error while typing) is reported and watching goes on. Stop with Ctrl-C.
    Needs the watch extra: pip install 'reloadctl[watch]'.

    \b
    Examples:
      reloadctl watch src --local
      reloadctl watch src/shop -H unix:///run/user/1000/reloadctl/app-4242.sock
      reloadctl watch --push src -g staging   # ship each save to machines without the file
    """
    from reloadctl.client.watch import watch_paths

    raise typer.Exit(watch_paths(s, choice, paths, push=push, transport=s.transport))


def _steer_rollout(rollout_id: str, action: str) -> None:
    from reloadctl.client import rollout
    from reloadctl.errors import ConfigError

    steer = rollout.resume_rollout if action == "resumed" else rollout.abort_rollout
    try:
        steer(rollout_id)
    except ConfigError as exc:
        fail(str(exc))
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
