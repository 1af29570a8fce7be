"""``Frozen``: assignment refused as a frozen dataclass refuses it, for dataclasses made with
``frozen=False``.

``@dataclass(frozen=True)`` writes ``__setattr__`` and ``__delattr__`` as source text naming
every field and compiles them when the class is made: for ``Config`` (~65 fields) and
``Address`` that was a visible part of what ``FluxMail.from_env()`` adds to a cold start.
These two methods need no field names: nothing assigns to these instances after ``__init__``
(which writes through ``object.__setattr__``, as the generated one does).
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError

__all__ = ["Frozen"]


class Frozen:
    """Mix into a ``@dataclass(init=False)`` whose hand-written ``__init__`` sets the fields."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")
