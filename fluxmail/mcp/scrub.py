"""No secret in any tool result: every string an agent gets passes through here.

The configuration's secrets (SMTP password, API key, the audit URL and its password, OAuth
client secrets and refresh tokens) and the forms they take on the wire and in URLs are
replaced by ``fluxmail.redaction.REDACTED`` wherever they stand as a whole word, and URL
passwords are replaced whatever they are (``fluxmail.cli._redact.Secrets.message``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fluxmail.cli._redact import Secrets, secret_forms
from fluxmail.config.resolve import Config
from fluxmail.config.sources import SECRET_FIELDS
from fluxmail.redaction import redact_words

__all__ = ["Scrubber"]


def _config_secrets(config: Config) -> set[str]:
    found: set[str] = set()
    for name in SECRET_FIELDS:
        value = getattr(config, name, None)
        if value is not None and hasattr(value, "get_secret_value"):
            text = str(value.get_secret_value())
            if text:
                found |= secret_forms(text, config.username)
    for member in config.members:  # failover(...) / roundrobin(...) members
        found |= _config_secrets(member)
    return found


class Scrubber:
    """Redacts one run's secrets from text, and from JSON-like values recursively."""

    def __init__(self, config: Config) -> None:
        self._structure = Secrets()
        self._words = sorted(_config_secrets(config), key=len, reverse=True)
        self._structure.add(*self._words, username=config.username)

    def text(self, text: str) -> str:
        return redact_words(self._structure.message(text), self._words)

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        return value
