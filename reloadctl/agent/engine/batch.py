"""The engine's public operations: reload a batch of modules as one transaction, roll back,
and list what was patched.

Rules:
1. One result per distinct requested name, in request order; a module that fails never
   makes these functions raise (only programmer errors do, e.g. a non-str name).
2. Resolving, reading, compiling and planning happen outside the reload lock; applying,
   rolling back and reading history happen inside it.
3. A batch is all or nothing: when one module fails (compile, body, hook, apply), every
   module already applied in the call is undone and reported ``failed`` with error type
   ``RolledBack`` naming the module that failed; modules not yet applied are reported the
   same way ("not applied").
4. Unchanged source (same digest as the version the engine applied, or, for a module the
   engine never ran, proven identical to what is live) is ``unchanged``: nothing executed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable, Sequence
from types import CodeType

from reloadctl.agent.engine import history
from reloadctl.agent.engine.adapters import AdapterRefused
from reloadctl.agent.engine.crosslinks import link_batch
from reloadctl.agent.engine.namespace import Applied, HookFailed, apply_module
from reloadctl.agent.engine.order import dependency_order
from reloadctl.agent.engine.plan import plan_actions
from reloadctl.agent.engine.proof import proven_unchanged
from reloadctl.agent.engine.resolve import Target, failure, loaded_module, prepare, refusal
from reloadctl.agent.engine.source import read_source
from reloadctl.agent.engine.vanished import remove, removed_by_upgrade
from reloadctl.results import (
    FAILED,
    RELOADED,
    UNCHANGED,
    Action,
    ErrorInfo,
    ModuleResult,
    PatchedModule,
)

_ROLLED_BACK = "RolledBack"


def _distinct(names: Iterable[str]) -> list[str]:
    if isinstance(names, (str, bytes)):
        raise TypeError("names must be an iterable of module names, not a single string")
    seen: dict[str, None] = {}
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"module names must be str, not {type(name).__name__}")
        seen.setdefault(name, None)
    return list(seen)


def _allow(allow: Sequence[str] | None) -> tuple[str, ...] | None:
    if allow is None:
        return None
    if isinstance(allow, str):
        return (allow,)
    patterns = tuple(allow)
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"allow patterns must be str, not {type(pattern).__name__}")
    return patterns


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


def _with_duration(result: ModuleResult, ms: float) -> ModuleResult:
    return ModuleResult(
        result.module, result.status, result.error, result.actions, result.warnings, ms
    )


def _rolled_back(
    name: str, culprit: str, error: ErrorInfo, *, applied: bool, ms: float
) -> ModuleResult:
    verb = "rolled back" if applied else "not applied"
    message = f"{verb}: {culprit} failed ({error.type}) in the same batch"
    return ModuleResult(name, FAILED, ErrorInfo(_ROLLED_BACK, message), duration_ms=ms)


def reload_modules(
    names: Iterable[str],
    *,
    dry_run: bool = False,
    dependents: bool = False,
    allow: Sequence[str] | None = None,
) -> list[ModuleResult]:
    """Reload ``names`` in this process as one transaction and report each module.

    Args:
        names: dotted module names, in any order (applied in dependency order).
        dry_run: resolve, compile and plan only; nothing is executed or changed.
        dependents: also rebind ``from m import NAME`` copies in other loaded modules.
        allow: fnmatch patterns; a module matching none is refused. None allows all.

    Returns:
        One ``ModuleResult`` per distinct name, in request order.

    Raises:
        TypeError: a name or pattern is not a str (a programmer error).
    """
    requested = _distinct(names)
    patterns = _allow(allow)
    started: dict[str, float] = {}
    spent: dict[str, float] = {}
    prepared: dict[str, Target | ModuleResult] = {}
    proven: set[str] = set()
    for name in requested:
        started[name] = time.perf_counter()
        item = prepared[name] = prepare(name, patterns)
        # first sight: the (costlier) static proof is planning, done outside the lock
        first_sight = isinstance(item, Target) and history.lookup(name, item.module) is None
        if first_sight and isinstance(item, Target) and _is_unchanged(item, None):
            proven.add(name)
        spent[name] = _ms(started[name])
    if dry_run:
        return [_dry_run(prepared[name], spent[name], name in proven) for name in requested]
    with history.LOCK:
        return _apply_batch(
            requested, prepared, spent, patterns, dependents=dependents, proven=proven
        )


def _dry_run(item: Target | ModuleResult, ms: float, proven: bool) -> ModuleResult:
    start = time.perf_counter()
    if isinstance(item, ModuleResult):
        return _with_duration(item, ms)
    record = history.lookup(item.name, item.module)
    if proven if record is None else _is_unchanged(item, record):
        return ModuleResult(item.name, UNCHANGED, duration_ms=ms + _ms(start))
    try:
        actions = plan_actions(item, _previously_defined(item, record))
    except Exception as exc:  # noqa: BLE001 - report, never raise for one module
        return failure(item.name, exc, duration_ms=ms + _ms(start))
    return ModuleResult(
        item.name,
        RELOADED,
        actions=actions,
        warnings=item.compile_warnings,
        duration_ms=ms + _ms(start),
    )


def _is_unchanged(target: Target, record: history.ModuleRecord | None) -> bool:
    if record is not None and record.digest is not None:
        return record.digest == target.source.digest
    if target.imported is not None:
        return target.imported.code == target.code.code
    return proven_unchanged(target)


def _previous_code(target: Target, record: history.ModuleRecord | None) -> CodeType | None:
    """The module code the running version was executed from, when the engine knows it."""
    if record is not None and record.defined is not None:
        return record.code
    return target.imported.code if target.imported is not None else None


def _previously_defined(
    target: Target, record: history.ModuleRecord | None
) -> frozenset[str] | None:
    """Names the running version's execution bound, when the engine can know them."""
    if record is not None and record.defined is not None:
        return record.defined
    if target.imported is not None and not target.imported.star_import:
        return target.imported.stores
    return None


