"""``fluxmail outbox stats`` / ``retry ID`` / ``cancel ID``: the queue workers deliver from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fluxmail.audit.contract import AuditStore
from fluxmail.cli._common import JsonFlag, json_errors, output
from fluxmail.cli.audit import AuditDir, open_audit
from fluxmail.config.settings import FluxMailSettings
from fluxmail.outbox import OutboxAdmin, OutboxStats

app = typer.Typer(
    help="The outbox: what workers will deliver; counts, retry, cancel (docs/outbox.md).",
    epilog="Examples:  fluxmail outbox stats  |  fluxmail outbox retry ID  |  "
    "fluxmail outbox cancel ID",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

STATS_EPILOG = """Examples:

  fluxmail outbox stats

  fluxmail outbox stats --json
"""

RETRY_EPILOG = """Examples:

  fluxmail outbox retry 01JD3Y8K2Q4W7R9T1V5X6Z8B0C

  fluxmail outbox retry 01JD3Y8K2Q4W7R9T1V5X6Z8B0C --force   (an unknown one)
"""

CANCEL_EPILOG = """Examples:

  fluxmail outbox cancel 01JD3Y8K2Q4W7R9T1V5X6Z8B0C
"""

AuditId = Annotated[str, typer.Argument(metavar="ID", help="The audit id (from audit list).")]


def _admin(store: AuditStore) -> OutboxAdmin:
    # The retry deadline is the only mailer setting these commands need.
    return OutboxAdmin(lambda: store, FluxMailSettings().retry_deadline)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _show(stats: OutboxStats) -> None:
    output().fields(
        [
            ("pending", stats.pending),
            ("  due now", stats.due),
            ("  scheduled", stats.scheduled),
            ("  retrying", stats.retrying),
            ("sending", stats.sending),
            ("failed", stats.failed),
            ("unknown", stats.unknown),
            ("cancelled", stats.cancelled),
            ("oldest due", _age(stats.oldest_due_age)),
        ]
    )


@app.command("stats", epilog=STATS_EPILOG)
def stats(audit_dir: AuditDir = None, json_output: JsonFlag = False) -> None:
    """Counts by state and how long the oldest due message has waited."""
    with json_errors(json_output), open_audit(audit_dir) as store:
        found = _admin(store).stats()
    if json_output:
        output().json({"ok": True, "stats": found.to_dict()})
    else:
        _show(found)


def _act(audit_id: str, audit_dir: Path | None, json_output: bool, *, force: bool | None) -> str:
    """Retry (``force`` not None) or cancel one row; its status afterwards."""
    with json_errors(json_output), open_audit(audit_dir) as store:
        admin = _admin(store)
        if force is None:
            admin.cancel(audit_id)
        else:
            admin.retry(audit_id, force=force)
        status = store.get(audit_id).status
    if json_output:
        output().json({"ok": True, "id": audit_id, "status": status})
    return status


@app.command("retry", epilog=RETRY_EPILOG)
def retry(
    audit_id: AuditId,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Also an unknown message (it may have been delivered already)."
        ),
    ] = False,
    audit_dir: AuditDir = None,
    json_output: JsonFlag = False,
) -> None:
    """Queue a failed or cancelled message again, due now."""
    status = _act(audit_id, audit_dir, json_output, force=force)
    if not json_output:
        output().print(f"{audit_id}: {status}, due now")


@app.command("cancel", epilog=CANCEL_EPILOG)
def cancel(audit_id: AuditId, audit_dir: AuditDir = None, json_output: JsonFlag = False) -> None:
    """Withdraw a pending message: no worker will send it."""
    status = _act(audit_id, audit_dir, json_output, force=None)
    if not json_output:
        output().print(f"{audit_id}: {status}")
