"""Collecting the source a push ships (``reloadctl reload --push``): module names to files.

Rules:
1. Each name maps to a file under the roots, in root order, as the import system would
   find it: ``a/b/__init__.py`` (a package: its whole tree ships, every ``.py`` file of it
   and of its regular subpackages, so added and removed submodules travel) before
   ``a/b.py``. A name with no file under any root is a ``PushError`` naming the roots.
2. Each file is read once, as bytes; when its size or mtime changed while it was read it
   is read again, and after ``READ_ATTEMPTS`` unstable reads it is a ``PushError``. Its
   text is decoded as the import system decodes source (coding cookie, universal
   newlines); the sha256 is over that text in UTF-8, the digest the agent's engine
   reports. Source only: ``.pyc`` files are never read.
3. The total source is at most ``limit`` bytes (default ``codec.MAX_PUSH_SOURCE_BYTES``);
   more is a ``PushError`` saying how much and what the limit is.
4. ``check_syntax`` compiles every file with this Python (for ``watch --push``, so a
   syntax error while typing is reported before anything is sent).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from reloadctl.errors import PushError, PushSourceNotFound
from reloadctl.proto.codec import MAX_PUSH_SOURCE_BYTES
from reloadctl.proto.messages import AgentInfo, PushedSource

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

READ_ATTEMPTS: Final = 3
_SKIP_DIRS: Final = frozenset({"__pycache__"})


@dataclass(frozen=True, slots=True)
class Bundle:
    """What one push ships: the files, the packages shipped whole, and the source size."""

    files: tuple[PushedSource, ...]
    trees: tuple[str, ...]
    size: int


def _read_stable(path: Path) -> bytes:
    """Rule 2: the bytes of ``path``, read while its size and mtime did not change."""
    for _ in range(READ_ATTEMPTS):
        before = path.stat()
        data = path.read_bytes()
        after = path.stat()
        same = (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)
        if same and len(data) == after.st_size:
            return data
    raise PushError(f"{path} kept changing while it was read; save it and push again")


def read_source(path: Path, module: str, rel: str, is_package: bool) -> PushedSource:
    """One file as a ``PushedSource`` (rule 2)."""
    try:
        data = _read_stable(path)
        text = importlib.util.decode_source(data)
    except OSError as exc:
        raise PushError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, SyntaxError, LookupError) as exc:
        raise PushError(f"cannot decode {path} as Python source: {exc}") from exc
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return PushedSource(module, rel, text, digest, is_package)


def _tree(package_dir: Path, package: str) -> list[tuple[Path, str, bool]]:
    """Every source file of a regular package, subpackages included (rule 1), sorted."""
    found: list[tuple[Path, str, bool]] = []
    for directory, dirnames, filenames in os.walk(package_dir):
        here = Path(directory)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in _SKIP_DIRS and d.isidentifier() and (here / d / "__init__.py").is_file()
        )
        prefix = ".".join([package, *here.relative_to(package_dir).parts])
        for filename in sorted(filenames):
            stem, dot, suffix = filename.rpartition(".")
            if not dot or suffix != "py" or not stem.isidentifier():
                continue
            if stem == "__init__":
                found.append((here / filename, prefix, True))
            else:
                found.append((here / filename, f"{prefix}.{stem}", False))
    return found


def _locate(name: str, roots: Sequence[Path]) -> list[tuple[Path, str, bool]] | None:
    parts = name.split(".")
    for root in roots:
        base = root.joinpath(*parts)
        if (base / "__init__.py").is_file():
            return _tree(base, name)
        module_file = base.with_name(parts[-1] + ".py")
        if module_file.is_file():
            return [(module_file, name, False)]
    return None


def collect(
    modules: Sequence[str], roots: Sequence[Path], *, limit: int = MAX_PUSH_SOURCE_BYTES
) -> Bundle:
    """Resolve ``modules`` under ``roots`` and read their files (rules 1-3).

    Raises:
        PushSourceNotFound: a name is not a dotted identifier or has no file under the roots.
        PushError: a file cannot be read or decoded, changed while read, or the push is over
            ``limit``.
    """
    located: dict[str, tuple[Path, bool]] = {}
    trees: list[str] = []
    for name in modules:
        if not name or not all(part.isidentifier() for part in name.split(".")):
            raise PushSourceNotFound(f"{name!r} is not a module name")
        found = _locate(name, roots)
        if found is None:
            where = ", ".join(str(r) for r in roots)
            raise PushSourceNotFound(
                f"{name}: no {name.replace('.', '/')}.py or "
                f"{name.replace('.', '/')}/__init__.py under {where} (use --root DIR)"
            )
        if found and found[0][2] and found[0][1] == name:
            trees.append(name)
        for path, module, is_package in found:
            located.setdefault(module, (path, is_package))
    files: list[PushedSource] = []
    size = 0
    for module, (path, is_package) in located.items():
        rel = module.replace(".", "/") + ("/__init__.py" if is_package else ".py")
        file = read_source(path, module, rel, is_package)
        size += len(file.source.encode("utf-8", "surrogatepass"))
        if size > limit:
            raise PushError(
                f"the push is over its size limit: more than {limit} bytes of source "
                f"({len(located)} files; {limit / 2**20:g} MiB per request)"
            )
        files.append(file)
    return Bundle(tuple(files), tuple(dict.fromkeys(trees)), size)


def check_syntax(bundle: Bundle) -> list[str]:
    """Rule 4: one line per file this Python cannot compile (empty: all compile)."""
    problems: list[str] = []
    for f in bundle.files:
        try:
            compile(f.source, f.path, "exec", dont_inherit=True)
        except SyntaxError as exc:
            problems.append(f"{f.path}:{exc.lineno}: SyntaxError: {exc.msg}")
        except ValueError as exc:  # NUL bytes
            problems.append(f"{f.path}: {exc}")
    return problems


def import_roots(paths: Sequence[Path]) -> list[Path]:
    """The ``sys.path`` entries that watched ``paths`` stand for (``client.watch`` rule 1):
    a directory that is a package stands for its nearest ancestor that is not; a file for
    its directory. Deepest first, so that the closest root wins."""
    roots: dict[Path, None] = {}
    for path in paths:
        directory = path.resolve() if path.is_dir() else path.resolve().parent
        while (directory / "__init__.py").is_file() and directory.parent != directory:
            directory = directory.parent
        roots.setdefault(directory)
    return sorted(roots, key=lambda r: len(r.parts), reverse=True)


def version_mismatches(infos: Sequence[tuple[str, AgentInfo]]) -> list[str]:
    """One line per module that the agents of a selection (``(target, info)`` pairs) run in
    different versions: by digest, and a target that runs it unpatched counts as ``disk``
    only when another target patched it (a worker started after a push, a target that was
    unreachable then). A target that patched a module but cannot say which version (an
    agent that speaks protocol 1: no origin, no digest) is left out of that module's count."""
    versions: dict[str, dict[str, list[str]]] = {}
    unknown: dict[str, set[str]] = {}
    for target, info in infos:
        for p in info.patched:
            if p.origin.startswith("push:"):
                label = p.origin
            elif p.digest:
                label = f"disk:{p.digest[:12]}"
            else:
                unknown.setdefault(p.module, set()).add(target)
                continue
            versions.setdefault(p.module, {}).setdefault(label, []).append(target)
    lines: list[str] = []
    every = [target for target, _ in infos]
    for module, found in versions.items():
        patched = {t for ts in found.values() for t in ts} | unknown.get(module, set())
        unpatched = [t for t in every if t not in patched]
        labels = {**found, "not patched": unpatched} if unpatched else found
        if len(labels) < 2:
            continue
        parts = [
            f"{label} on {len(ts)} ({', '.join(ts[:3])}{', ...' if len(ts) > 3 else ''})"
            for label, ts in sorted(labels.items(), key=lambda kv: -len(kv[1]))
        ]
        lines.append(f"{module}: targets run different versions: {'; '.join(parts)}")
    return lines


def watched_push(
    modules: Sequence[str], paths: Sequence[Path], warn: Callable[[str], None]
) -> Bundle | None:
    """``watch --push``: the saved modules' source under the watched paths' import roots,
    or None (after ``warn`` lines) when it cannot be read or does not compile here."""
    try:
        bundle = collect(modules, import_roots(paths))
    except PushError as exc:
        warn(f"not pushed: {exc}")
        return None
    problems = check_syntax(bundle)
    for line in problems:
        warn(f"not pushed: {line}")
    return None if problems else bundle
