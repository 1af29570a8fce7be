"""Output for every command: rich on a terminal, plain text otherwise, never a secret.

Secrets are kept out by structure, where values are produced (see :mod:`fluxmail.cli._redact`):
the configuration redacts its secret fields, and error text passes through
:meth:`Secrets.message`. Nothing searches the output for a secret's text.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any

from fluxmail.cli._redact import REDACTED, Secrets

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["REDACTED", "Output"]


class Output:
    """Where a command prints: ``out`` (results) and ``err`` (errors, progress)."""

    def __init__(self, *, debug: bool = False, secrets: Secrets | None = None) -> None:
        self.debug = debug
        self.secrets = Secrets() if secrets is None else secrets
        self.stdout: IO[str] = sys.stdout
        self.stderr: IO[str] = sys.stderr
        self._out: Console | None = None
        self._err: Console | None = None

    @staticmethod
    def _console(stream: IO[str]) -> Console:
        from rich.console import Console

        tty = bool(getattr(stream, "isatty", lambda: False)())
        # Off a terminal: no colour, no wrapping of long lines (they are for grep and pipes).
        return Console(
            file=stream,
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
        """One readable line on stderr (it may echo input: a secret given as input is hidden)."""
        self.err.print(f"[bold red]error:[/bold red] {_escape(self.secrets.message(text))}")

    def warning(self, text: str) -> None:
        self.err.print(f"[bold yellow]warning:[/bold yellow] {_escape(self.secrets.message(text))}")

    def hint(self, text: str) -> None:
        self.err.print(f"[yellow]hint:[/yellow] {_escape(self.secrets.message(text))}")

    def traceback(self, exc: BaseException) -> None:
        """The traceback of ``exc`` (``--debug``); the exception lines go through the redactor."""
        self.stderr.write("".join(_traceback_lines(exc, self.secrets)))
        self.stderr.flush()

    def raw(self, data: bytes) -> None:
        """Bytes as they are (``audit show --eml``): the snapshot never holds a secret."""
        self.stdout.write(data.decode("utf-8", "replace"))
        self.stdout.flush()


def _traceback_lines(exc: BaseException, secrets: Secrets) -> Iterator[str]:
    # The frames show code, not values; only the exception lines can carry echoed input.
    cause, context = exc.__cause__, exc.__context__
    if cause is not None:
        yield from _traceback_lines(cause, secrets)
        yield "\nThe above exception was the direct cause of the following exception:\n\n"
    elif context is not None and not exc.__suppress_context__:
        yield from _traceback_lines(context, secrets)
        yield "\nDuring handling of the above exception, another exception occurred:\n\n"
    if exc.__traceback__ is not None:
        yield "Traceback (most recent call last):\n"
        yield from traceback.format_tb(exc.__traceback__)
    for line in traceback.format_exception_only(type(exc), exc):
        yield secrets.message(line)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
