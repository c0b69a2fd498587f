"""Flask apps: the app object the server holds serves the new routes, views and hooks.

Rules:
1. A ``Flask`` app the module's body re-creates (``app = Flask(__name__)`` at top level)
   is merged into the app held from before, which the server keeps serving: URL map and
   view functions (plus the routes other modules registered on the held app), error
   handlers, request hooks, template context processors, URL processors and blueprints
   become the new body's (with the kept functions), new and changed config values are
   set; the module name is bound to the held app again. Routes added or removed are
   reported. Extensions the new body initialised on the discarded app are not moved:
   a warning says so.
2. A held app the body does not re-create (views in their own module: ``from app import
   app`` then ``@app.route``): before the body runs, the endpoints whose view functions
   this module defines are taken off the app (and Flask's "setup finished" guard lifted),
   so the body registers them again as a fresh import would; routes the new source no
   longer declares are gone, as after a restart.
3. A blueprint re-created by the body is not re-registered (its registration options
   belong to the app that registered it): the registered one stays bound, its views
   patched; when the new one declares other routes or hooks, a warning says the app
   still serves the old ones.
"""

from __future__ import annotations

import sys

from reloadctl.agent.engine.adapters import Adapter, Session, is_instance

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Final

#: App attributes that a module body fills (routing and hooks): the new body's win.
_ROUTING: Final = (
    "view_functions",
    "error_handler_spec",
    "before_request_funcs",
    "after_request_funcs",
    "teardown_request_funcs",
    "template_context_processors",
    "url_value_preprocessors",
    "url_default_functions",
    "teardown_appcontext_funcs",
    "shell_context_processors",
    "url_build_error_handlers",
    "blueprints",
)


def _flask() -> Any:
    return sys.modules["flask"]


def routes(app: Any) -> set[str]:
    """Each URL rule of ``app`` as ``"/path [METHODS] -> endpoint"``."""
    return {
        f"{rule.rule} [{','.join(sorted(rule.methods or ()))}] -> {rule.endpoint}"
        for rule in app.url_map.iter_rules()
    }


def _copy_map(app: Any, keep: Callable[[Any], bool]) -> Any:
    """A new URL map with ``app``'s settings and the rules ``keep`` accepts."""
    old = app.url_map
    new = type(old)(
        default_subdomain=old.default_subdomain,
        strict_slashes=old.strict_slashes,
        merge_slashes=old.merge_slashes,
        redirect_defaults=old.redirect_defaults,
        converters=old.converters,
        sort_parameters=old.sort_parameters,
        sort_key=old.sort_key,
        host_matching=old.host_matching,
    )
    for rule in old.iter_rules():
        if keep(rule):
            new.add(rule.empty())
    return new


def _live(session: Session, value: Any, depth: int = 0) -> Any:
    """``value`` (dicts and lists of functions) with each new function replaced by the
    object the engine kept for it."""
    ctx = session.context
    if ctx is None or depth > 4:
        return value
    if type(value) is dict:
        return {k: _live(session, v, depth + 1) for k, v in value.items()}
    if type(value) is list:
        return [_live(session, v, depth + 1) for v in value]
    return ctx.resolved(value)