def _apply_batch(
    requested: list[str],
    prepared: dict[str, Target | ModuleResult],
    spent: dict[str, float],
    patterns: tuple[str, ...] | None,
    *,
    dependents: bool,
    proven: set[str],
) -> list[ModuleResult]:
    results: dict[str, ModuleResult] = {}
    targets: list[Target] = []
    for name in requested:
        item = prepared[name]
        if isinstance(item, Target) and item.module is not _live(name):
            # replaced in sys.modules while we compiled: resolve again, now under the lock
            start = time.perf_counter()
            item = prepare(name, patterns)
            spent[name] += _ms(start)
        if isinstance(item, ModuleResult):
            results[name] = _with_duration(item, spent[name])
            continue
        start = time.perf_counter()
        record = history.lookup(name, item.module)
        if name in proven if record is None else _is_unchanged(item, record):
            results[name] = ModuleResult(name, UNCHANGED, duration_ms=spent[name] + _ms(start))
        else:
            spent[name] += _ms(start)
            targets.append(item)
    vanished = removed_by_upgrade(results, prepared, Target)
    culprit = next(
        (
            r
            for r in results.values()
            if r.status == FAILED and r.error and r.module not in vanished
        ),
        None,
    )
    if culprit is not None and culprit.error is not None:
        for t in targets:
            results[t.name] = _rolled_back(
                t.name, culprit.module, culprit.error, applied=False, ms=spent[t.name]
            )
        return [results[name] for name in requested]
    done: list[tuple[Target, Applied]] = []
    ordered = dependency_order(targets)
    loaded_before = set(sys.modules)
    for index, t in enumerate(ordered):
        start = time.perf_counter()
        record = history.lookup(t.name, t.module)
        try:
            applied = apply_module(t, _previously_defined(t, record), _previous_code(t, record))
        except BaseException as exc:  # noqa: BLE001 - a module body may raise anything
            spent[t.name] += _ms(start)
            _fail_batch(
                t.name,
                exc,
                done,
                ordered[index + 1 :],
                results=results,
                spent=spent,
                loaded_before=loaded_before,
            )
            return [results[name] for name in requested]
        spent[t.name] += _ms(start)
        done.append((t, applied))
    # after every body ran: follow definitions moved between modules, rebind stale
    # from-imports (optional steps: faults rule 2), then the modules' own __reload__
    # hooks; a hook that fails undoes the batch
    more_actions: dict[str, list[Action]] = {}
    more_warnings: dict[str, list[str]] = {}
    if done:
        start = time.perf_counter()
        more_actions, more_warnings = link_batch(
            [(t.name, t.module, a.snapshot, a.undo) for t, a in done],
            loaded_before,
            dependents=dependents,
        )
        spent[done[0][0].name] += _ms(start)
    for t, applied in done:
        hook = vars(t.module).get("__reload__")
        if not callable(hook):
            continue
        start = time.perf_counter()
        try:
            hook(applied.snapshot)
        except BaseException as exc:  # noqa: BLE001 - a hook may raise anything
            spent[t.name] += _ms(start)
            _fail_batch(
                t.name, exc, done, [], results=results, spent=spent, loaded_before=loaded_before
            )
            return [results[name] for name in requested]
        spent[t.name] += _ms(start)
        more_actions.setdefault(t.name, []).append(Action("hook", f"{t.name}.__reload__"))
    for t, applied in done:
        history.commit(
            t.name,
            t.module,
            loader=t.spec.loader,
            digest=t.source.digest,
            defined=applied.defined,
            undo=applied.undo,
            code=t.code.code,
        )
        actions = applied.actions + tuple(more_actions.get(t.name, ()))
        warnings = t.compile_warnings + applied.warnings + tuple(more_warnings.get(t.name, ()))
        results[t.name] = ModuleResult(t.name, RELOADED, None, actions, warnings, spent[t.name])
    for name, parent in vanished.items():
        results[name] = remove(name, parent, spent[name])
    return [results[name] for name in requested]


def _live(name: str) -> object:
    return sys.modules.get(name)


