"""Django: admin registrations re-registered, URLconfs re-read, model changes refused.

Rules (only once Django's app registry is ready):
1. Admin: before the body runs, the registrations this module made (a ``ModelAdmin``
   class of this module) are taken off every admin site, so the body registers them
   again (``AlreadyRegistered`` otherwise). The admin URLs were built when the URLconf was
   imported: when the set of registered models changed, a warning says to reload the
   URLconf module too (or restart).
2. URLconf: after a module that defines ``urlpatterns`` was reloaded, Django's URL caches
   are cleared and every resolver reachable from the root URLconf forgets its patterns,
   so the next request resolves against the new ones.
3. Models: a model class the engine keeps gets back every class attribute Django put on
   it (``_meta``, field descriptors, managers), and the app registry points at it again;
   its methods are the new ones. Fields (with their options) or ``Meta`` changed, or a
   model added, are refused: the database schema and Django's registry are fixed at
   startup; write the migration and restart.
"""

from __future__ import annotations

import sys
from types import FunctionType

from reloadctl.agent.engine.adapters import Adapter, Session, is_instance

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

_META: Final = (
    "db_table",
    "ordering",
    "unique_together",
    "verbose_name",
    "managed",
    "proxy",
    "abstract",
    "indexes",
    "constraints",
)


def _is_django(value: Any) -> bool:
    owner = getattr(value, "__module__", None) if is_instance(value, FunctionType) else None
    if owner is None:
        owner = type(value).__module__
    return is_instance(owner, str) and owner.startswith("django.")


def _shown(value: Any) -> Any:
    if is_instance(value, (str, int, float, bool, type(None))):
        return value
    if is_instance(value, (list, tuple)):
        return [_shown(v) for v in value]
    if is_instance(value, dict):
        return {k: _shown(v) for k, v in sorted(value.items())}
    return getattr(value, "__qualname__", None) or getattr(value, "label", None) or repr(value)


def schema(model: Any) -> dict[str, Any]:
    """Fields (deconstructed) and ``Meta`` options of ``model``, comparable."""
    meta = model._meta
    fields = meta.local_fields + meta.local_many_to_many
    found: dict[str, Any] = {f.name: _shown(list(f.deconstruct()[1:])) for f in fields}
    found["Meta"] = {o: _shown(getattr(meta, o, None)) for o in _META}
    return found


