"""``fluxmail drafts list`` / ``show ID`` / ``send ID`` / ``discard ID``: review, then send.

Drafts are audit records with status ``draft`` (``fluxmail send --draft``, ``save_draft()``);
``send`` delivers exactly the stored message once (docs/audit.md, "Drafts").
"""

from __future__ import annotations

from typing import Annotated

import typer

from fluxmail.audit.records import AuditRecord
from fluxmail.cli._common import (
    JsonFlag,
    PasswordStdin,
    ProviderOption,
    build_mailer,
    json_errors,
    output,
    overrides,
)
from fluxmail.cli.audit import AuditDir, open_audit, record_table, show_record
from fluxmail.cli.send import print_outcome

app = typer.Typer(
    help="Drafts: messages stored for review; list, show, send once, or discard them.",
    epilog="Examples:  fluxmail drafts list  |  fluxmail drafts show ID  |  "
    "fluxmail drafts send ID  |  fluxmail drafts discard ID",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

LIST_EPILOG = """Examples:

  fluxmail drafts list

  fluxmail drafts list --limit 100 --json
"""

SHOW_EPILOG = """Examples:

  fluxmail drafts show 01JD3Y8K2Q4W7R9T1V5X6Z8B0C

  fluxmail drafts show 01JD3Y8K2Q4W7R9T1V5X6Z8B0C --show-bcc --json

  fluxmail drafts show 01JD3Y8K2Q4W7R9T1V5X6Z8B0C --eml > draft.eml
"""

SEND_EPILOG = """Examples:

  fluxmail drafts send 01JD3Y8K2Q4W7R9T1V5X6Z8B0C

  fluxmail drafts send 01JD3Y8K2Q4W7R9T1V5X6Z8B0C --json
"""

DISCARD_EPILOG = """Examples:

  fluxmail drafts discard 01JD3Y8K2Q4W7R9T1V5X6Z8B0C
"""

AuditId = Annotated[str, typer.Argument(metavar="ID", help="The draft's audit id.")]
ShowBcc = Annotated[bool, typer.Option("--show-bcc", help="Include the Bcc recipients.")]


@app.command("list", epilog=LIST_EPILOG)
def list_drafts(
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 20,
    audit_dir: AuditDir = None,
    json_output: JsonFlag = False,
) -> None:
    """List the drafts waiting for review, newest first (Bcc recipients are not shown)."""
    with json_errors(json_output), open_audit(audit_dir) as store:
        records = store.list(status="draft", limit=limit, include_bcc=False)
    if json_output:
        output().json({"ok": True, "records": [r.to_dict() for r in records]})
    else:
        record_table(records)


def _body(eml: bytes) -> tuple[str | None, str | None]:
    """The text and HTML bodies as the recipient's mail program decodes them."""
    from email import message_from_bytes, policy
    from email.message import EmailMessage

    parsed = message_from_bytes(eml, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    found = []
    for kind in ("plain", "html"):
        part = parsed.get_body(preferencelist=(kind,))
        is_kind = part is not None and part.get_content_subtype() == kind
        found.append(str(part.get_content()) if is_kind and part is not None else None)
    return found[0], found[1]


@app.command("show", epilog=SHOW_EPILOG)
def show(
    audit_id: AuditId,
    show_bcc: ShowBcc = False,
    eml: Annotated[bool, typer.Option("--eml", help="Print the exact bytes it will send.")] = False,
    audit_dir: AuditDir = None,
    json_output: JsonFlag = False,
) -> None:
    """Show a draft for review: its record and the text and HTML bodies it will send."""
    with json_errors(json_output), open_audit(audit_dir) as store:
        data = store.get_eml(audit_id)
        if eml:
            output().raw(data)
            return
        record = store.get(audit_id, include_bcc=show_bcc)
    text, html = _body(data)
    if json_output:
        output().json({"ok": True, "record": record.to_dict(), "text": text, "html": html})
        return
    show_record(record)
    for label, value in (("text", text), ("html", html)):
        if value is not None:
            output().print(f"--- {label} ---")
            output().print(value.rstrip("\n"))


def _hidden(record: AuditRecord) -> set[str]:
    shown = {a.lower() for a in (*record.to, *record.cc)}
    return {a.lower() for a in record.bcc or ()} - shown


@app.command("send", epilog=SEND_EPILOG)
def send(
    audit_id: AuditId,
    provider: ProviderOption = None,
    password_stdin: PasswordStdin = False,
    show_bcc: ShowBcc = False,
    audit_dir: AuditDir = None,
    json_output: JsonFlag = False,
) -> None:
    """Send a draft: exactly the stored message, once (sending it again replays the result)."""
    with json_errors(json_output):
        extra = {"audit_dir": audit_dir} if audit_dir is not None else {}
        mailer = build_mailer(**overrides(provider, password_stdin, **extra))
        try:
            record = mailer.audit.get(audit_id, include_bcc=True)
            hidden = set() if show_bcc else _hidden(record)
            print_outcome(lambda: mailer.send_draft(audit_id), hidden, json_output)
        finally:
            mailer.close()


@app.command("discard", epilog=DISCARD_EPILOG)
def discard(audit_id: AuditId, audit_dir: AuditDir = None, json_output: JsonFlag = False) -> None:
    """Delete a draft that was not sent."""
    with json_errors(json_output), open_audit(audit_dir) as store:
        store.discard_draft(audit_id)
    if json_output:
        output().json({"ok": True, "id": audit_id, "status": "discarded"})
    else:
        output().print(f"{audit_id}: discarded")
