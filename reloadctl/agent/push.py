"""Applying pushed source (``reloadctl reload --push``): policy, audit, the engine call, --write.

Rules:
1. ``check`` runs before a push is queued and refuses it (``ErrorReply("forbidden")``,
   saying how to enable what is missing) unless the agent was started with
   ``accept_push`` (``"write"`` for ``write=True``), every pushed module is within
   ``allow``, and no pushed module is new to this process under a top-level name that
   shadows a stdlib or installed package (unless ``allow_new_top_level``). A file whose
   sha256 does not match its text, whose path is not its module's path, or a push over
   ``codec.MAX_PUSH_SOURCE_BYTES`` is a protocol error. Then ``sys.audit("reloadctl.push",
   ((module, sha256, size), ...))`` runs (a hook that raises vetoes) and one log line
   records the peer, every module, digest and size.
2. ``apply`` stages the files in ``pushfinder.FINDER`` and makes ONE engine call
   (``reload_modules``, the same transaction and report as a disk reload) for every pushed
   module loaded in this process plus the requested names, then ``after`` (the request's
   ``--verify``, which may roll the reload back). The staged files are kept when nothing
   failed and it was not a dry run; otherwise they are discarded (nothing half-applied,
   nothing written). Loaded modules of a shipped package tree that the push does not contain
   are reported as a warning: they stay loaded but can no longer be imported.
3. ``write=True`` then writes each file under the module's location on disk (its original
   file, or its package's directory) atomically: a temp file in the same directory, fsync,
   the old file's permissions, ``os.replace``. What cannot be written is a warning.
4. ``annotate`` gives each patched module its origin (``disk`` or ``push:<sha256[:12]>``,
   from the loader that runs it now) and whether it diverges from its file on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import sys
from dataclasses import replace

from reloadctl.agent.pushfinder import FINDER, PushedFile, PushedLoader
from reloadctl.proto import codec
from reloadctl.proto.messages import ErrorReply, ReloadRequest
from reloadctl.results import FAILED, ModuleResult, PatchedModule

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from reloadctl.agent.config import AgentConfig

log = logging.getLogger(__name__)

HOW_TO_ENABLE = (
    "start the agent with accept_push=True (RELOADCTL_AGENT_ACCEPT_PUSH=1, or "
    "python -m reloadctl.agent --accept-push)"
)
HOW_TO_WRITE = (
    'start the agent with accept_push="write" (RELOADCTL_AGENT_ACCEPT_PUSH=write, or '
    "python -m reloadctl.agent --accept-push=write)"
)

#: Where each pushed module lived on disk before its first push (for --write, divergence).
_disk_files: dict[str, str] = {}


def digest_text(text: str) -> str:
    """The engine's digest of a source text (``engine.source.digest_text``)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def expected_path(module: str, is_package: bool) -> str:
    """The relative path a module's file has under its root (``pkg/mod.py``)."""
    base = module.replace(".", "/")
    return base + "/__init__.py" if is_package else base + ".py"


def _protocol_problem(request: ReloadRequest) -> str:
    total = 0
    seen: set[str] = set()
    for f in request.push:
        if not all(part.isidentifier() for part in f.module.split(".")):
            return f"pushed module name {f.module[:80]!r} is not a dotted identifier"
        if f.path != expected_path(f.module, f.is_package):
            return f"pushed file {f.path[:80]!r} is not the file of module {f.module}"
        if f.module in seen:
            return f"module {f.module} is pushed twice"
        seen.add(f.module)
        if digest_text(f.source) != f.sha256:
            return f"pushed file {f.path} does not match its sha256 (corrupted)"
        total += len(f.source.encode("utf-8", "surrogatepass"))
    if total > codec.MAX_PUSH_SOURCE_BYTES:
        return f"push of {total} bytes of source is over {codec.MAX_PUSH_SOURCE_BYTES}"
    for tree in request.push_trees:
        if tree not in seen:
            return f"pushed tree {tree} has no __init__.py in the push"
    return ""


def _shadowing(module: str) -> str:
    """Why pushing ``module`` into this process would shadow a package, or ``""``: its
    top-level name is stdlib, or new to this process yet installed on its ``sys.path``."""
    top = module.partition(".")[0]
    stdlib = top in getattr(sys, "stdlib_module_names", ()) or top in sys.builtin_module_names
    loaded = sys.modules.get(top)
    if loaded is not None or FINDER.get(top) is not None:
        pushed_before = isinstance(getattr(loaded, "__loader__", None), PushedLoader)
        return f"{top} is a standard library module" if stdlib and not pushed_before else ""
    if stdlib:
        return f"{top} is a standard library module"
    try:
        found = importlib.machinery.PathFinder.find_spec(top)
    except (ImportError, ValueError):
        found = None
    if found is not None:
        where = found.origin or list(found.submodule_search_locations or ())
        return f"{top} is installed at {where} and not loaded in this process"
    return ""


