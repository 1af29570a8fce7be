"""One HTTP request a provider module asks for, and the reply it is given back: plain data.

Re-exported by :mod:`fluxmail.transport.api.base`, where the provider modules import them.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ApiReply", "ApiRequest"]


@dataclass(frozen=True)
class ApiRequest:
    """One HTTP request; ``path`` is joined to the base URL. Exactly one body form, or none."""

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)  # auth headers go here
    content: bytes | None = None
    json: Any = None
    data: Mapping[str, str] | Sequence[tuple[str, str]] | None = None
    files: Sequence[tuple[str, tuple[str, bytes, str]]] = ()


@dataclass(frozen=True)
class ApiReply:
    """The API's answer: status, headers (lower-case names) and the body as received."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON; None when it is not JSON."""
        try:
            return jsonlib.loads(self.body)
        except ValueError:
            return None
