"""``fluxmail audit list`` and ``fluxmail audit show ID``: read the local audit trail."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

from fluxmail.audit.contract import AuditStore
from fluxmail.audit.open import open_store
from fluxmail.audit.records import STATUSES, AuditRecord
from fluxmail.cli._common import JsonFlag, json_errors, output, usage_error
from fluxmail.cli.send import reply_text
from fluxmail.config.settings import FluxMailSettings

app = typer.Typer(
    help="Read the audit trail: what was sent, to whom, and what the server said.",
    epilog="Examples:  fluxmail audit list --since 2h  |  fluxmail audit show ID --eml",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

LIST_EPILOG = """Examples:

  fluxmail audit list

  fluxmail audit list --status failed --since 2h

  fluxmail audit list --since 2025-01-31 --limit 500 --json
"""

SHOW_EPILOG = """Examples:

  fluxmail audit show 01JD3Y8K2Q4W7R9T1V5X6Z8B0C

  fluxmail audit show 01JD3Y8K2Q4W7R9T1V5X6Z8B0C --show-bcc --json

  fluxmail audit show 01JD3Y8K2Q4W7R9T1V5X6Z8B0C --eml > message.eml
"""

AuditDir = Annotated[Path | None, typer.Option(help="Audit folder (overrides FLUXMAIL_AUDIT_DIR).")]
_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str) -> datetime:
    """``30m``, ``2h``, ``7d``, ``1w`` ago, or an ISO 8601 date/time (naive means UTC)."""
    match = _AGE.match(value.strip().lower())
    if match is not None:
        age = timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
        return datetime.now(timezone.utc) - age
    try:
        text = value.strip()
        # Python 3.10's fromisoformat does not read a trailing "Z".
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise usage_error(
            f"--since {value!r}: use an age such as 30m, 2h, 7d or a date such as 2025-01-31"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@contextmanager
def open_audit(audit_dir: Path | None) -> Iterator[AuditStore]:
    """The store the mailer writes to, from the same settings (the SMTP ones are not needed),
    closed when the block ends."""
    settings = FluxMailSettings()
    url, password = settings.audit_url, settings.audit_password
    output().secrets.add(
        url.get_secret_value() if url else None, password.get_secret_value() if password else None
    )
    directory = audit_dir or settings.audit_dir
    store = open_store(
        directory=directory,
        explicit=directory is not None,
        url=url.get_secret_value() if url is not None and audit_dir is None else None,
        password=password.get_secret_value() if password is not None else None,
    )
    try:
        yield store
    finally:
        store.close()


def _when(moment: datetime | None) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"


def record_table(records: list[AuditRecord]) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in ("id", "created", "status", "to", "subject"):
        table.add_column(column)
    for r in records:
        to = ", ".join((*r.to, *r.cc))
        cells = (r.id, _when(r.created_at), r.status, to, r.subject)
        table.add_row(*(Text(c) for c in cells))
    output().out.print(table)
    output().print(f"{len(records)} record(s)")


@app.command("list", epilog=LIST_EPILOG)
def list_records(
    status: Annotated[str | None, typer.Option(help="Only this status (sent, failed...).")] = None,
    since: Annotated[
        str | None, typer.Option(help="Newer than an age (2h, 7d) or a date (2025-01-31).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 20,
    audit_dir: AuditDir = None,
    json_output: JsonFlag = False,
) -> None:
    """List recent audit records, newest first (Bcc recipients are never shown here)."""
    if status is not None and status not in STATUSES:
        raise usage_error(f"--status {status!r}: use one of {', '.join(STATUSES)}")
    moment = parse_since(since) if since is not None else None
    with json_errors(json_output), open_audit(audit_dir) as store:
        records = store.list(status=status, since=moment, limit=limit, include_bcc=False)
    if json_output:
        output().json({"ok": True, "records": [r.to_dict() for r in records]})
    else:
        record_table(records)


def show_record(r: AuditRecord) -> None:
    out = output()
    out.fields(
        [
            ("id", r.id),
            ("status", r.status),
            ("created", _when(r.created_at)),
            ("sent", _when(r.sent_at)),
            ("backend", f"{r.backend} {r.host or ''}".strip()),
            ("provider", r.provider),
            ("delivered by", r.transport),  # the failover member that took it
            ("origin", r.origin),  # who wrote it: FluxMail(origin="mcp")
            ("from", r.sender),
            ("to", ", ".join(r.to)),
            ("cc", ", ".join(r.cc)),
            *([("bcc", ", ".join(r.bcc))] if r.bcc is not None else []),
            ("subject", r.subject),
            ("message-id", r.message_id),
            ("idempotency key", r.idempotency_key),
            ("server", _reply(r.final_reply)),
            ("duration", f"{r.duration:.3f} s" if r.duration is not None else None),
            ("attempts", len(r.attempts) or None),
            ("attachments", ", ".join(str(a.get("filename")) for a in r.attachments)),
            ("folder", r.folder),
        ]
    )
    for address, item in r.recipients.items():
        detail = reply_text(item.get("code"), item.get("enhanced_status"), item.get("text"))
        out.print(f"  {item.get('status', '?'):<9} {address}  {detail}".rstrip())


def _reply(reply: Any) -> str | None:
    return f"{reply.get('code')} {reply.get('text')}" if reply else None


@app.command("show", epilog=SHOW_EPILOG)
def show(
    audit_id: Annotated[str, typer.Argument(metavar="ID", help="The audit id (from list).")],
    show_bcc: Annotated[
        bool, typer.Option("--show-bcc", help="Include the Bcc recipients.")
    ] = False,
    eml: Annotated[bool, typer.Option("--eml", help="Print the exact message bytes sent.")] = False,
    audit_dir: AuditDir = None,
    json_output: JsonFlag = False,
) -> None:
    """Show one audit record: recipients' outcomes, attempts, the server's reply."""
    with json_errors(json_output), open_audit(audit_dir) as store:
        if eml:
            output().raw(store.get_eml(audit_id))
            return
        record = store.get(audit_id, include_bcc=show_bcc)
    if json_output:
        output().json({"ok": True, "record": record.to_dict()})
    else:
        show_record(record)
