"""Module-level imports whose execution waits for first use (``importlib.util.LazyLoader``).

``FluxMail.from_env()`` in a Lambda cold start should pay for configuration, not for the MIME
writer, the send protocol or the bulk pipeline it will only need on the first send. A module
imports them at the top, where a reader (and tests/project/test_architecture.py, which counts
these as import edges) sees them; their code runs when an attribute is first read.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

__all__ = ["lazy_module"]


def lazy_module(name: str) -> ModuleType:
    """``name`` imported now, executed on first attribute access (at once if already loaded)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
