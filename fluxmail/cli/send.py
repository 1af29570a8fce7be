"""``fluxmail send``: one message, configured exactly as ``FluxMail.from_env()`` is."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fluxmail.cli._common import (
    JsonFlag,
    PasswordStdin,
    ProviderOption,
    build_mailer,
    error_dict,
    json_errors,
    output,
    overrides,
    report,
    usage_error,
)
from fluxmail.cli.exit_codes import exit_code
from fluxmail.cli.preview import VarOption, variables
from fluxmail.errors import DeliveryError

if TYPE_CHECKING:
    from collections.abc import Callable

    from fluxmail.mailer import FluxMail
    from fluxmail.results import SendResult

EPILOG = """Examples:

  fluxmail send --to bob@example.com --subject "Hello" --text "It works"

  fluxmail send --to a@example.com --to b@example.com --subject Report \\
      --html-file report.html --text-file report.txt --attach report.pdf

  echo "$SMTP_PASSWORD" | fluxmail send --password-stdin --provider sendgrid \\
      --sender "Shop <shop@example.com>" --to bob@example.com --subject Hi --text Hi

  fluxmail send --dry-run --json --to bob@example.com --subject Hi --text Hi

  fluxmail send --template welcome --var name=Ada --to ada@example.com
"""

Addresses = Annotated[list[str] | None, typer.Option(metavar="ADDRESS", help="Repeatable.")]


def _read(flag: str, value: str | None, path: Path | None) -> str | None:
    if value is not None and path is not None:
        raise usage_error(f"give {flag} or {flag}-file, not both")
    if path is None:
        return value
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise usage_error(f"{flag}-file {path}: cannot read it ({exc.__class__.__name__})") from exc


def _headers(values: list[str] | None) -> list[tuple[str, str]]:
    headers = []
    for item in values or ():
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise usage_error(f"--header {item!r}: write it as 'Name: value'")
        headers.append((name.strip(), value.strip()))
    return headers


def _content(
    subject: str | None, text: str | None, html: str | None, template: str | None, var: Any
) -> dict[str, Any]:
    """The body arguments of create(): the text and HTML given, or --template and --var."""
    if template is None:
        if var:
            raise usage_error("--var sets a template variable: give --template too")
        if subject is None:
            raise usage_error("give the subject with --subject (or use --template)")
        return _body(text, html)
    if subject is not None or text is not None or html is not None:
        raise usage_error("--template gives the subject and body: drop --subject/--text/--html")
    return {"template": template, "context": variables(var)}


def _body(text: str | None, html: str | None) -> dict[str, Any]:
    if text is None and html is None:
        raise usage_error("give the body with --text, --text-file, --html or --html-file")
    if html is None:
        return {"body": text}
    return {"body": html, "html_body": True, "plain_body": text}


def visible(result: SendResult, hidden: set[str]) -> dict[str, Any]:
    """``result.to_dict()`` without the Bcc recipients (unless the caller asked for them)."""
    data = result.to_dict()
    data["recipients"] = {a: r for a, r in data["recipients"].items() if a.lower() not in hidden}
    return data


def reply_text(code: int | None, enhanced: str | None, text: str | None) -> str:
    """``250 2.0.0 OK``, without repeating an enhanced status the text already starts with."""
    if enhanced and text and text.startswith(enhanced):
        enhanced = None
    return " ".join(str(x) for x in (code, enhanced, text) if x)


def _summary(data: dict[str, Any]) -> None:
    out = output()
    style = "green" if data["status"] in ("sent", "queued", "dry_run") else "yellow"
    replayed = "  (replayed from the audit record; not sent again)" if data["replayed"] else ""
    out.out.print(f"[bold {style}]{data['status']}[/]{replayed}")
    reply = data.get("final_reply")
    rows: list[tuple[str, object]] = [
        ("message-id", data["message_id"]),
        ("audit id", data["audit_id"]),
        ("server", f"{reply['code']} {reply['text']}" if reply else None),
        ("attempts", len(data["attempts"]) or None),
        ("elapsed", f"{data['elapsed']:.3f} s"),
    ]
    if data.get("provider_message_id"):  # an HTTP API's own id for the message
        rows.insert(2, ("provider id", data["provider_message_id"]))
    out.fields(rows)
    for address, r in data["recipients"].items():
        detail = reply_text(r["code"], r["enhanced_status"], r["text"])
        out.print(f"  {r['status']:<9} {address}  {detail}".rstrip())


def send(
    to: Annotated[
        list[str], typer.Option("--to", metavar="ADDRESS", help="Recipient (repeatable).")
    ],
    subject: Annotated[
        str | None, typer.Option("--subject", "-s", help="Subject line (not with --template).")
    ] = None,
    text: Annotated[str | None, typer.Option("--text", help="Plain-text body.")] = None,
    text_file: Annotated[Path | None, typer.Option(help="Read the text body from a file.")] = None,
    html: Annotated[str | None, typer.Option("--html", help="HTML body.")] = None,
    html_file: Annotated[Path | None, typer.Option(help="Read the HTML body from a file.")] = None,
    template: Annotated[
        str | None,
        typer.Option(
            "--template", metavar="NAME", help="Render NAME from FLUXMAIL_TEMPLATES_DIR instead."
        ),
    ] = None,
    var: VarOption = None,
    cc: Addresses = None,
    bcc: Addresses = None,
    attach: Annotated[
        list[Path] | None,
        typer.Option("--attach", "-a", metavar="FILE", help="Attach a file (repeatable)."),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option("--header", "-H", metavar="HEADER", help="'Name: value' (repeatable)."),
    ] = None,
    sender: Annotated[str | None, typer.Option(help="From (overrides FLUXMAIL_SENDER).")] = None,
    reply_to: Annotated[str | None, typer.Option(help="Reply-To address.")] = None,
    provider: ProviderOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Build and record; send nothing.")
    ] = False,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Send at most once per key (see docs/audit.md).")
    ] = None,
    save_draft: Annotated[
        bool,
        typer.Option("--draft", help="Store it as a draft to review; send nothing."),
    ] = False,
    password_stdin: PasswordStdin = False,
    json_output: JsonFlag = False,
    show_bcc: Annotated[
        bool, typer.Option("--show-bcc", help="Include Bcc recipients in the output.")
    ] = False,
) -> None:
    """Send one message (use `fluxmail dev-server` to try it locally)."""
    if save_draft and dry_run:
        raise usage_error("give --draft or --dry-run, not both")
    text, html = _read("--text", text, text_file), _read("--html", html, html_file)
    body = _content(subject, text, html, template, var)
    with json_errors(json_output):
        mailer = build_mailer(**overrides(provider, password_stdin))
        try:
            _send(mailer, to, subject, body, json_output=json_output, show_bcc=show_bcc,
                  cc=cc, bcc=bcc, sender=sender, reply_to=reply_to,
                  attachments=list(attach or ()), headers=_headers(header),
                  idempotency_key=idempotency_key, dry_run=dry_run,
                  save_draft=save_draft)  # fmt: skip
        finally:
            mailer.close()


def _send(
    mailer: FluxMail,
    to: list[str],
    subject: str | None,
    body: dict[str, Any],
    *,
    json_output: bool,
    show_bcc: bool,
    dry_run: bool,
    save_draft: bool = False,
    **fields: Any,
) -> None:
    draft = mailer.create(subject, to, **body, **fields)
    if save_draft:
        saved(draft.save_draft(), draft.message_id, json_output)
        return
    message = draft.message
    shown = {a.addr.lower() for a in (*message.to, *message.cc)}
    hidden = set() if show_bcc else {a.addr.lower() for a in message.bcc} - shown
    print_outcome(lambda: draft.send(dry_run=dry_run), hidden, json_output)


def print_outcome(send: Callable[[], SendResult], hidden: set[str], json_output: bool) -> None:
    """Run the send and print its result, or its error (then exit with the error's code)."""
    # With --json stdout holds exactly one object: the console backend prints to stderr then.
    quiet = contextlib.redirect_stdout(sys.stderr) if json_output else contextlib.nullcontext()
    try:
        with quiet:
            result = send()
    except DeliveryError as exc:
        _failed(exc, hidden, json_output)
    _done(visible(result, hidden), json_output)


def saved(audit_id: str, message_id: str, json_output: bool) -> None:
    """``send --draft``: the draft's id, and how to review and send it."""
    if json_output:
        output().json({"ok": True, "id": audit_id, "status": "draft", "message_id": message_id})
        return
    output().fields([("draft", audit_id), ("message-id", message_id)])
    output().print(f"review: fluxmail drafts show {audit_id}")
    output().print(f"send:   fluxmail drafts send {audit_id}")


def _done(data: dict[str, Any], json_output: bool) -> None:
    if json_output:
        output().json({"ok": True, **data})
    else:
        _summary(data)


def _failed(exc: DeliveryError, hidden: set[str], json_output: bool) -> None:
    data = visible(exc.result, hidden) if exc.result is not None else None
    if json_output:
        output().json({"ok": False, "error": error_dict(exc), "result": data})
        raise typer.Exit(exit_code(exc)) from exc
    if data is not None:
        _summary(data)
    raise typer.Exit(report(exc)) from exc


def register(app: typer.Typer) -> None:
    app.command("send", epilog=EPILOG)(send)
