"""``fluxmail preview``: a template rendered as it would be sent; nothing sent or recorded."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from fluxmail.cli._common import (
    JsonFlag,
    build_mailer,
    json_errors,
    output,
    usage_error,
)

if TYPE_CHECKING:
    from fluxmail.message.addresses import Address
    from fluxmail.message.model import Message

EPILOG = """Examples:

  fluxmail preview --template welcome --var name=Ada

  fluxmail preview --template emails/receipt --var order=42 --to ada@example.com --json
"""

# Without --to (or a configured sender) the message still needs addresses to be built.
PLACEHOLDER_TO = "recipient@example.com"
PLACEHOLDER_FROM = "sender@example.com"

TemplateOption = Annotated[
    str,
    typer.Option(
        "--template",
        metavar="NAME",
        help="Render NAME.subject, NAME.txt and NAME.html from FLUXMAIL_TEMPLATES_DIR.",
    ),
]
VarOption = Annotated[
    list[str] | None,
    typer.Option("--var", metavar="KEY=VALUE", help="A template variable (repeatable)."),
]


def variables(values: list[str] | None) -> dict[str, str]:
    """``--var key=value`` pairs as a template context (values are strings)."""
    context: dict[str, str] = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise usage_error(f"--var {item[:60]!r}: write it as key=value (key: a name)")
        if key in context:
            raise usage_error(f"--var {key}: given twice")
        context[key] = value
    return context


def _people(addresses: tuple[Address, ...]) -> str:
    # As a person reads them, not RFC 2047 encoded words.
    return ", ".join(f"{a.name} <{a.addr}>" if a.name else a.addr for a in addresses)


def _headers(message: Message) -> dict[str, str]:
    headers = {"From": _people((message.sender,)), "To": _people(message.to)}
    headers["Subject"] = message.subject
    headers.update(message.headers)
    return headers


def preview(
    template: TemplateOption,
    var: VarOption = None,
    to: Annotated[
        list[str] | None,
        typer.Option("--to", metavar="ADDRESS", help=f"Recipient; default {PLACEHOLDER_TO}."),
    ] = None,
    sender: Annotated[
        str | None, typer.Option(help="From (default FLUXMAIL_SENDER, else a placeholder).")
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Print a template rendered with --var values: headers, text and HTML; sends nothing."""
    context = variables(var)
    with json_errors(json_output):
        mailer = build_mailer()
        try:
            chosen = sender or mailer.config.default_sender() or PLACEHOLDER_FROM
            message = mailer.create(
                template=template, context=context, recipients=to or [PLACEHOLDER_TO],
                sender=chosen,
            ).message  # fmt: skip
        finally:
            mailer.close()
    _show(template, message, json_output)


def _show(template: str, message: Message, json_output: bool) -> None:
    data: dict[str, Any] = {"headers": _headers(message), "text": message.text}
    data["html"] = message.html
    out = output()
    if json_output:
        out.json({"ok": True, "template": template, **data})
        return
    out.fields(data["headers"].items())
    for label in ("text", "html"):
        if data[label] is not None:
            out.print()
            out.print(f"--- {label} ---", style="bold")
            out.print(data[label].rstrip("\n"))


def register(app: typer.Typer) -> None:
    app.command("preview", epilog=EPILOG)(preview)