def check(config: AgentConfig, request: ReloadRequest, *, peer: str, request_id: str) -> Any:
    """Rule 1: None when the push may be queued, else the ``ErrorReply`` to answer."""
    mode = getattr(config, "accept_push", "")
    names = [f.module for f in request.push]
    if not mode:
        log.warning("request %s from %s: push of %s refused: not accepted", request_id, peer, names)
        return ErrorReply("forbidden", f"this agent does not accept pushed code: {HOW_TO_ENABLE}")
    if request.write and mode != "write":
        return ErrorReply("forbidden", f"this agent does not accept --write: {HOW_TO_WRITE}")
    problem = _protocol_problem(request)
    if problem:
        log.warning("request %s from %s: bad push: %s", request_id, peer, problem)
        return ErrorReply("protocol", problem)
    from reloadctl.agent.engine.resolve import allowed

    outside = [m for m in names if not allowed(m, config.allow)]
    if outside:
        return ErrorReply(
            "forbidden",
            f"pushed module {outside[0]} is outside the agent's allow list "
            f"({', '.join(config.allow or ())})",
        )
    if not request.allow_new_top_level:
        for m in names:
            why = _shadowing(m)
            if why:
                return ErrorReply(
                    "forbidden",
                    f"pushing {m} would shadow an existing package ({why}); "
                    "name it with --allow-new-top-level if that is intended",
                )
    files = tuple(
        (f.module, f.sha256, len(f.source.encode("utf-8", "surrogatepass"))) for f in request.push
    )
    try:
        sys.audit("reloadctl.push", files)
    except BaseException as exc:  # noqa: BLE001 - any hook exception vetoes
        return ErrorReply(
            "forbidden", f"vetoed by the host's audit hook ({type(exc).__name__}: {exc})"
        )
    log.info(
        "request %s from %s: push%s%s of %d files, %d bytes: %s",
        request_id,
        peer,
        " (dry run)" if request.dry_run else "",
        " with --write" if request.write else "",
        len(files),
        sum(size for _, _, size in files),
        ", ".join(f"{m} sha256={d} {size} B" for m, d, size in files),
    )
    return None


def _disk_file(name: str) -> str | None:
    """The file ``name`` was loaded from on disk, when it is a plain source file."""
    known = _disk_files.get(name)
    if known is not None:
        return known
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    if isinstance(getattr(spec, "loader", None), importlib.machinery.SourceFileLoader):
        origin = getattr(spec, "origin", None)
        if isinstance(origin, str):
            _disk_files[name] = origin
            return origin
    return None


def apply(
    engine: Any,
    request: ReloadRequest,
    allow: Sequence[str] | None,
    *,
    after: Callable[[list[ModuleResult]], list[ModuleResult]] | None = None,
) -> list[ModuleResult]:
    """Rules 2 and 3: apply ``request.push`` with one engine call (then ``after``, while
    the pushed files are still staged); never raises for a module."""
    files = [PushedFile(f.module, f.path, f.source, f.sha256, f.is_package) for f in request.push]
    pushed = {f.module for f in files}
    for f in files:
        _disk_file(f.module)  # remember the disk file before the push replaces the spec
    names = list(
        dict.fromkeys([*request.modules, *(f.module for f in files if f.module in sys.modules)])
    )
    gone = sorted(
        name
        for name in list(sys.modules)
        if name not in pushed and any(name.startswith(t + ".") for t in request.push_trees)
    )
    FINDER.stage(files, request.push_trees)
    keep = False
    try:
        results = list(
            engine.reload_modules(
                names, dry_run=request.dry_run, dependents=request.dependents, allow=allow
            )
        )
        if after is not None:
            results = after(results)
        keep = not request.dry_run and all(r.status != FAILED for r in results)
    finally:
        if keep:
            FINDER.commit()
        else:
            FINDER.discard()
    notes: dict[str, list[str]] = {}
    for name in gone:
        tree = next(t for t in request.push_trees if name.startswith(t + "."))
        notes.setdefault(tree, []).append(
            f"{name} is not in the pushed tree: it stays loaded here but can no longer be imported"
        )
    if keep and request.write:
        for f in files:
            problem = _write(f)
            if problem:
                notes.setdefault(f.module, []).append(problem)
        for tree in request.push_trees:
            notes.setdefault(tree, []).extend(_remove_stale(tree, pushed))
    if not notes:
        return results
    out = []
    for r in results:
        extra = tuple(notes.pop(r.module, ()))
        out.append(replace(r, warnings=r.warnings + extra) if extra else r)
    if notes and out:  # notes for modules without a result go on the first one
        first = out[0]
        out[0] = replace(
            first, warnings=first.warnings + tuple(n for ns in notes.values() for n in ns)
        )
    return out