class FlaskApps(Adapter):
    """Flask app objects of the module (see the module rules)."""

    def begin(self, session: Session) -> bool:
        flask = _flask()
        self.apps = {k: v for k, v in session.snapshot.items() if is_instance(v, flask.Flask)}
        self.blueprints = {
            k: v
            for k, v in session.snapshot.items()
            if is_instance(v, flask.Blueprint) and not is_instance(v, flask.Flask)
        }
        self.first: dict[int, bool] = {}
        self.routes: dict[int, set[str]] = {}
        for app in {id(a): a for a in self.apps.values()}.values():
            self._release(session, app)
        return bool(self.apps or self.blueprints)

    def _release(self, session: Session, app: Any) -> None:
        """Rule 2: take this module's endpoints off ``app`` so the body can add them."""
        name = session.name
        self.routes[id(app)] = routes(app)
        mine = {
            endpoint
            for endpoint, view in app.view_functions.items()
            if getattr(view, "__module__", None) == name
        }
        saved = {k: getattr(app, k) for k in ("url_map", "view_functions")}
        first = app.__dict__.get("_got_first_request", False)

        def undo() -> None:
            for key, value in saved.items():
                setattr(app, key, value)
            app._got_first_request = first

        session.undo.record(undo, f"{name} (Flask app {app.name})")
        if mine:
            app.url_map = _copy_map(app, lambda rule: rule.endpoint not in mine)
            app.view_functions = {k: v for k, v in app.view_functions.items() if k not in mine}
        app._got_first_request = False  # the body may add routes, as at import
        self.first[id(app)] = first

    def finish(self, session: Session) -> None:
        flask = _flask()
        merged: set[int] = set()
        for key, old in self.apps.items():
            new: Any = session.namespace.get(key)
            if new is old:
                old.view_functions = _live(session, old.view_functions)
            elif is_instance(new, flask.Flask) and id(old) not in merged:
                self._merge(session, key, old, new)
                merged.add(id(old))
            old._got_first_request = self.first[id(old)]
        for key, old in self.blueprints.items():
            new = session.namespace.get(key)
            if is_instance(new, flask.Blueprint) and new is not old and old._got_registered_once:
                self._check_blueprint(session, key, old, new)

    def _merge(self, session: Session, key: str, old: Any, new: Any) -> None:
        """Rule 1: ``new``'s routing and hooks onto ``old``; ``key`` bound to ``old``."""
        label = f"{session.name}.{key}"
        before = self.routes[id(old)]
        saved = {k: getattr(old, k) for k in (*_ROUTING, "url_map")}
        config = dict(old.config)

        def undo() -> None:
            for attr, value in saved.items():
                setattr(old, attr, value)
            old.config.clear()
            old.config.update(config)

        session.undo.record(undo, label)
        # routes other modules registered on the held app (views modules) stay: a restart
        # would import them again
        others = {
            endpoint: view
            for endpoint, view in old.view_functions.items()
            if endpoint not in new.view_functions
            and getattr(view, "__module__", None) != session.name
        }
        url_map = new.url_map
        for rule in old.url_map.iter_rules():
            if rule.endpoint in others:
                url_map.add(rule.empty())
        for attr in _ROUTING:
            if hasattr(new, attr):
                setattr(old, attr, _live(session, getattr(new, attr)))
        old.url_map = url_map
        old.view_functions.update(others)
        for name, value in new.config.items():
            if name not in config or config[name] != value:
                old.config[name] = value
        session.namespace[key] = old
        after = routes(old)
        for route in sorted(after - before):
            session.act("added", f"{label} route {route}")
        for route in sorted(before - after):
            session.act("removed", f"{label} route {route}")
        session.act("merged", label, "new Flask app's routes and hooks moved to the served app")
        added = set(new.extensions) - set(old.extensions)
        if added:
            session.warn(
                f"{label}: the new body initialised extensions {sorted(added)} on a new Flask "
                "app; the served app does not have them: restart, or build the app in a "
                "factory (create_app) and keep extensions out of reloaded modules"
            )

    def _check_blueprint(self, session: Session, key: str, old: Any, new: Any) -> None:
        """Rule 3: the registered blueprint stays bound (its views run the new code); warn
        when the re-created one declares other routes."""
        session.namespace[key] = old
        if _declared(old) == _declared(new):
            return
        session.warn(
            f"{session.name}.{key}: blueprint {new.name!r} was re-created with other routes "
            "or hooks; the app that registered it still serves the old ones: restart, or "
            "put the routes on the app module"
        )


def _declared(blueprint: Any) -> list[tuple[Any, ...]]:
    """What a blueprint will register, as comparable values: each deferred setup call's
    code and the constants it closes over (rule strings, endpoints, options)."""
    found: list[tuple[Any, ...]] = []
    for fn in blueprint.deferred_functions:
        cells = []
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            if is_instance(value, (str, int, tuple, frozenset, type(None))):
                cells.append(value)
            elif is_instance(value, dict):
                cells.append(repr(sorted(value.items(), key=repr)))
            else:
                cells.append(getattr(value, "__qualname__", type(value).__name__))
        found.append((getattr(fn, "__qualname__", ""), tuple(cells)))
    return found
