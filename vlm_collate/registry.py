"""Choosing a collator class from a processor's class name.

Families register the processor class names they handle with
[`register_collator`][vlm_collate.register_collator]; [`collator_for`][vlm_collate.collator_for]
looks the processor's class
(and its base classes) up, and falls back to ``DefaultCollator``.
"""

from __future__ import annotations

import importlib
import logging
import typing
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from ._types import Processor
from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._pipeline import BaseCollator

__all__ = ["collator_class_for", "collator_for", "register_collator", "registered"]

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, type] = {}
CollatorType = TypeVar("CollatorType", bound=type)


def register_collator(*processor_class_names: str) -> Callable[[CollatorType], CollatorType]:
    """Class decorator: use the decorated collator for these processor class names."""
    if not processor_class_names:
        msg = "register_collator needs at least one processor class name."
        raise ConfigurationError(msg)

    def decorate(cls: CollatorType) -> CollatorType:
        for name in processor_class_names:
            previous = _REGISTRY.get(name)
            if previous is not None and previous.__qualname__ != cls.__qualname__:
                logger.info("processor %s: %s replaces %s", name, cls.__name__, previous.__name__)
            _REGISTRY[name] = cls
        return cls

    return decorate


def registered() -> Mapping[str, type]:
    """A read-only view of processor class name -> collator class."""
    return MappingProxyType(_REGISTRY)


def collator_class_for(processor: Processor) -> type[BaseCollator]:
    """Return the collator class registered for ``processor`` or one of its bases."""
    importlib.import_module("vlm_collate._api")  # importing the public names registers every family
    for klass in type(processor).__mro__:
        found = _REGISTRY.get(klass.__name__)
        if found is not None:
            return typing.cast("type[BaseCollator]", found)
    from .families.default import DefaultCollator

    logger.warning(
        "no collator is registered for %s; using DefaultCollator", type(processor).__name__
    )
    return DefaultCollator


def collator_for(processor: Processor, **options: Any) -> BaseCollator:
    """Build the collator registered for ``processor``'s class, with ``options``."""
    return collator_class_for(processor)(processor=processor, **options)
