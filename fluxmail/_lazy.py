"""Module-level imports whose execution waits for first use.

``FluxMail.from_env()`` in a Lambda cold start should pay for configuration, not for the MIME
writer, the send protocol or the bulk pipeline it will only need on the first send. A module
imports them at the top, where a reader (and tests/project/test_architecture.py, which counts
these as import edges) sees them; their code runs when an attribute is first read.

Not ``importlib.util.LazyLoader``: before Python 3.12 two threads reading a lazy module's first
attribute at once could see it half-executed, and a mailer is shared across threads. Here the
first read goes through ``importlib.import_module``, whose per-module locks make it safe.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any, AnyStr

__all__ = ["lazy_module", "lazy_pattern"]


class _Deferred(ModuleType):
    """Stands for a module until it is needed; each name read is then kept here, so later
    reads are plain attribute lookups (the send path reads them per message)."""

    def __getattr__(self, name: str) -> Any:
        value = getattr(importlib.import_module(self.__name__), name)
        setattr(self, name, value)
        return value


def lazy_module(name: str) -> ModuleType:
    """``name``, executed on first attribute access."""
    return _Deferred(name)


def lazy_pattern(pattern: AnyStr, flags: int = 0) -> Callable[[], re.Pattern[AnyStr]]:
    """``re.compile(pattern, flags)``, done by the first call: a pattern costs ~0.1 ms to
    compile, and the configuration's patterns check values that a cold start rarely has."""
    return functools.cache(lambda: re.compile(pattern, flags))
