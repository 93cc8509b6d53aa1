"""One lazy registry for named components: tasks, teacher backends and CLI command modules.

A :class:`Registry` maps names to ``"module:attribute"`` targets that are imported on first use,
so listing names or resolving one imports only what is needed (``cotdistill --help`` does not
load torch; ``make_teacher("lab")`` does not import the openai client). Names are case-insensitive;
an unknown name is a one-line :class:`cotdistill.errors.UserError` listing the known ones. Objects
can also be added at run time (:meth:`Registry.add`, or the ``@register`` decorator of tasks).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .errors import UserError, did_you_mean


class Registry:
    """Names -> lazily imported objects (classes, modules, functions)."""

    def __init__(self, what: str, targets: dict[str, str]):
        self.what = what
        self._targets = {k.lower(): v for k, v in targets.items()}
        self._loaded: dict[str, Any] = {}

    def names(self) -> list[str]:
        return sorted(set(self._targets) | set(self._loaded))

    def add(self, name: str, obj: Any) -> Any:
        """Register ``obj`` under ``name`` (replacing a lazy target of that name)."""
        self._loaded[name.lower()] = obj
        return obj

    def get(self, name: str) -> Any:
        key = name.strip().lower()
        if key in self._loaded:
            return self._loaded[key]
        if key not in self._targets:
            raise UserError(f"unknown {self.what} {name!r}{did_you_mean(key, self.names(), cutoff=0.7)}; "
                            f"known {self.what}s: {', '.join(self.names())}")
        module, _, attr = self._targets[key].partition(":")
        mod = importlib.import_module(module)
        obj = getattr(mod, attr) if attr else mod
        self._loaded.setdefault(key, obj)  # (importing the module may have registered it already)
        return self._loaded[key]

    def decorator(self, key: Callable[[Any], str]) -> Callable[[Any], Any]:
        """A class decorator that registers a class under ``key(cls)``."""
        def deco(cls: Any) -> Any:
            return self.add(key(cls), cls)
        return deco