def _destination(f: PushedFile) -> str | None:
    """Where ``f`` goes on disk: its module's file, or under its package's directory."""
    own = _disk_file(f.module)
    if own is not None:
        if f.is_package == (os.path.basename(own) == "__init__.py"):
            return own
        return None  # a module became a package (or back): not written, reported
    parts = f.module.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        parent = _disk_file(".".join(parts[:depth]))
        if parent is not None and os.path.basename(parent) == "__init__.py":
            rest = f.path.split("/")[depth:]
            return os.path.join(os.path.dirname(parent), *rest)
    return None


def _write(f: PushedFile) -> str:
    """Rule 3 for one file; ``""`` when written, else why not."""
    import tempfile  # only --write needs it; the host does not pay for it otherwise

    dest = _destination(f)
    if dest is None:
        return f"--write: {f.path} not written: no location on this agent's disk for {f.module}"
    try:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        try:
            mode = os.stat(dest).st_mode & 0o7777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        fd, tmp = tempfile.mkstemp(prefix=".reloadctl-", suffix=".tmp", dir=os.path.dirname(dest))
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                fh.write(f.text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        return f"--write: {f.path} not written to {dest}: {exc}"
    _disk_files[f.module] = dest
    log.info("push: wrote %s (sha256=%s)", dest, f.digest)
    return ""


def _remove_stale(tree: str, pushed: set[str]) -> list[str]:
    """--write of a whole package: delete its source files on disk that the push does not
    have (the same rule as the client's collection: regular subpackages only), so a
    process started later imports exactly the pushed tree."""
    init = _disk_file(tree)
    if init is None or os.path.basename(init) != "__init__.py":
        return []
    top = os.path.dirname(init)
    notes: list[str] = []
    for directory, dirnames, filenames in os.walk(top):
        dirnames[:] = [
            d
            for d in dirnames
            if d.isidentifier() and os.path.isfile(os.path.join(directory, d, "__init__.py"))
        ]
        rel = os.path.relpath(directory, top)
        prefix = tree if rel == "." else ".".join([tree, *rel.split(os.sep)])
        for filename in filenames:
            stem, dot, suffix = filename.rpartition(".")
            if not dot or suffix != "py" or not stem.isidentifier():
                continue
            name = prefix if stem == "__init__" else f"{prefix}.{stem}"
            if name in pushed:
                continue
            path = os.path.join(directory, filename)
            try:
                os.unlink(path)
            except OSError as exc:
                notes.append(f"--write: {path} (not in the pushed tree) not removed: {exc}")
            else:
                log.info("push: removed %s (not in the pushed tree)", path)
                notes.append(f"--write: removed {path} (not in the pushed tree)")
    return notes


def after_rollback(results: Sequence[ModuleResult]) -> None:
    """Make the finder serve, for each rolled-back module, the version that runs now."""
    for r in results:
        module = sys.modules.get(r.module)
        loader = getattr(module, "__loader__", None)
        if isinstance(loader, PushedLoader):
            FINDER.keep(loader.file)
        elif FINDER.get(r.module) is not None:
            FINDER.forget(r.module)


def _disk_digest(name: str) -> str | None:
    path = _disk_file(name)
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            return digest_text(importlib.util.decode_source(fh.read()))
    except (OSError, UnicodeDecodeError, SyntaxError):
        return None


def annotate(patched: Sequence[PatchedModule]) -> list[PatchedModule]:
    """Rule 4."""
    out = []
    for p in patched:
        loader = getattr(sys.modules.get(p.module), "__loader__", None)
        if isinstance(loader, PushedLoader):
            digest = loader.file.digest
            disk = _disk_digest(p.module)
            out.append(
                replace(p, origin=f"push:{digest[:12]}", digest=digest, diverged=disk != digest)
            )
        elif p.module in _disk_files:
            disk = _disk_digest(p.module)
            diverged = None if disk is None or not p.digest else disk != p.digest
            out.append(replace(p, origin="disk", diverged=diverged))
        else:
            out.append(replace(p, origin="disk"))
    return out