class DjangoApps(Adapter):
    """Django models, admin registrations and URLconfs of the module (see the rules)."""

    def begin(self, session: Session) -> bool:
        apps_module = sys.modules.get("django.apps")
        registry = getattr(apps_module, "apps", None)
        if registry is None or not registry.ready:
            return False
        self.registry = registry
        model_base = sys.modules["django.db.models.base"].ModelBase
        self.models = {
            k: v
            for k, v in session.old_classes().items()
            if is_instance(v, model_base) and not v._meta.abstract
        }
        self.schemas = {k: schema(v) for k, v in self.models.items()}
        self.saved: dict[str, dict[str, Any]] = {}
        for key, model in self.models.items():
            self.saved[key] = {k: v for k, v in vars(model).items() if _is_django(v)}
        self._release_models(session)
        self.admin = self._release_admin(session)
        self.urls = "urlpatterns" in session.snapshot
        return bool(self.models or self.admin or self.urls)

    def _release_models(self, session: Session) -> None:
        """The body declares the models again: their registry entries are taken out (and
        every model of their apps recorded, since a new relation writes on them)."""
        labels = {m._meta.app_label for m in self.models.values()}
        entries = {label: dict(self.registry.all_models[label]) for label in labels}
        related = {
            id(m): (m, {k: v for k, v in vars(m).items() if _is_django(v)})
            for label in labels
            for m in entries[label].values()
        }

        def undo() -> None:
            for label, models in entries.items():
                self.registry.all_models[label].clear()
                self.registry.all_models[label].update(models)
            for model, attrs in related.values():
                for key, value in attrs.items():
                    if vars(model).get(key) is not value:
                        type.__setattr__(model, key, value)
            self.registry.clear_cache()

        session.undo.record(undo, f"{session.name} (Django app registry)")
        self.entries, self.related = entries, related
        for model in self.models.values():
            self.registry.all_models[model._meta.app_label].pop(model._meta.model_name, None)

    def _release_admin(self, session: Session) -> list[tuple[Any, Any, Any]]:
        sites_module = sys.modules.get("django.contrib.admin.sites")
        if sites_module is None:
            return []
        released = []
        for site in list(sites_module.all_sites):
            for model, model_admin in list(site._registry.items()):
                if type(model_admin).__module__ == session.name:
                    released.append((site, model, model_admin))
        for site, model, model_admin in released:

            def undo(s: Any = site, m: Any = model, a: Any = model_admin) -> None:
                s._registry[m] = a

            session.undo.record(undo, f"{session.name} (admin)")
            site._registry.pop(model, None)
        self.before_admin = {id(s): set(s._registry) for s, _, _ in released}
        return released

    def finish(self, session: Session) -> None:
        if self.models:
            self._keep_models(session)
        for site, model, _old in self.admin:
            if model not in site._registry:
                session.warn(
                    f"{session.name}: {model._meta.label} is no longer registered in the "
                    "admin; its admin URLs stay until the URLconf is reloaded or a restart"
                )
        for site in {id(s): s for s, _, _ in self.admin}.values():
            for model in site._registry:
                if model not in self.before_admin[id(site)] and all(
                    m is not model for _, m, _ in self.admin
                ):
                    session.warn(
                        f"{session.name}: {model._meta.label} is newly registered in the "
                        "admin; its admin pages need the URLconf reloaded too, or a restart"
                    )
        if self.urls:
            self._reset_urls(session)

    def _keep_models(self, session: Session) -> None:
        problems = []
        for key, old in self.models.items():
            if not session.kept(key):
                continue
            new = self.registry.all_models[old._meta.app_label].get(old._meta.model_name)
            if new is None or new is old:
                continue
            before, after = self.schemas[key], schema(new)
            for name in sorted(set(before) | set(after)):
                if before.get(name) != after.get(name):
                    what = "Meta" if name == "Meta" else f"field {name}"
                    change = (
                        "added"
                        if name not in before
                        else "removed"
                        if name not in after
                        else "changed"
                    )
                    problems.append(f"{old._meta.label}: {what} {change}")
        for label, models in self.entries.items():
            for name, model in self.registry.all_models[label].items():
                if name not in models:
                    problems.append(f"model {model._meta.label} is new")
        if problems:
            session.refuse(
                "; ".join(problems) + ": the database schema and Django's app registry are "
                "fixed at startup: write the migration and restart"
            )
        for key, old in self.models.items():
            label = f"{session.name}.{old.__qualname__}"
            for attr, value in self.saved[key].items():
                if vars(old).get(attr) is not value:
                    type.__setattr__(old, attr, value)
                    session.retract(f"{label}.{attr}")
            session.act("kept", label, "Django model kept (_meta, fields, managers)")
        for model, attrs in self.related.values():
            for attr, value in attrs.items():
                if vars(model).get(attr) is not value:
                    type.__setattr__(model, attr, value)
        for label, models in self.entries.items():
            self.registry.all_models[label].clear()
            self.registry.all_models[label].update(models)
        self.registry.clear_cache()

    def _reset_urls(self, session: Session) -> None:
        urls = sys.modules["django.urls"]
        resolvers = sys.modules["django.urls.resolvers"]
        urls.clear_url_caches()
        seen: set[int] = set()
        todo = [urls.get_resolver()]
        while todo and len(seen) < 10_000:
            resolver = todo.pop()
            if id(resolver) in seen:
                continue
            seen.add(id(resolver))
            for attr in ("url_patterns", "urlconf_module"):
                vars(resolver).pop(attr, None)
            resolver._populated = False
            for attr in ("_reverse_dict", "_namespace_dict", "_app_dict"):
                getattr(resolver, attr).clear()
            resolver._callback_strs = set()
            todo.extend(p for p in resolver.url_patterns if is_instance(p, resolvers.URLResolver))
        session.act("cleared", session.name, "Django URL caches")
