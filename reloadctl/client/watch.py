"""Watch source trees and turn each batch of saved ``.py`` files into one reload fan-out.

``reloadctl watch PATH...``: each debounced batch of saved files becomes one call of
``on_change(["pkg", "pkg.sub"])`` (``watch_modules``), which ``watch_paths`` turns into one
reload (``client.run``) of those modules on every selected target.

Rules:
1. Every watched directory stands for a ``sys.path`` entry, as on ``PYTHONPATH``; a watched
   directory that is itself a package (it holds ``__init__.py``) stands for its nearest
   ancestor that is not, and a watched file stands for its own directory, by the same rule.
   So watching ``src`` or ``src/pkg`` both name ``src/pkg/sub.py`` ``pkg.sub``.
2. ``pkg/__init__.py`` is the package ``pkg``; ``pkg/sub.py`` is ``pkg.sub``; a directory
   without ``__init__.py`` below a root is a namespace package and still names its modules.
3. Only ``.py`` files that exist when the batch is handled count: deletions, other suffixes,
   files whose path is not a dotted name (``my-scripts/x.py``), and the usual noise
   (``__pycache__``, ``.git``, editor swap files: watchfiles' ``DefaultFilter``) are ignored.
4. watchfiles is an optional extra (``reloadctl[watch]``), imported only when watching
   starts; without it ``watch_modules`` raises ``ConfigError`` saying how to install it.
5. ``watch_paths(push=True)`` ships the saved modules' source (``client.push``) found under
   the watched paths' import roots; a save that cannot be read or does not compile with
   this Python is reported and not sent (that batch counts as failed; watching goes on).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from reloadctl.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from reloadctl.client.fanout import Transport
    from reloadctl.client.settings import Choice, Settings

__all__ = ["INSTALL_HINT", "module_name_for", "modules_for_changes", "watch_modules", "watch_paths"]

logger = logging.getLogger(__name__)

INSTALL_HINT: Final = "watching files needs watchfiles: pip install 'reloadctl[watch]'"

#: watchfiles' defaults: a batch is yielded once no change arrived for ``STEP_MS``, and
#: never later than ``DEBOUNCE_MS`` after its first change, so an editor save is one batch.
DEBOUNCE_MS: Final = 1_600
STEP_MS: Final = 50
#: How long the native watcher blocks before it looks at ``stop`` again, at most.
_RUST_TIMEOUT_MS: Final = 500
_SUFFIX: Final = ".py"


def _import_path_root(directory: Path) -> Path:
    """Return the ``sys.path`` entry that ``directory`` stands for (rule 1)."""
    root = directory
    while (root / "__init__.py").is_file() and root.parent != root:
        root = root.parent
    return root


def _roots(paths: Iterable[Path]) -> list[Path]:
    """Resolve watched paths to import roots, deepest first, so the closest root wins."""
    roots: set[Path] = set()
    for path in paths:
        resolved = path.resolve()
        directory = resolved if resolved.is_dir() else resolved.parent
        roots.add(_import_path_root(directory))
    return sorted(roots, key=lambda r: len(r.parts), reverse=True)


def module_name_for(file: Path, roots: Sequence[Path]) -> str | None:
    """Return the dotted module name of ``file`` under the first root that contains it.

    Args:
        file: a ``.py`` file (it need not exist).
        roots: import roots (``sys.path``-like directories), tried in order.

    Returns:
        ``"pkg.sub"`` for ``<root>/pkg/sub.py``, ``"pkg"`` for ``<root>/pkg/__init__.py``, or
        None when the file is not a ``.py`` file, lies under no root, or a part of its path
        is not a Python identifier.
    """
    if file.suffix != _SUFFIX:
        return None
    for root in roots:
        try:
            relative = file.relative_to(root)
        except ValueError:
            continue
        parts = [*relative.parent.parts, relative.stem]
        if parts[-1] == "__init__":
            parts.pop()
        if parts and all(part.isidentifier() for part in parts):
            return ".".join(parts)
        return None
    return None


def modules_for_changes(changes: Iterable[tuple[int, str]], roots: Sequence[Path]) -> list[str]:
    """Map one batch of watchfiles changes to sorted, unique module names (rules 2 and 3).

    ``changes`` holds ``(change, path)`` pairs as watchfiles yields them; the change kind is
    not trusted (an atomic save can read as deleted-then-added), the file's existence is.
    """
    names: set[str] = set()
    for _change, raw in changes:
        path = Path(raw)
        if path.suffix != _SUFFIX or not path.is_file():
            continue
        name = module_name_for(path.resolve(), roots)
        if name is None:
            logger.debug("ignoring %s: not a module under the watched roots", path)
            continue
        names.add(name)
    return sorted(names)


_Watch = Callable[..., Iterable[Iterable[tuple[int, str]]]]


def _require_watchfiles() -> _Watch:
    try:
        from watchfiles import watch
    except ImportError as exc:
        raise ConfigError(INSTALL_HINT) from exc
    # Typed through a variable: watchfiles is typed when installed and Any when not.
    watcher: _Watch = watch
    return watcher


def watch_modules(
    paths: Sequence[Path],
    on_change: Callable[[list[str]], None],
    *,
    stop: threading.Event | None = None,
    debounce_ms: int = DEBOUNCE_MS,
    step_ms: int = STEP_MS,
    force_polling: bool | None = None,
) -> None:
    """Watch ``paths`` and call ``on_change`` with the modules of each batch of saved files.

    Blocks in the calling thread until ``stop`` is set (checked at least every 0.5 s) or
    KeyboardInterrupt, which propagates. ``on_change`` runs in the calling thread, one batch
    at a time, never with an empty list; an exception from it propagates and ends the watch.

    Args:
        paths: directories or files to watch (recursively); each must exist.
        on_change: receives the sorted, unique dotted module names of one batch.
        stop: set it from another thread to return.
        debounce_ms: the longest a batch keeps collecting changes.
        step_ms: a batch is handed over once no change arrived for this long.
        force_polling: poll instead of inotify (None: watchfiles decides, honouring
            ``WATCHFILES_FORCE_POLLING``; useful on network and container mounts).

    Raises:
        ConfigError: no path given, a path does not exist, or watchfiles is not installed.
    """
    if not paths:
        raise ConfigError("watch: give at least one directory or file to watch")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ConfigError(f"watch: no such file or directory: {', '.join(missing)}")
    watch = _require_watchfiles()
    roots = _roots(paths)
    logger.info("watching %s (import roots: %s)", ", ".join(map(str, paths)), roots)
    for changes in watch(
        *(p.resolve() for p in paths),
        debounce=debounce_ms,
        step=step_ms,
        stop_event=stop,
        rust_timeout=_RUST_TIMEOUT_MS,
        force_polling=force_polling,
    ):
        names = modules_for_changes(changes, roots)
        if names:
            on_change(names)


def watch_paths(
    s: Settings,
    choice: Choice,
    paths: Sequence[Path],
    *,
    push: bool = False,
    transport: Transport | None = None,
    err: TextIO | None = None,
) -> int:
    """``watch``: reload (with ``push``: ship, rule 5) the modules of each batch of saved
    files under ``paths`` on the selected targets until Ctrl-C; the exit code is the last
    batch's, or ``INTERRUPTED``.

    Raises:
        UsageError: a path does not exist (and ``client.run`` rule 1's selection errors).
        ConfigError: watchfiles is not installed, a secret cannot be loaded.
    """
    import importlib.util

    from reloadctl.client import verdict
    from reloadctl.client.run import fanout_options, run_request, secrets_for, select
    from reloadctl.proto.messages import ReloadRequest

    err = err or sys.stderr
    if importlib.util.find_spec("watchfiles") is None:
        raise ConfigError(INSTALL_HINT)
    for p in paths:
        if not p.exists():
            raise UsageError(f"{p} does not exist")
    selection = select(s, choice)
    timeout = fanout_options(s).timeout
    secret_for = secrets_for(s, selection.targets)
    last: list[int] = [verdict.ExitCode.OK]

    def warn(message: str) -> None:
        err.write(f"reloadctl: {message}\n")
        err.flush()

    def on_change(modules: list[str]) -> None:
        if not modules:
            return
        if not s.quiet:
            warn(f"changed: {', '.join(modules)}")
        request = ReloadRequest(tuple(modules), deadline_s=timeout)
        if push:
            from reloadctl.client.push import watched_push

            pushed = watched_push(modules, paths, warn)
            if pushed is None:
                last[0] = verdict.ExitCode.FAILED
                return
            request = replace(request, push=pushed.files, push_trees=pushed.trees)
        last[0] = run_request(
            s,
            selection.targets,
            request,
            kind="modules",
            secret_for=secret_for,
            transport=transport,
            err=err,
        )

    if not s.quiet:
        from reloadctl.client.render import plural

        n = len(selection.targets)
        warn(f"watching {', '.join(map(str, paths))} for {plural(n, 'target')}")
    try:
        watch_modules(paths, on_change)
    except KeyboardInterrupt:
        return verdict.ExitCode.INTERRUPTED
    return last[0]
