"""``fluxmail config``: the resolved configuration, the source of every value, no secrets."""

from __future__ import annotations

from collections.abc import Iterable

import typer

from fluxmail.cli._common import (
    JsonFlag,
    PasswordStdin,
    ProviderOption,
    build_config,
    json_errors,
    output,
    overrides,
)

EPILOG = """Examples:

  fluxmail config

  FLUXMAIL_URL=smtps://me%40example.com@smtp.example.com fluxmail config --json

  fluxmail config --provider mailgun
"""


def _shown(value: object) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def config(
    provider: ProviderOption = None,
    password_stdin: PasswordStdin = False,
    json_output: JsonFlag = False,
) -> None:
    """Show the resolved configuration with where each value came from (secrets redacted)."""
    with json_errors(json_output):
        resolved = build_config(**overrides(provider, password_stdin))
    described = resolved.describe()
    print_warnings(resolved.warnings)
    if json_output:
        output().json({"ok": True, "config": described, "warnings": list(resolved.warnings)})
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in ("setting", "value", "source"):
        table.add_column(column)
    for name, item in described.items():
        style = "dim" if item.get("source") == "default" else ""
        cells = (name, _shown(item.get("value")), _shown(item.get("source")))
        table.add_row(*(Text(c) for c in cells), style=style)
    output().out.print(table)


def print_warnings(warnings: Iterable[str]) -> None:
    """Configuration warnings (misspelled FLUXMAIL_* names) on stderr, one line each."""
    from rich.markup import escape

    for text in warnings:
        output().err.print(f"[yellow]warning:[/yellow] {escape(text)}")


def register(app: typer.Typer) -> None:
    app.command("config", epilog=EPILOG)(config)