def _fail_batch(
    name: str,
    exc: BaseException,
    done: list[tuple[Target, Applied]],
    pending: Sequence[Target],
    *,
    results: dict[str, ModuleResult],
    spent: dict[str, float],
    loaded_before: set[str],
) -> None:
    """Rule 3: undo every applied module and report the batch."""
    for _t, applied in reversed(done):
        applied.undo.revert()
    _forget_new_submodules(
        {t.name.partition(".")[0] for t, _ in done} | {name.partition(".")[0]}, loaded_before
    )
    cause = exc.__cause__ if isinstance(exc, HookFailed) and exc.__cause__ else exc
    result = failure(name, cause, duration_ms=spent[name])
    if isinstance(exc, AdapterRefused):  # a framework adapter's reason: nothing was changed
        result = _with_duration(refusal(name, str(exc)), spent[name])
    if isinstance(exc, HookFailed) and result.error is not None:
        result = ModuleResult(
            name,
            FAILED,
            ErrorInfo(result.error.type, f"{exc}: {result.error.message}", result.error.traceback),
            duration_ms=spent[name],
        )
    results[name] = result
    assert result.error is not None
    for t, _ in done:
        if t.name != name:
            results[t.name] = _rolled_back(
                t.name, name, result.error, applied=True, ms=spent[t.name]
            )
    for t in pending:
        results[t.name] = _rolled_back(t.name, name, result.error, applied=False, ms=spent[t.name])


def _forget_new_submodules(packages: set[str], loaded_before: set[str]) -> None:
    """After a failed batch, drop the modules of the batch's packages that its new code
    imported for the first time (``pkg.helpers`` added by the upgrade), and their parent
    attributes, so the process is as it was. Modules of other packages stay: another thread
    may have imported them meanwhile."""
    for key in [k for k in list(sys.modules) if k not in loaded_before]:
        if key.partition(".")[0] not in packages:
            continue
        module = sys.modules.pop(key, None)
        parent_name, _, child = key.rpartition(".")
        parent = sys.modules.get(parent_name) if parent_name else None
        if parent is not None and getattr(parent, child, None) is module:
            with contextlib.suppress(AttributeError, TypeError):
                delattr(parent, child)


def rollback_modules(
    names: Iterable[str], *, allow: Sequence[str] | None = None
) -> list[ModuleResult]:
    """Return each module to exactly the state before its last successful reload.

    All or nothing: when any requested module has nothing to roll back (never reloaded by
    this engine, or already rolled back), none is touched. Results have status
    ``reloaded`` with ``restored`` actions; the others ``refused``/``not_loaded``.

    Raises:
        TypeError: a name or pattern is not a str (a programmer error).
    """
    requested = _distinct(names)
    patterns = _allow(allow)
    results: dict[str, ModuleResult] = {}
    with history.LOCK:
        todo: list[tuple[str, history.ModuleRecord]] = []
        for name in requested:
            start = time.perf_counter()
            found = loaded_module(name, patterns)
            if isinstance(found, ModuleResult):
                results[name] = _with_duration(found, _ms(start))
                continue
            record = history.lookup(name, found)
            if record is None or record.undo is None:
                why = (
                    "was never reloaded by this agent"
                    if record is None
                    else "was already rolled back"
                )
                results[name] = ModuleResult(
                    name,
                    "refused",
                    ErrorInfo("Refused", f"nothing to roll back: {name} {why}"),
                    duration_ms=_ms(start),
                )
                continue
            todo.append((name, record))
        if any(r.status != "not_loaded" for r in results.values()):
            blocker = next(n for n, r in results.items() if r.status != "not_loaded")
            for name, _record in todo:
                results[name] = ModuleResult(
                    name,
                    FAILED,
                    ErrorInfo(_ROLLED_BACK, f"not rolled back: {blocker} cannot be rolled back"),
                )
            return [results[name] for name in requested]
        for name, record in sorted(todo, key=lambda item: item[1].sequence, reverse=True):
            start = time.perf_counter()
            undo = record.undo
            assert undo is not None
            labels = undo.labels
            undo.revert()
            history.rolled_back(record)
            actions = tuple(Action("restored", label) for label in labels)
            results[name] = ModuleResult(name, RELOADED, actions=actions, duration_ms=_ms(start))
    return [results[name] for name in requested]


def patched_modules() -> list[PatchedModule]:
    """Every module this engine patched since process start, with whether the source on
    disk now differs from what runs (``diverged``; None when it cannot be read)."""
    # history.records() has its own short lock: status never waits for a running reload
    entries = [
        (name, r.loader, r.digest, r.reloads, r.last_reload) for name, r in history.records()
    ]
    out: list[PatchedModule] = []
    for name, loader, digest, reloads, last in entries:
        diverged: bool | None
        try:
            source = read_source(loader, name)
            diverged = None if source is None or digest is None else source.digest != digest
        except (OSError, ImportError):
            diverged = True if not _exists(loader, name) else None
        out.append(PatchedModule(name, reloads, last, diverged, digest=digest or ""))
    return out


def _exists(loader: object, name: str) -> bool:
    get_filename = getattr(loader, "get_filename", None)
    try:
        return bool(callable(get_filename) and os.path.exists(get_filename(name)))
    except Exception:  # noqa: BLE001 - a loader's own error means "cannot tell"
        return False


__all__ = ["patched_modules", "reload_modules", "rollback_modules"]
