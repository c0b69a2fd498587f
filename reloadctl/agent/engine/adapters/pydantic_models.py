"""pydantic v2 models: field changes on a kept model class are told, with what they mean
for the instances created before the reload.

The engine keeps a model class in place and rebuilds its validator and schema from the
new body (classes.py); new instances, validation and serialisation are then as after a
restart. What no reload can change is the instances made before it (finding them would
need a heap walk): their ``__dict__`` holds the old fields.

Rules:
1. For each kept model whose fields changed, one warning per kind of change names the
   model, the fields and the consequence: "instances created before this reload lack
   field qty" (reading it raises ``AttributeError``; dumping them fails), "still carry
   removed field x", "hold field price validated as the old type". Recreate or re-validate
   such instances (``Model.model_validate(old.model_dump())``), or restart.
2. A validator added, removed or changed (code or settings) is told the same way: held
   instances hold values the old validator produced.
3. A model whose fields and validators did not change gets no warning (methods,
   serializers and config changes are restart-equivalent).
"""

from __future__ import annotations

import sys

from reloadctl.agent.engine.adapters import Adapter, Session, is_instance

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


#: The decorator kinds that run when an instance is created (serializers run at dump time:
#: held instances already use the new ones).
_VALIDATORS = ("validators", "field_validators", "root_validators", "model_validators")


def validators(model: Any) -> dict[str, tuple[Any, ...]]:
    """Each validator of ``model`` by name, as its code and settings (recorded before the
    engine patches the functions in place)."""
    found: dict[str, tuple[Any, ...]] = {}
    infos = vars(model).get("__pydantic_decorators__")
    for kind in _VALIDATORS:
        for name, decorator in dict(getattr(infos, kind, None) or {}).items():
            func = getattr(decorator.func, "__func__", decorator.func)
            code = getattr(func, "__code__", None)
            key = (code.co_code, repr(code.co_consts)) if code is not None else (repr(func),)
            found[name] = (*key, repr(decorator.info))
    return found


def fields(model: Any) -> dict[str, tuple[str, bool, str]]:
    """Each field of ``model`` as (annotation, required, default), comparable across
    versions."""
    found: dict[str, tuple[str, bool, str]] = {}
    for name, info in dict(vars(model).get("__pydantic_fields__") or {}).items():
        annotation = getattr(info, "annotation", None)
        shown = getattr(annotation, "__qualname__", None) or repr(annotation)
        found[name] = (str(shown), bool(info.is_required()), repr(info.default))
    return found


class Models(Adapter):
    """pydantic v2 ``BaseModel`` classes of the module (see the module rules)."""

    def begin(self, session: Session) -> bool:
        base = getattr(sys.modules["pydantic"], "BaseModel", None)
        if not is_instance(base, type):
            return False
        self.models = {
            key: (value, fields(value))
            for key, value in session.old_classes().items()
            if is_instance(value, type) and issubclass(value, base) and value is not base
        }
        self.validators = {key: validators(model) for key, (model, _) in self.models.items()}
        return bool(self.models)

    def finish(self, session: Session) -> None:
        for key, (model, before) in self.models.items():
            if not session.kept(key):
                continue  # replaced (the engine warned) or removed
            after = fields(model)
            label = f"{session.name}.{model.__qualname__}"
            added = [f for f in after if f not in before]
            removed = [f for f in before if f not in after]
            changed = [f for f in after if f in before and after[f][0] != before[f][0]]
            todo = "; recreate them (Model.model_validate(obj.model_dump())) or restart"
            if added:
                session.warn(
                    f"{label}: instances created before this reload lack field "
                    f"{', '.join(added)} (reading it raises AttributeError){todo}"
                )
            if removed:
                session.warn(
                    f"{label}: instances created before this reload still carry removed "
                    f"field {', '.join(removed)}{todo}"
                )
            if changed:
                session.warn(
                    f"{label}: instances created before this reload hold field "
                    f"{', '.join(changed)} validated as the old type{todo}"
                )
            new_validators = validators(model)
            old_validators = self.validators[key]
            differ = sorted(
                name
                for name in set(new_validators) | set(old_validators)
                if new_validators.get(name) != old_validators.get(name)
            )
            if differ:
                session.warn(
                    f"{label}: instances created before this reload were validated by the "
                    f"old version of {', '.join(differ)}{todo}"
                )
