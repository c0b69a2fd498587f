"""The reload engine: patch loaded modules in place from their current source, all or nothing.

Public API (contracts in ../shared/DESIGN.md, "In-process engine" and "The reload engine"):

- ``reload_modules(names, *, dry_run=False, dependents=False, allow=None)``
- ``rollback_modules(names, *, allow=None)``
- ``patched_modules()``
- ``reload_lock()``: the reload lock (the agent's fork hook waits on it)

Policies (what a user can rely on; the README takes them from here):

1. A reload re-executes the module body like a fresh import, in the live module dict:
   module-level state (``CACHE = {}``, singletons) is created anew unless the module's
   ``__reload__(old_namespace)`` carries it over. Objects held from before keep working.
2. Functions and classes keep their identity (matched by ``__module__`` + ``__qualname__``);
   a function whose free variables changed, a class whose layout changed (``__slots__``,
   bases, metaclass, named-tuple fields) and an enum whose members were removed or changed
   value are replaced, with a warning. An enum that only gains members keeps its class.
   What the new body builds from its definitions names the kept objects: containers at
   top level and in class bodies (values, dict keys, sets; tuples rebuilt), partials,
   ``typing`` aliases (``Box[int]``), function defaults, decorator state (a
   ``singledispatch`` registry), functions held as attributes of top-level objects
   (commands, routers), and instances of kept classes in all of these. A kept ABC takes
   the new body's registrations and, when its abstract methods changed, its subclasses
   (in any module) recompute theirs. A pydantic model is rebuilt with field types naming
   the kept classes.
3. Decorators run again: a registry filled by a decorator gets a second entry for the new
   version (the first entry, the old object, runs the new code too; a function entry of
   an earlier reload follows every later one). Use ``__before_reload__()`` to unregister,
   or ``__reload__`` to dedupe. Limits (no heap walk): a *class* a decorator registered
   in another module is the new class object (new code, but its instances are not
   instances of the live class); a *method* registered elsewhere keeps the code of the
   version that registered it. Compiler warnings (invalid escapes) are reported in the
   result, never shown through the host's ``warnings``; a body that replaces its own
   ``sys.modules`` entry is reported, and undone with the rest when the reload fails.
4. Unchanged: the digest of the source the engine applied; for a module the engine never
   ran, the bytecode cache of the imported version when it still exists, else a static
   proof (AST + code-object equality) that the source defines exactly what is live. When
   nothing proves it, the module is reloaded.
5. Pruning: names the previous execution bound that the new one does not are deleted;
   names set at run time by others survive (module names, and plain data attributes of
   classes). On a module's first reload the engine only knows the previous execution from
   the bytecode cache; without one, every name the new source does not bind is pruned
   (except dunders and submodules). ``from x import *`` binds what ``x`` exports now;
   names bound only under ``if TYPE_CHECKING:`` are not bound. A body that binds names
   through ``exec``, ``globals()`` & co. prunes only names that vanished.
6. Running generators and coroutines keep their old code; closures created before the
   reload get the new code when their free variables match (the only heap walk, done only
   when nested function code changed).
7. Batches behave like a fresh import of the new version: dependency order (what bodies
   import; a package after its submodules), a package body sees its loaded submodules as
   attributes, stale ``from x import y`` copies between the batch's modules rebound,
   definitions moved to a sibling module followed (a moved class keeps its identity, a
   moved function forwards to its new home), and on failure everything, including
   submodules first imported by the new code, is undone. ``__before_reload__`` hooks that
   already ran are not undone.
8. An error of the engine itself on some construct never blocks a reload Python can run:
   where the engine cannot patch an object in place, the new object replaces it with a
   warning; an engine failure past that is ``failed`` with error type ``EngineError``,
   nothing changed. ``dependents=True`` also gives modules that did ``from m import *``
   the names ``m`` exports now.

Modules, one concept each: ``resolve`` (refusals, spec and source), ``source`` (reading,
digest, compile, static analysis), ``previous`` (the imported version's bytecode),
``order`` (batch order), ``namespace`` (the module transaction), ``adopt`` (matching new to
old by qualname), ``functions``, ``classes``, ``layouts`` (classes whose layout limits a
reload), ``enums``, ``closures``, ``moves`` (definitions moved between modules of a batch),
``dependents``, ``crosslinks`` (the links between a batch's modules, after every body ran),
``faults`` (the engine's own errors; optional steps that degrade to warnings), ``plan``
(dry run),
``proof`` (first-sight unchanged), ``undo`` (the undo log), ``history`` (lock, per-module
memory), ``batch`` (the public operations).
"""

from __future__ import annotations

from reloadctl.agent.engine import history
from reloadctl.agent.engine.batch import patched_modules, reload_modules, rollback_modules

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading


def reload_lock() -> threading.RLock:
    """The one process-wide reload lock, held while a reload or rollback applies: whoever
    must not see a half-swapped module (a fork) takes it."""
    return history.LOCK


__all__ = ["patched_modules", "reload_lock", "reload_modules", "rollback_modules"]
