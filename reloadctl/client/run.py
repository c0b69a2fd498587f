"""One command's run: selection, secrets, fan-out or rollout, records, verdict, exit code.

Everything between the typer options (``client.cli``) and the pieces it drives
(``targets``, ``fanout``, ``rollout``, ``render``, ``verdict``), without typer: a caller
gives values and gets an exit code back. Rules:

1. Problems found before any target is contacted raise: ``UsageError`` for what the
   command line asks (an empty selection, an unknown group, a bad address or rollout
   option: the CLI exits 2), another ``ConfigError`` for a local problem (a malformed
   inventory, an unusable secret file, no live local agent: the CLI exits 1).
2. Every secret a run needs is loaded before the first target is contacted.
3. ``transport`` is the call made per target; None means the real connection, given the
   settings' TLS files as a ``TlsSettings`` value.
4. Results go to ``out``, progress and the lines a user must see (typos, the rollback
   command of an aborted rollout, an interruption, targets that run different versions of
   a module) to ``err``; the exit code is ``verdict.exit_code``'s.
5. ``reload --push`` reads the source it ships before any target is contacted
   (``client.push``): a module with no file is a ``UsageError``, an unreadable or oversized
   push another ``ConfigError``. (``watch``, with or without ``--push``: ``client.watch``.)
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from reloadctl.client import fanout, verdict
from reloadctl.client.fanout import FanoutOptions
from reloadctl.client.render import Renderer
from reloadctl.client.settings import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    Choice,
    default_parallel,
)
from reloadctl.errors import AddressError, ConfigError, InventoryError, UsageError
from reloadctl.proto.messages import ReloadRequest, RollbackRequest, StatusRequest

if TYPE_CHECKING:
    from reloadctl.client.fanout import Outcome, Transport
    from reloadctl.client.inventory import Inventory
    from reloadctl.client.rollout import RolloutPlan
    from reloadctl.client.settings import Settings
    from reloadctl.client.targets import Selection, Target
    from reloadctl.secrets import Secret

__all__ = [
    "fanout_options",
    "list_agents",
    "output_format",
    "reload_request",
    "rollback_prefix",
    "rollout_plan",
    "run_request",
    "secrets_for",
    "select",
    "verify_spec",
]

Request = ReloadRequest | RollbackRequest | StatusRequest
SecretFor = Callable[["Target"], "Secret | None"]


def output_format(s: Settings) -> str:
    """``-o``, else table on a terminal and ndjson otherwise."""
    if s.output is not None:
        return s.output.value
    return "table" if sys.stdout.isatty() else "ndjson"


def fanout_options(s: Settings, targets: Sequence[Target] = ()) -> FanoutOptions:
    """The fan-out bounds the settings ask for, defaults filled in (the pool's from
    ``targets``: ``settings.default_parallel``).

    Raises:
        UsageError: a bound is out of range (``-P 0``, a negative timeout).
    """
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
        raise UsageError(str(exc)) from None


def _inventory(s: Settings, needed: bool) -> Inventory:
    from reloadctl.client.inventory import Inventory, default_inventory_path, load_inventory

    path = s.inventory
    if path is None:
        path = default_inventory_path()
        if not needed and not path.exists():
            return Inventory(path="")
    return load_inventory(path, required=s.inventory is not None)


def select(s: Settings, choice: Choice, *, allow_empty: bool = False) -> Selection:
    """The targets ``choice`` selects, in order (rule 1 for what it raises)."""
    from reloadctl.client.targets import select_targets

    inv = _inventory(s, needed=bool(choice.groups) or choice.all_groups)
    for g in choice.groups:
        try:
            inv.group(g)
        except InventoryError as exc:
            raise UsageError(str(exc)) from None
    try:
        selection = select_targets(
            choice.hosts,
            choice.groups,
            all_groups=choice.all_groups,
            local=choice.local,
            inventory=inv,
            resolve_timeout=s.connect_timeout or DEFAULT_CONNECT_TIMEOUT,
        )
    except AddressError as exc:
        raise UsageError(str(exc)) from None
    if not selection.targets and not allow_empty:
        if choice.local and not (choice.hosts or choice.groups or choice.all_groups):
            raise ConfigError("no live reloadctl agent of this user found on this machine")
        raise UsageError("no targets selected: use -H TARGET, -g GROUP, --all or --local")
    return selection


def secrets_for(s: Settings, targets: Sequence[Target]) -> SecretFor:
    """Load every secret ``targets`` need, up front (rule 2).

    Raises:
        SecretError: a secret file is missing, unreadable or too permissive.
    """
    from reloadctl.secrets import load_secret

    cache: dict[str, Secret | None] = {}

    def key(t: Target) -> str:
        return str(s.secret_file) if s.secret_file is not None else t.secret_file

    for t in targets:
        k = key(t)
        if k not in cache:
            cache[k] = load_secret(secret_file=k or None)
    return lambda t: cache[key(t)]


def rollout_plan(
    canary: int,
    batch: str | None,
    max_failures: str | None,
    *,
    fail_fast: bool,
    ignore_unreachable: bool,
    pause: bool,
) -> RolloutPlan | None:
    """The plan the rollout options describe; None when none was given (one batch).

    Raises:
        UsageError: a size or threshold does not parse, or ``--pause`` has no first batch.
    """
    if not (canary or batch or max_failures or fail_fast or ignore_unreachable or pause):
        return None  # plain fan-out: the rollout module is not even imported
    from reloadctl.client.rollout import RolloutPlan, parse_sizes, parse_threshold

    try:
        sizes = parse_sizes(batch) if batch else ()
        threshold = parse_threshold(max_failures) if max_failures else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if canary < 0:
        raise UsageError("--canary must be 0 or more")
    if pause and not (canary or sizes):
        raise UsageError("--pause needs --canary N or --batch (it pauses after the first batch)")
    return RolloutPlan(canary, sizes, threshold, fail_fast, ignore_unreachable, pause)


def verify_spec(spec: str | None) -> str:
    """``--verify``'s value as the request carries it (``""``: none given).

    Raises:
        UsageError: it is not ``MODULE:FUNCTION``.
    """
    if spec is None:
        return ""
    module, sep, function = spec.partition(":")
    if not (sep and module and function):
        raise UsageError(f"--verify {spec!r}: expected MODULE:FUNCTION")
    return spec


def reload_request(
    modules: Sequence[str],
    *,
    dry_run: bool,
    dependents: bool,
    deadline_s: float,
    verify: str = "",
    push: bool = False,
    roots: Sequence[Path] = (),
    write: bool = False,
    allow_new_top_level: bool = False,
) -> ReloadRequest:
    """The reload the options ask for; with ``push``, carrying the modules' source found
    under ``roots`` (default: the current directory), read now (rule 5).

    Raises:
        UsageError: a push option without ``push``, or a module with no file under the roots.
        PushError: a file cannot be read or decoded, or the push is over its size limit.
    """
    names = tuple(dict.fromkeys(modules))
    request = ReloadRequest(
        names, dry_run=dry_run, dependents=dependents, deadline_s=deadline_s, verify=verify
    )
    if not push:
        if roots or write or allow_new_top_level:
            raise UsageError("--root, --write and --allow-new-top-level go with --push")
        return request
    from reloadctl.client.push import collect

    bundle = collect(names, list(roots) or [Path.cwd()])
    return replace(
        request,
        push=bundle.files,
        push_trees=bundle.trees,
        write=write,
        allow_new_top_level=allow_new_top_level,
    )


def rollback_prefix(s: Settings, targets: Sequence[Target]) -> list[str]:
    """The global options a rollback of ``targets`` needs (the secret file, when one)."""
    if s.secret_file is not None:
        return ["--secret-file", str(s.secret_file)]
    files = {t.secret_file for t in targets}
    if len(files) == 1 and "" not in files:
        return ["--secret-file", next(iter(files))]
    return []


def _real_transport(s: Settings) -> Transport:
    from reloadctl.client.connection import TlsSettings

    return fanout.default_transport(TlsSettings(s.tls_ca, s.tls_cert, s.tls_key))


def run_request(
    s: Settings,
    targets: Sequence[Target],
    request: Request,
    *,
    kind: str,
    secret_for: SecretFor,
    noun: str = "target",
    plan: RolloutPlan | None = None,
    prefix: Sequence[str] = (),
    transport: Transport | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``request`` on ``targets`` (through a rollout when ``plan``), render every
    outcome, tell the user what they must know, and return the exit code.

    Args:
        s: the settings (output, bounds, TLS files).
        targets: the selection, in order.
        request: what each target gets.
        kind: ``"modules"`` (reload, rollback) or ``"agents"`` (ping, status, ps).
        secret_for: the secret of a target (``secrets_for``).
        noun: what the recap counts (``target``, or ``agent`` for ``ps``).
        plan: canary, batches and thresholds; None: one batch of every target.
        prefix: global options the rollback command of an aborted rollout needs.
        transport: the call per target (rule 3).
        out, err: result and progress streams (default: stdout, stderr).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    options = fanout_options(s, targets)
    call = transport or _real_transport(s)
    renderer = Renderer(
        output_format(s),
        kind,
        out,
        err,
        total=len(targets),
        quiet=s.quiet,
        live=err.isatty(),
        verbose=s.verbose > 0,
        noun=noun,
    )

    def warn(message: str) -> None:
        err.write(f"reloadctl: {message}\n")
        err.flush()

    def run_batch(
        batch: Sequence[Target], cancel: threading.Event, take: Callable[[Outcome], None]
    ) -> fanout.FanoutReport:
        return fanout.run(
            batch,
            request,
            options=options,
            transport=call,
            secret_for=secret_for,
            on_outcome=take,
            cancel=cancel,
        )

    # None: not aborted; else the targets the aborted rollout had already changed
    undo: tuple[Target, ...] | None = None
    if plan is None:
        # No rollout option: one batch of every target, which is what run_rollout does with
        # an empty plan (never aborts, never pauses), without loading the rollout module.
        report = run_batch(targets, threading.Event(), renderer.outcome)
        outcomes, interrupted = report.outcomes, report.interrupted
    else:
        from reloadctl.client.rollout import run_rollout

        rollout = run_rollout(
            targets,
            request,
            plan=plan,
            run_batch=run_batch,
            on_outcome=renderer.outcome,
            on_event=lambda m: None if s.quiet else warn(m),
            notify=warn,
        )
        outcomes, interrupted = rollout.outcomes, rollout.interrupted
        undo = rollout.changed if rollout.aborted else None
    renderer.finish()
    if kind == "agents" and not s.quiet:  # which targets run another version (of a push)
        from reloadctl.client.push import version_mismatches

        infos = [(o.target.name, o.info) for o in outcomes if o.info is not None]
        for line in version_mismatches(infos):
            warn(line)
    typos = verdict.modules_loaded_nowhere(outcomes) if kind == "modules" else []
    for module in typos:
        warn(verdict.typo_line(module))
    if undo:
        from reloadctl.client.rollout import rollback_command

        modules = [] if isinstance(request, StatusRequest) else list(request.modules)
        warn("to undo the targets already changed, run:")
        err.write("  " + rollback_command(undo, modules, prefix) + "\n")
    if interrupted:
        warn("interrupted: targets not started are not_attempted")
    return verdict.exit_code(
        outcomes, aborted=undo is not None, interrupted=interrupted, typos=typos
    )


def list_agents(
    s: Settings,
    *,
    transport: Transport | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``ps``: the status of every live agent of this user on this machine.

    Finding none is not an error (exit 0): one line on stderr says so, and the output is an
    empty table, document or summary.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    selection = select(s, Choice(local=True), allow_empty=True)
    if not selection.targets:
        if not s.quiet:
            err.write("reloadctl: no live reloadctl agent of this user found on this machine\n")
        Renderer(output_format(s), "agents", out, err, total=0, quiet=True, noun="agent").finish()
        return verdict.ExitCode.OK
    return run_request(
        s,
        selection.targets,
        StatusRequest(),
        kind="agents",
        secret_for=secrets_for(s, selection.targets),
        noun="agent",
        transport=transport,
        out=out,
        err=err,
    )
