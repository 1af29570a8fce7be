"""Rows and JSON: how both backends turn records into column values and back.

Runs once per message in bulk, so the encoders are made once and flat values are joined
directly; neither ``sqlite3`` nor ``psycopg`` is needed here.
"""

from __future__ import annotations

import json
import json.encoder
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from fluxmail.audit.problems import conflict
from fluxmail.audit.records import (
    ACCEPTED_STATUSES,
    NEVER_HANDED,
    REPLAY_STATUSES,
    AuditRecord,
    Claim,
    OutboundRecord,
)
from fluxmail.audit.result_json import attempts_json, recipients_json, reply_json
from fluxmail.results import RecipientStatus, SendResult

__all__ = [
    "as_datetime",
    "cutoff_epoch",
    "dumps",
    "dumps_plain",
    "dumps_strings",
    "existing_claim",
    "finish_values",
    "list_query",
    "loads",
    "never_sent_recipients",
    "record_from_row",
]

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(value: Any) -> str:
    """Compact JSON for TEXT/jsonb columns (one shared encoder: json.dumps with options
    builds a new one per call, which shows in bulk)."""
    return _encode(value)


def _plain_encoder() -> Any:
    """The C encoder, made once (JSONEncoder.encode builds one per call), or None without it."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython has it
        return None
    # (markers, default, encoder, indent, key sep, item sep, sort_keys, skipkeys, allow_nan)
    default = json.JSONEncoder().default
    return make(None, default, json.encoder.encode_basestring, None, ":", ",", False, False, True)


_plain = _plain_encoder()
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')


def dumps_plain(value: Any) -> str:
    """dumps() for fluxmail's own acyclic values (results, manifests): the same text, without
    the circular-reference bookkeeping and the per-call encoder set-up."""
    if _plain is None:  # pragma: no cover
        return _encode(value)
    return "".join(_plain(value, 0))


def dumps_strings(values: Sequence[str]) -> str:
    """dumps() of a list of addresses: joined directly unless a character needs escaping."""
    if not values:
        return "[]"
    joined = '","'.join(values)
    if _NEEDS_ESCAPE.search(joined) is None:
        return f'["{joined}"]'
    return dumps(list(values))


def loads(value: Any) -> Any:
    """Column value to Python: SQLite gives JSON text, psycopg already-decoded jsonb."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def as_datetime(value: Any) -> datetime | None:
    """Epoch seconds (SQLite) or an aware datetime (PostgreSQL) to an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc)
    return datetime.fromtimestamp(float(value), tz=timezone.utc)


def cutoff_epoch(older_than: timedelta | datetime) -> float:
    """prune()'s argument as epoch seconds: an age, or an absolute moment (naive = UTC)."""
    if isinstance(older_than, timedelta):
        return time.time() - older_than.total_seconds()
    if older_than.tzinfo is None:
        older_than = older_than.replace(tzinfo=timezone.utc)
    return older_than.timestamp()


def finish_values(
    result: SendResult, prior: Sequence[Any], now: float, audit_id: str
) -> tuple[Any, ...]:
    """Parameters of finish()'s UPDATE (status, recipients, attempts, final_reply, duration,
    sent_at, updated_at, transport, provider_message_id, id); attempts extend those of earlier
    claims, renumbered."""
    status = result.status
    return (
        status,
        recipients_json(result.recipients),
        attempts_json(prior, result.attempts),
        reply_json(result.final_reply),
        result.elapsed,
        now if status in ACCEPTED_STATUSES else None,
        now,
        result.transport,
        result.provider_message_id,
        audit_id,
    )


def record_from_row(
    row: Mapping[str, Any], *, include_bcc: bool, folder: Path | None
) -> AuditRecord:
    """Build an AuditRecord from a row keyed by column name (same names in both backends)."""
    to, cc = tuple(loads(row["to_addrs"])), tuple(loads(row["cc_addrs"]))
    bcc = tuple(loads(row["bcc_addrs"]))
    recipients = loads(row["recipients"]) or {}
    if not include_bcc:
        visible = {a.lower() for a in (*to, *cc)}
        hidden = {a.lower() for a in bcc} - visible
        recipients = {a: r for a, r in recipients.items() if a.lower() not in hidden}
    created = as_datetime(row["created_at"])
    updated = as_datetime(row["updated_at"])
    assert created is not None and updated is not None
    return AuditRecord(
        id=row["id"],
        created_at=created,
        updated_at=updated,
        sent_at=as_datetime(row["sent_at"]),
        status=row["status"],
        backend=row["backend"],
        provider=row["provider"],
        host=row["host"],
        sender=row["sender"],
        to=to,
        cc=cc,
        bcc=bcc if include_bcc else None,
        subject=row["subject"],
        message_id=row["message_id"],
        idempotency_key=row["idempotency_key"],
        recipients=recipients,
        attempts=tuple(loads(row["attempts"]) or ()),
        final_reply=loads(row["final_reply"]),
        duration=row["duration"],
        metadata=loads(row["metadata"]) or {},
        folder=folder,
        attachments=tuple(loads(row["attachments"]) or ()),
        transport=row.get("transport"),
        provider_message_id=row.get("provider_message_id"),
        origin=row.get("origin"),
    )


def existing_claim(
    row: Mapping[str, Any], record: OutboundRecord, folder: Path | None
) -> Claim | None:
    """claim() on a key already stored: a replay Claim, a conflict, or None (retry allowed)."""
    assert record.idempotency_key is not None
    if row["content_hash"] != record.content_hash:
        raise conflict(record.idempotency_key)
    if row["status"] in REPLAY_STATUSES:
        found = record_from_row(row, include_bcc=True, folder=folder)
        return Claim(row["id"], replace(found.result(), replayed=True))
    return None  # failed / dry_run / draft: nothing was accepted, a new attempt may go out


def never_sent_recipients(row: Mapping[str, Any]) -> str:
    """A recovered never-sent record's recipients (JSON): each one deferred, as NEVER_HANDED."""
    addresses = (*loads(row["to_addrs"]), *loads(row["cc_addrs"]), *loads(row["bcc_addrs"]))
    return dumps_plain(
        {a: RecipientStatus(a, "deferred", text=NEVER_HANDED).__dict__ for a in addresses}
    )


def list_query(
    select: str,
    status: str | None,
    since: datetime | timedelta | None,
    limit: int,
    *,
    mark: str,
    epoch: str,
) -> tuple[str, tuple[Any, ...]]:
    """``list()``'s SQL for either backend: ``mark`` is the placeholder, ``epoch`` wraps one
    holding seconds since the epoch (a column compare in SQLite, ``to_timestamp`` in PostgreSQL)."""
    where: list[str] = []
    args: list[Any] = []
    if status is not None:
        where.append(f"status={mark}")
        args.append(status)
    if since is not None:
        where.append(f"created_at>={epoch}")
        args.append(cutoff_epoch(since))
    sql = select + (" WHERE " + " AND ".join(where) if where else "")
    sql += f" ORDER BY created_at DESC, id DESC LIMIT {mark}"
    return sql, (*args, max(0, int(limit)))
