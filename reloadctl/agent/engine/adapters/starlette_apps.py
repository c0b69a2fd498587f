"""FastAPI and Starlette apps and routers: the objects the server holds serve the new
routes.

Rules:
1. An app (``FastAPI()``, ``Starlette()``) or a router (``APIRouter()``, ``Router()``)
   re-created by the body at top level is merged into the one held from before, in
   place: its route list becomes the new body's routes plus the routes other modules
   registered on the held object, exception handlers and FastAPI's metadata follow, the
   OpenAPI schema is rebuilt at its next request, and the module name is bound to the held
   object again. The running middleware stack wraps the held router, so requests see the
   new routes at once. Routes added or removed are reported.
2. Routes this module registered on an app or router it does not re-create (``from main
   import app`` then ``@app.get``) are taken off before the body runs, so the body adds
   them again instead of shadowing them with duplicates.
3. Middleware added or removed by the new body cannot enter a middleware stack already
   built: a warning says to restart.
"""

from __future__ import annotations

import sys

from reloadctl.agent.engine.adapters import Adapter, Session, is_instance

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

#: Attributes of an app that are per-process state, never taken from the new body.
_STATE: Final = frozenset(
    {"state", "router", "middleware_stack", "dependency_overrides", "user_middleware"}
)


def _router(obj: Any) -> Any:
    return obj if is_instance(obj, sys.modules["starlette.routing"].Router) else obj.router


def _endpoint_module(route: Any) -> Any:
    return getattr(getattr(route, "endpoint", None), "__module__", None)


def describe(route: Any) -> str:
    """A route as ``"/path [METHODS]"`` (mounts and others by their path)."""
    methods = ",".join(sorted(getattr(route, "methods", None) or ()))
    return f"{getattr(route, 'path', '?')} [{methods}]"


class StarletteApps(Adapter):
    """Starlette/FastAPI apps and routers of the module (see the module rules)."""

    def begin(self, session: Session) -> bool:
        routing = sys.modules["starlette.routing"]
        apps = sys.modules.get("starlette.applications")
        kinds: tuple[type, ...] = (routing.Router,)
        if apps is not None:
            kinds = (*kinds, apps.Starlette)
        self.held = {k: v for k, v in session.snapshot.items() if is_instance(v, kinds)}
        self.before: dict[int, list[Any]] = {}
        for obj in {id(v): v for v in self.held.values()}.values():
            router = _router(obj)
            routes = list(router.routes)
            self.before[id(obj)] = routes

            def undo(r: Any = router, saved: list[Any] = routes) -> None:
                r.routes[:] = saved
                _bump(r)

            session.undo.record(undo, f"{session.name} (routes)")
            kept = [r for r in routes if _endpoint_module(r) != session.name]
            if len(kept) != len(routes):  # rule 2
                router.routes[:] = kept
                _bump(router)
        return bool(self.held)

    def finish(self, session: Session) -> None:
        done: set[int] = set()
        for key, old in self.held.items():
            new: Any = session.namespace.get(key)
            if new is old or type(new) is not type(old) or id(old) in done:
                continue
            done.add(id(old))
            self._merge(session, key, old, new)

    def _merge(self, session: Session, key: str, old: Any, new: Any) -> None:
        label = f"{session.name}.{key}"
        saved = dict(vars(old))

        def undo() -> None:
            vars(old).update(saved)

        session.undo.record(undo, label)
        router, new_router = _router(old), _router(new)
        before = {describe(r) for r in self.before[id(old)]}
        ours = {describe(r) for r in new_router.routes}
        others = [
            r
            for r in router.routes
            if _endpoint_module(r) != session.name and describe(r) not in ours
        ]
        router.routes[:] = [*new_router.routes, *others]
        _bump(router)
        if router is not old:  # an app: what its constructor and decorators set
            if [type(m) for m in getattr(old, "user_middleware", ())] != [
                type(m) for m in getattr(new, "user_middleware", ())
            ] or [getattr(m, "cls", None) for m in getattr(old, "user_middleware", ())] != [
                getattr(m, "cls", None) for m in getattr(new, "user_middleware", ())
            ]:
                session.warn(
                    f"{label}: middleware changed; the running middleware stack was built "
                    "at startup and keeps the old middleware: restart"
                )
            for attr, value in vars(new).items():
                if attr not in _STATE:
                    setattr(old, attr, value)
            if "openapi_schema" in vars(old):
                old.openapi_schema = None
        else:
            for attr, value in vars(new).items():
                if attr not in ("routes", "_routes_version"):
                    setattr(old, attr, value)
        session.namespace[key] = old
        after = {describe(r) for r in router.routes}
        for route in sorted(after - before):
            session.act("added", f"{label} route {route}")
        for route in sorted(before - after):
            session.act("removed", f"{label} route {route}")
        session.act("merged", label, "the held object serves the new routes")


def _bump(router: Any) -> None:
    """FastAPI caches per routes version (OpenAPI, included routers): a change bumps it."""
    if is_instance(getattr(router, "_routes_version", None), int):
        router._routes_version += 1
