"""Redaction by structure: secrets are recognised as whole values, never as substrings.

The library keeps secrets out of what it produces: ``Config.describe()`` redacts the secret
fields, the SMTP session redacts server replies during AUTH, audit stores strip URL passwords.
What is left for the CLI is input that an error message echoes back (a provider name, a flag
value) and URLs in messages it did not write. Both are handled by structure: a quoted value that
*is* a secret, or the password part of a URL. Searching the output for the secret's text would
turn a password such as ``default`` into a marker inside every word "default" and so give it away.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from fluxmail.config.secrets import REDACTED

__all__ = ["REDACTED", "Secrets", "dotenv_values_of"]

_SECRET_VARS = ("PASSWORD", "URL", "AUDIT_URL", "AUDIT_PASSWORD")
# A repr()-style quoted value ('x' or "x") inside a message: the form errors echo input in.
_QUOTED = re.compile(r"'([^'\n]*)'|\"([^\"\n]*)\"")
# scheme://user:password@ : RFC 3986 section 3.2.1 userinfo with a password part.
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*):[^\s/@'\"]*@")


def dotenv_values_of(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``.env`` file the settings would read (``FLUXMAIL_ENV_FILE`` or ``./.env``)."""
    path = environ.get("FLUXMAIL_ENV_FILE") or ".env"
    if not Path(path).is_file():
        return {}
    from dotenv import dotenv_values

    return {k.upper(): v for k, v in dotenv_values(path).items() if v is not None}


def _read_small(path: str) -> str | None:
    try:
        file = Path(path)
        if not file.is_file() or file.stat().st_size > 65536:
            return None
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")


def _configured(environ: Mapping[str, str]) -> Iterable[str]:
    """Secret values from the environment, ``.env`` and ``*_FILE`` (before any config is built)."""
    for layer in (environ, dotenv_values_of(environ)):
        for name in _SECRET_VARS:
            value = layer.get(f"FLUXMAIL_{name}")
            path = layer.get(f"FLUXMAIL_{name}_FILE")
            for candidate in (value, _read_small(path) if path else None):
                if candidate:
                    yield candidate


def _derived(value: str, username: str | None) -> set[str]:
    """The forms a secret takes on the wire and in URLs (RFC 4616 PLAIN, LOGIN, RFC 3986)."""
    forms = {value, quote(value, safe=""), base64.b64encode(value.encode()).decode()}
    if username is not None:
        forms.add(base64.b64encode(f"\0{username}\0{value}".encode()).decode())
    try:
        parts = urlsplit(value)
        password, user = parts.password, parts.username
    except ValueError:
        return forms
    if password:
        forms |= _derived(unquote(password), unquote(user) if user else username) | {password}
    return forms


class Secrets:
    """The secret values of this run, and the two structural ways they are redacted."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.username = env.get("FLUXMAIL_USERNAME")
        self._raw: set[str] = set(_configured(env))
        self._values: set[str] = set()
        self._refresh()

    def _refresh(self) -> None:
        self._values = set().union(*(_derived(v, self.username) for v in self._raw))

    def add(self, *values: str | None, username: str | None = None) -> None:
        """Remember more secrets (the resolved config, a password read from stdin)."""
        self.username = username or self.username
        self._raw.update(v for v in values if v)
        self._refresh()

    def is_secret(self, value: object) -> bool:
        return isinstance(value, str) and value in self._values

    def message(self, text: str) -> str:
        """``text`` with URL passwords and quoted values that are secrets replaced by the marker."""
        text = _URL_PASSWORD.sub(rf"\1:{REDACTED}@", text)
        return _QUOTED.sub(self._quoted, text)

    def _quoted(self, match: re.Match[str]) -> str:
        inner = match.group(1) if match.group(1) is not None else match.group(2)
        if not self.is_secret(inner):
            return match.group(0)
        quote_char = match.group(0)[0]
        return f"{quote_char}{REDACTED}{quote_char}"

    def error(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """An error's ``to_dict()`` with every text field passed through :meth:`message`."""
        return {k: self.message(v) if isinstance(v, str) else v for k, v in data.items()}
