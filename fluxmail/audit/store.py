"""The audit store interface: what the mailer hands in, what reading returns, and how to open one.

The mailer calls :meth:`AuditStore.claim` before contacting the server (the record is committed
when it returns) and :meth:`AuditStore.finish` once the outcome is known. Bulk runs claim with
``defer_snapshots=True`` (the snapshot is committed in the database, its folder written later)
and call :meth:`AuditStore.materialize_pending` at the end. Two backends implement
the same protocol: SQLite plus a snapshot folder (one machine) and PostgreSQL (fleets).
Neither ``sqlite3`` nor ``psycopg`` is imported here: ``import fluxmail`` stays light.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

from fluxmail.errors import AuditError, RecordNotFound
from fluxmail.results import RecipientStatus, SendResult

__all__ = [
    "NEVER_HANDED",
    "REPLAY_STATUSES",
    "RETRY_STATUSES",
    "STATUSES",
    "AuditRecord",
    "AuditStore",
    "Claim",
    "OutboundRecord",
    "RunLease",
    "dumps_plain",
    "dumps_strings",
    "existing_claim",
    "finish_values",
    "never_sent_recipients",
    "new_id",
    "open_store",
]

STATUSES = ("draft", "dry_run", "sending", "sent", "partial", "queued", "failed", "unknown")
# Anything may have been accepted: a send with the same key returns the record, never resends.
REPLAY_STATUSES = frozenset({"sent", "partial", "queued", "unknown", "sending"})
# Nothing was accepted: a send with the same key is a new attempt on the same record.
RETRY_STATUSES = frozenset({"failed", "dry_run", "draft"})
# Statuses whose finish() stamps sent_at.
ACCEPTED_STATUSES = frozenset({"sent", "partial", "queued"})
_RESULT_STATUSES = frozenset({"sent", "partial", "queued", "dry_run", "failed", "unknown"})
# What a recovered bulk record that no connection was ever given says (see RunLease).
NEVER_HANDED = "never handed to the server: the sending process stopped first"


@dataclass(frozen=True)
class OutboundRecord:
    """What the mailer hands in before contacting the server (``eml`` carries no Bcc header)."""

    message_id: str
    idempotency_key: str | None
    content_hash: str
    backend: str
    provider: str | None
    host: str | None
    sender: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    subject: str
    metadata: Mapping[str, Any]
    eml: bytes
    text: str | None
    html: str | None
    attachments: tuple[tuple[str, str, bytes], ...]
    status: Literal["sending", "dry_run", "draft"] = "sending"


@dataclass(frozen=True)
class AuditRecord:
    """One stored record, as reading returns it (``bcc`` is None unless asked for)."""

    id: str
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    status: str
    backend: str
    provider: str | None
    host: str | None
    sender: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...] | None
    subject: str
    message_id: str
    idempotency_key: str | None
    recipients: Mapping[str, Any]
    attempts: tuple[Mapping[str, Any], ...]
    final_reply: Mapping[str, Any] | None
    duration: float | None
    metadata: Mapping[str, Any]
    folder: Path | None
    # Manifest of the attachment copies: filename, stored name, mimetype, size, sha256.
    attachments: tuple[Mapping[str, Any], ...] = field(default=())

    def result(self) -> SendResult:
        """The recorded outcome as a SendResult (``sending`` reads as ``unknown``)."""
        status = self.status if self.status in _RESULT_STATUSES else "unknown"
        if self.status == "draft":
            status = "dry_run"
        recipients = dict(self.recipients)
        if not recipients and status == "unknown":
            # Killed or still in flight: every envelope recipient's outcome is unknown.
            for address in (*self.to, *self.cc, *(self.bcc or ())):
                recipients[address] = {"address": address, "status": "unknown"}
        return SendResult.from_dict(
            {
                "status": status,
                "message_id": self.message_id,
                "recipients": recipients,
                "attempts": self.attempts,
                "final_reply": self.final_reply,
                "elapsed": self.duration or 0.0,
                "audit_id": self.id,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (datetimes as ISO 8601, folder as a string)."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "id": self.id,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "sent_at": iso(self.sent_at),
            "status": self.status,
            "backend": self.backend,
            "provider": self.provider,
            "host": self.host,
            "sender": self.sender,
            "to": list(self.to),
            "cc": list(self.cc),
            "bcc": list(self.bcc) if self.bcc is not None else None,
            "subject": self.subject,
            "message_id": self.message_id,
            "idempotency_key": self.idempotency_key,
            "recipients": {k: dict(v) for k, v in self.recipients.items()},
            "attempts": [dict(a) for a in self.attempts],
            "final_reply": dict(self.final_reply) if self.final_reply is not None else None,
            "duration": self.duration,
            "metadata": dict(self.metadata),
            "folder": str(self.folder) if self.folder is not None else None,
            "attachments": [dict(a) for a in self.attachments],
        }


@dataclass(frozen=True)
class Claim:
    """The answer to claim(): ``replay`` not None means "do not contact the server"."""

    audit_id: str
    replay: SendResult | None = None


class RunLease(Protocol):
    """A bulk run's lease on its claims, held until ``close`` or the process's death.

    Claims made with ``run=lease.token`` stay ``sending`` until finished. Once the lease is
    gone without a ``close(resolved=True)`` (the process died), whoever opens the store next
    resolves them: those ``mark``-ed ``unknown`` (they may have reached the server), the
    others ``failed`` with recipients ``deferred`` (nothing went out; the key sends again).
    """

    token: str
    # True when a mark costs a round trip (a database): the engine then gathers the marks of
    # one event-loop turn into one call. False: a mark is cheap and is made at once.
    coalesce: bool

    def mark(self, audit_ids: Sequence[str]) -> frozenset[str]:
        """Durably note these records as handed to the wire, before their bytes go out.
        Returns the ids that must not be sent (already resolved by a recovery)."""
        ...

    def close(self, *, resolved: bool) -> None: ...


class AuditStore(Protocol):
    """What the mailer and the CLI need from an audit backend."""

    location: str

    def claim(self, record: OutboundRecord) -> Claim: ...
    def claim_many(
        self,
        records: Sequence[OutboundRecord],
        *,
        defer_snapshots: bool = False,
        run: str | None = None,
    ) -> list[Claim]: ...
    def begin_run(self) -> RunLease: ...
    def materialize_pending(self) -> int: ...
    def finish(self, audit_id: str, result: SendResult) -> None: ...
    def finish_many(self, items: Sequence[tuple[str, SendResult]]) -> None: ...
    def list(
        self,
        *,
        status: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        include_bcc: bool = False,
    ) -> list[AuditRecord]: ...
    def get(self, audit_id: str, *, include_bcc: bool = False) -> AuditRecord: ...
    def get_eml(self, audit_id: str) -> bytes: ...
    def prune(self, *, older_than: timedelta | datetime) -> int: ...
    def recover_stale(self, *, older_than: float) -> int: ...
    def recover_runs(self) -> int: ...
    def close(self) -> None: ...


def open_store(
    *,
    directory: Path | None = None,
    explicit: bool = False,
    url: str | None = None,
    password: str | None = None,
    stale_after: float = 900.0,
) -> AuditStore:
    """Open the PostgreSQL store when ``url`` is given, else the SQLite store in a folder.

    ``directory=None`` means ``.fluxmail/`` in the working directory, falling back to the temp
    dir (with one warning) when it cannot be written; ``explicit=True`` turns that fallback
    into ``AuditError(code="audit_unwritable")``. Opening resolves the claims of bulk runs whose
    process died (see RunLease) and marks stale ``sending`` records ``unknown`` (SQLite at once;
    PostgreSQL on first use, since it connects lazily).
    """
    if url is not None:
        from fluxmail.audit.postgres import PostgresStore

        return PostgresStore(url, password=password, stale_after=stale_after)
    from fluxmail.audit.snapshots import resolve_directory
    from fluxmail.audit.sqlite import SQLiteStore

    folder = resolve_directory(directory, explicit=explicit)
    return SQLiteStore(folder, stale_after=stale_after)


# --- shared helpers (both backends) -------------------------------------------------------------

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two base32 characters per 10 bits: 13 table lookups encode an id (a per-character loop costs
# several times more, and ids are made once per message in bulk).
_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)
_PAIR_SHIFTS = tuple(range(120, -1, -10))
_RAND_MASK = (1 << 80) - 1
_id_lock = threading.Lock()
_id_last = [0, 0]  # last (milliseconds, randomness) handed out, for monotonic ids


def new_id(now: float | None = None) -> str:
    """A 26-character, time-sortable id (ULID layout: 48-bit ms clock + 80 random bits)."""
    ms = int((time.time() if now is None else now) * 1000)
    with _id_lock:
        if ms <= _id_last[0]:
            # Same millisecond (or clock stepped back): increment so ids stay sortable.
            ms, rand = _id_last[0], _id_last[1] + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _id_last[0], _id_last[1] = ms, rand
    value = (ms << 80) | (rand & _RAND_MASK)
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _PAIR_SHIFTS])


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(value: Any) -> str:
    """Compact JSON for TEXT/jsonb columns (one shared encoder: json.dumps with options
    builds a new one per call, which shows in bulk)."""
    return _encode(value)


def _plain_encoder() -> Any:
    """The C encoder, made once (JSONEncoder.encode builds one per call), or None without it."""
    import json.encoder

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
    result: SendResult, prior: list[Any], now: float, audit_id: str
) -> tuple[Any, ...]:
    """Parameters of finish()'s UPDATE (status, recipients, attempts, final_reply, duration,
    sent_at, updated_at, id); attempts extend those of earlier claims, renumbered."""
    # The result dataclasses are flat, so their __dict__ encodes as asdict() would, without
    # asdict's recursive deep copies (this runs once per message in bulk).
    attempts = list(prior)
    number = len(prior)
    for attempt in result.attempts:
        number += 1
        fields = attempt.__dict__.copy()
        fields["number"] = number
        attempts.append(fields)
    reply = result.final_reply
    return (
        result.status,
        dumps_plain({a: r.__dict__ for a, r in result.recipients.items()}),
        dumps_plain(attempts),
        dumps_plain(reply.__dict__) if reply is not None else None,
        result.elapsed,
        now if result.status in ACCEPTED_STATUSES else None,
        now,
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


def conflict(key: str) -> AuditError:
    """Same key, different content: names the key, never the content."""
    return AuditError(
        f"idempotency key {key!r} was already used for a different message; "
        "use a new key for a new message",
        code="idempotency_conflict",
    )


def not_found(audit_id: str) -> RecordNotFound:
    return RecordNotFound(f"no audit record with id {audit_id!r}")


def redact_url(url: str) -> str:
    """A database URL with any password removed (for ``location``, reprs and errors)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid database URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}" if user else hostport
    query = "&".join(
        p for p in parts.query.split("&") if p and not p.lower().startswith("password=")
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


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


def newer_schema(location: str, found: int, latest: int) -> AuditError:
    """A store written by a newer fluxmail: refuse it rather than guess at its schema."""
    where = f" {location}" if location else ""
    return AuditError(
        f"the audit database{where} has schema version {found}, newer than this fluxmail "
        f"understands ({latest}); upgrade fluxmail",
        code="audit_incompatible",
    )
