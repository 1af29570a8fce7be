"""Output for every command: rich on a terminal, plain text otherwise, never a secret.

Every byte the CLI prints goes through :class:`Scrubbed`, which replaces any known secret value
(password, URL, audit password, from the environment, ``.env``, ``*_FILE`` or stdin) with ``***``.
The library already keeps secrets out of its messages; this is the second lock on the door.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from rich.console import Console

_SECRET_VARS = ("PASSWORD", "URL", "AUDIT_URL", "AUDIT_PASSWORD")
_MIN_SECRET = 4  # shorter values would blank out ordinary words; no real password is that short
REDACTED = "***"


def _url_parts(value: str) -> list[str]:
    try:
        password = urlsplit(value).password
    except ValueError:
        return []
    return [password, unquote(password)] if password else []


def _read_small(path: str) -> str | None:
    try:
        file = Path(path)
        if not file.is_file() or file.stat().st_size > 65536:
            return None
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")


def dotenv_values_of(environ: Mapping[str, str]) -> dict[str, str]:
    path = environ.get("FLUXMAIL_ENV_FILE") or ".env"
    if not Path(path).is_file():
        return {}
    from dotenv import dotenv_values

    return {k.upper(): v for k, v in dotenv_values(path).items() if v is not None}


def known_secrets(environ: Mapping[str, str] | None = None) -> set[str]:
    """Every secret value the configuration could be holding, wherever it came from."""
    env = dict(os.environ if environ is None else environ)
    found: set[str] = set()
    for layer in (env, dotenv_values_of(env)):
        for name in _SECRET_VARS:
            value = layer.get(f"FLUXMAIL_{name}")
            file_value = (
                _read_small(layer[f"FLUXMAIL_{name}_FILE"])
                if (layer.get(f"FLUXMAIL_{name}_FILE"))
                else None
            )
            for candidate in (value, file_value):
                if candidate:
                    found.add(candidate)
                    found.update(_url_parts(candidate))
    return found


class Scrubbed:
    """A text stream that blanks out secrets before they reach the real one."""

    def __init__(self, stream: IO[str], secrets: set[str]) -> None:
        self._stream = stream
        self.secrets = secrets

    def add(self, *values: str | None) -> None:
        for value in values:
            if value:
                self.secrets.add(value)
                self.secrets.update(_url_parts(value))

    def scrub(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            if len(secret) >= _MIN_SECRET:
                text = text.replace(secret, REDACTED)
        return text

    def write(self, text: str) -> int:
        self._stream.write(self.scrub(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        isatty = getattr(self._stream, "isatty", None)
        return bool(isatty()) if isatty is not None else False

    def fileno(self) -> int:
        return self._stream.fileno()


class Output:
    """Where a command prints: ``out`` (results) and ``err`` (errors, progress)."""

    def __init__(self, *, debug: bool = False, secrets: set[str] | None = None) -> None:
        self.debug = debug
        shared = known_secrets() if secrets is None else secrets
        self.stdout = Scrubbed(sys.stdout, shared)
        self.stderr = Scrubbed(sys.stderr, shared)
        self._out: Console | None = None
        self._err: Console | None = None

    def add_secrets(self, *values: str | None) -> None:
        self.stdout.add(*values)

    @staticmethod
    def _console(stream: Scrubbed) -> Console:
        from rich.console import Console

        tty = stream.isatty()
        # Off a terminal: no colour, no wrapping of long lines (they are for grep and pipes).
        return Console(
            file=stream,  # type: ignore[arg-type]
            highlight=False,
            soft_wrap=not tty,
            width=None if tty else 200,
            no_color=bool(os.environ.get("NO_COLOR")) or None,
        )

    @property
    def out(self) -> Console:
        if self._out is None:
            self._out = self._console(self.stdout)
        return self._out

    @property
    def err(self) -> Console:
        if self._err is None:
            self._err = self._console(self.stderr)
        return self._err

    def print(self, text: str = "", style: str | None = None) -> None:
        """One line of plain text (rich markup is not interpreted)."""
        self.out.print(text, style=style, markup=False)

    def json(self, data: Mapping[str, Any] | list[Any]) -> None:
        """Exactly one JSON object on stdout."""
        self.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
        self.stdout.flush()

    def fields(self, rows: Iterable[tuple[str, object]]) -> None:
        """Aligned ``label: value`` lines."""
        items = [(k, "-" if v is None or v == "" else str(v)) for k, v in rows]
        width = max((len(k) for k, _ in items), default=0) + 1
        for key, value in items:
            self.out.print(f"[bold]{key + ':':<{width}}[/bold] ", end="")
            self.out.print(value, markup=False)

    def error(self, text: str) -> None:
        """One readable line on stderr."""
        self.err.print(f"[bold red]error:[/bold red] {_escape(text)}")

    def hint(self, text: str) -> None:
        self.err.print(f"[yellow]hint:[/yellow] {_escape(text)}")

    def raw(self, data: bytes) -> None:
        """Bytes as they are (``audit show --eml``); still scrubbed of secrets."""
        self.stdout.write(data.decode("utf-8", "replace"))
        self.stdout.flush()


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
