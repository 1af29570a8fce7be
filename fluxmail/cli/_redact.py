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
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from pydantic import SecretStr

from fluxmail.config.composite import is_composite, member_urls
from fluxmail.config.settings import SECRET_FIELDS, settings_class
from fluxmail.config.sources import Trace, dotenv, environment, read_layers
from fluxmail.errors import FluxMailException
from fluxmail.redaction import REDACTED

__all__ = ["REDACTED", "Secrets", "dotenv_values_of", "secret_forms"]

# A repr()-style quoted value ('x' or "x") inside a message: the form errors echo input in.
_QUOTED = re.compile(r"'([^'\n]*)'|\"([^\"\n]*)\"")
# scheme://user:password@ : RFC 3986 section 3.2.1 userinfo with a password part.
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*):[^\s/@'\"]*@")
# <provider>+api://KEY@default (fluxmail.config.api): there the user part is the key.
_API_KEY = re.compile(r"([A-Za-z][A-Za-z0-9.-]*\+api://)[^\s:/@'\"]+@", re.IGNORECASE)


def dotenv_values_of(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``.env`` file the settings would read (``FLUXMAIL_ENV_FILE`` or ``./.env``)."""
    cls = settings_class()
    dot = dotenv(cls, None, environment(cls, environ).env_vars, lenient=True)
    return {k.upper(): v for k, v in dot.env_vars.items() if v is not None}


def _configured(environ: Mapping[str, str] | None) -> Trace:
    """What the config layer's sources say before any config is built: every layer's own
    values, so a password in ``.env`` shadowed by the environment is still redacted."""
    try:
        return read_layers(settings_class(), environ, lenient=True)
    except (FluxMailException, OSError, ValueError):
        return Trace()  # an unreadable .env: the build reports it, naming no secret


def _secret_values(trace: Trace) -> set[str]:
    found: set[str] = set()
    for _, values in trace.layers:
        for name in SECRET_FIELDS:
            value: object = values.get(name)
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if isinstance(text, str) and text:
                found.add(text)
    return found


def secret_forms(value: str, username: str | None) -> set[str]:
    """The forms a secret takes on the wire and in URLs (RFC 4616 PLAIN, LOGIN, RFC 3986)."""
    forms = {value, quote(value, safe=""), base64.b64encode(value.encode()).decode()}
    if is_composite(value):  # failover(...): every member URL holds its own password
        for member in member_urls(value):
            forms |= secret_forms(member, username)
        return forms
    if username is not None:
        forms.add(base64.b64encode(f"\0{username}\0{value}".encode()).decode())
    try:
        parts = urlsplit(value)
        password, user = parts.password, parts.username
    except ValueError:
        return forms
    if password:
        forms |= secret_forms(unquote(password), unquote(user) if user else username) | {password}
    elif user and parts.scheme.lower().endswith("+api"):
        forms |= {user, unquote(user), quote(unquote(user), safe="")}  # the key is the user part
    return forms


class Secrets:
    """The secret values of this run, and the two structural ways they are redacted."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        trace = _configured(environ)
        username = trace.raw("username")
        self.username = username if isinstance(username, str) else None
        self._raw: set[str] = _secret_values(trace)
        self._values: set[str] = set()
        self._refresh()

    def _refresh(self) -> None:
        self._values = set().union(*(secret_forms(v, self.username) for v in self._raw))

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
        text = _API_KEY.sub(rf"\1{REDACTED}@", text)
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
