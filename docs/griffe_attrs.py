"""A griffe extension: give ``attrs`` classes the ``__init__`` signature attrs writes for them.

Griffe reads source code, and an attrs class has no ``__init__`` in its
source, so the API reference showed no signature and called every parameter
*required*. This extension imports each documented class, asks attrs for its
fields (``attrs.fields``: name as a parameter, ``init``, ``kw_only``, default or
factory) and adds an ``__init__`` to griffe's model of the class. Annotations
come from the source when griffe has them, so they link to the documented
types; defaults are written as Python would print them, a factory as a call.

Registered in ``mkdocs.yml`` under the python handler's ``extensions``.
"""

from __future__ import annotations

import importlib
from typing import Any

import attrs
import griffe

__all__ = ["AttrsSignatures"]


class AttrsSignatures(griffe.Extension):
    """Adds the attrs-generated ``__init__`` to every attrs class of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for cls in _classes(pkg, set()):
            runtime = _runtime_class(cls)
            if runtime is None or not attrs.has(runtime) or "__init__" in cls.members:
                continue
            cls.set_member("__init__", _init_function(cls, runtime))


def _classes(obj: griffe.Module | griffe.Class, seen: set[str]) -> list[griffe.Class]:
    """Every class defined in ``obj`` and below it, nested classes included."""
    if obj.path in seen:
        return []
    seen.add(obj.path)
    found = [obj] if isinstance(obj, griffe.Class) else []
    for member in obj.members.values():
        if not member.is_alias and (member.is_module or member.is_class):
            found += _classes(member, seen)  # type: ignore[arg-type]
    return found


def _runtime_class(cls: griffe.Class) -> type | None:
    module_path = cls.module.path
    try:
        target: Any = importlib.import_module(module_path)
    except ImportError:
        return None
    for part in cls.path[len(module_path) + 1 :].split("."):
        target = getattr(target, part, None)
    return target if isinstance(target, type) else None


def _init_function(cls: griffe.Class, runtime: type) -> griffe.Function:
    parameters = [griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword)]
    fields = [field for field in attrs.fields(runtime) if field.init]
    # attrs puts keyword-only fields last, whatever their order in the class.
    fields.sort(key=lambda field: field.kw_only)
    for field in fields:
        parameters.append(
            griffe.Parameter(
                field.alias or field.name.lstrip("_"),
                annotation=_annotation(cls, field),
                kind=(
                    griffe.ParameterKind.keyword_only
                    if field.kw_only
                    else griffe.ParameterKind.positional_or_keyword
                ),
                default=_default(field),
            )
        )
    return griffe.Function(
        "__init__",
        lineno=cls.lineno,
        endlineno=cls.lineno,
        parent=cls,
        parameters=griffe.Parameters(*parameters),
        returns="None",
    )


def _annotation(cls: griffe.Class, field: attrs.Attribute) -> str | griffe.Expr | None:
    """The field's annotation as written in the source (so it links), else as attrs has it."""
    member = cls.all_members.get(field.name)
    annotation = getattr(member, "annotation", None) if member is not None else None
    if annotation is not None:
        return annotation
    if field.type is None:
        return None
    return field.type if isinstance(field.type, str) else getattr(field.type, "__name__", None)


def _default(field: attrs.Attribute) -> str | None:
    default = field.default
    if default is attrs.NOTHING:
        return None
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        factory = default.factory
        return f"{getattr(factory, '__qualname__', repr(factory))}()"
    text = repr(default)
    return text if len(text) <= 60 else f"<{type(default).__name__}>"
