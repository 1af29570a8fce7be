"""Leases on PostgreSQL outbox rows: claiming, expiry and settling, as functions of a cursor.

Every comparison uses the database's clock (``now()``), never the worker's: a fleet's clocks
differ, and a lease that one host thinks expired another may still be using.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fluxmail.audit.outbox import Delivery, Settlement
from fluxmail.audit.postgres_schema import ATTACHMENTS_TABLE, MESSAGES_TABLE
from fluxmail.audit.rows import dumps_plain, finish_values, loads
from fluxmail.results import RecipientStatus

__all__ = ["MARK", "claim", "expire", "mark_settling", "settle", "settles_in_one"]

_T, _A = MESSAGES_TABLE, ATTACHMENTS_TABLE
DEFAULT_DEADLINE = 86400.0  # seconds after creation, for a row written without one
LOST_LEASE = "the worker's lease ran out while it was sending: the outcome is unknown"

_CLAIM = (
    "WITH due AS (SELECT id FROM {t} WHERE status='pending' AND due_at <= now(){only} "
    "ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED) "
    "UPDATE {t} AS m SET status='sending', lease_owner=%s, "
    "lease_until=now() + make_interval(secs => %s), tries=m.tries+1, on_wire_at=NULL, "
    "updated_at=now() FROM due WHERE m.id = due.id RETURNING m.id, m.spec, m.eml, "
    "m.retry_recipients, m.tries - 1, extract(epoch from m.created_at)::float8, "
    "extract(epoch from m.deadline_at)::float8, m.recipients, m.attempts, m.due_at"
)
_FILES = f"SELECT audit_id, content FROM {_A} WHERE audit_id = ANY(%s) ORDER BY audit_id, position"
_EXPIRED = "status='sending' AND lease_owner IS NOT NULL AND lease_until < now()"
# Nothing of it went out: due again as it was; this try did not count.
_EXPIRE_UNMARKED = (
    f"UPDATE {_T} SET status='pending', lease_owner=NULL, lease_until=NULL, "
    f"tries=GREATEST(tries-1, 0), updated_at=now() WHERE {_EXPIRED} AND on_wire_at IS NULL"
)
_EXPIRED_MARKED = (
    f"SELECT id, to_addrs, cc_addrs, bcc_addrs, recipients, retry_recipients FROM {_T} "
    f"WHERE {_EXPIRED} AND on_wire_at IS NOT NULL FOR UPDATE SKIP LOCKED"
)
# lease_owner stays: that worker's late settle may still record what really happened.
_EXPIRE_MARKED = (
    f"UPDATE {_T} SET status='unknown', recipients=%s::jsonb, final_reply=NULL, sent_at=NULL, "
    "lease_until=NULL, updated_at=now() WHERE id=%s AND status='sending'"
)
_HELD = "id=%s AND lease_owner=%s AND status IN ('sending', 'unknown')"
_RESCHEDULE = (
    f"UPDATE {_T} SET status='pending', recipients=%s::jsonb, attempts=%s::jsonb, "
    "final_reply=%s::jsonb, duration=%s, due_at=to_timestamp(%s), retry_recipients=%s::jsonb, "
    "lease_owner=NULL, lease_until=NULL, on_wire_at=NULL, sent_at=NULL, updated_at=now() "
    f"WHERE {_HELD}"
)
MARK = (
    f"UPDATE {_T} SET on_wire_at=now() WHERE id = ANY(%s) AND lease_owner=%s "
    "AND status='sending' RETURNING id"
)
# Every final outcome of a settlement in one statement (one round trip, whatever the count).
_FINAL_MANY = (
    f"UPDATE {_T} AS m SET status=v.status, recipients=v.recipients::jsonb, "
    "attempts=v.attempts::jsonb, final_reply=v.reply::jsonb, duration=v.duration, "
    "sent_at=to_timestamp(v.sent_at), updated_at=now(), transport=v.transport, "
    "provider_message_id=v.pmid, lease_owner=NULL, lease_until=NULL, retry_recipients=NULL "
    "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::float8[], "
    "%s::float8[], %s::text[], %s::text[], %s::text[]) "
    "AS v(status, recipients, attempts, reply, duration, sent_at, transport, pmid, id) "
    "WHERE m.id = v.id AND m.lease_owner = %s AND m.status IN ('sending', 'unknown')"
)


def claim(
    cursor: Any, owner: str, limit: int, lease: float, ids: Sequence[str] | None
) -> list[Delivery]:
    """One UPDATE takes the rows (tuple rows), one SELECT reads their attachments."""
    only = " AND id = ANY(%s)" if ids is not None else ""
    args: list[Any] = [list(ids)] if ids is not None else []
    cursor.execute(_CLAIM.format(t=_T, only=only), (*args, max(0, limit), owner, lease))
    rows = sorted(cursor.fetchall(), key=lambda r: (r[9], r[0]))
    if not rows:
        return []
    files: dict[str, list[bytes]] = {}
    cursor.execute(_FILES, ([r[0] for r in rows],))
    for audit_id, content in cursor.fetchall():
        files.setdefault(audit_id, []).append(bytes(content))
    return [_delivery(r, files.get(r[0], [])) for r in rows]


def _delivery(row: Any, files: list[bytes]) -> Delivery:
    audit_id, spec, eml, retry, tries, created, deadline, recipients, attempts, _ = row
    return Delivery(
        audit_id=audit_id,
        spec=loads(spec),
        eml=bytes(eml),
        attachments=tuple(files),
        recipients=tuple(loads(retry)) if retry is not None else None,
        tries=int(tries),
        created_at=float(created),
        deadline_at=float(deadline) if deadline is not None else created + DEFAULT_DEADLINE,
        prior_recipients=loads(recipients) or {},
        prior_attempts=tuple(loads(attempts) or ()),
    )


def expire(cursor: Any) -> int:
    """Resolve rows whose lease ran out; how many."""
    cursor.execute(_EXPIRE_UNMARKED)
    count = int(cursor.rowcount)
    cursor.execute(_EXPIRED_MARKED)
    marked = [(_unknown_recipients(r), r[0]) for r in cursor.fetchall()]
    if marked:
        cursor.executemany(_EXPIRE_MARKED, marked)
    return count + len(marked)


def _unknown_recipients(row: Any) -> str:
    """What earlier tries settled stays; each address this try was for is unknown."""
    _, to, cc, bcc, recipients, retry = row
    known = dict(loads(recipients) or {})
    addresses = loads(retry) if retry is not None else (*loads(to), *loads(cc), *loads(bcc))
    for address in addresses:
        known[address] = RecipientStatus(address, "unknown", text=LOST_LEASE).__dict__
    return dumps_plain(known)


def settle(cursor: Any, owner: str, items: Sequence[Settlement]) -> None:
    """Reschedules and final outcomes, each only on a row ``owner`` still holds."""
    later: list[tuple[Any, ...]] = []
    final: list[tuple[Any, ...]] = []
    now = time.time()
    for item in sorted(items, key=lambda s: s.audit_id):  # one lock order for every worker
        values = finish_values(item.result, [], now, item.audit_id)
        status, recipients, attempts, reply, duration, sent_at, _, transport, pmid, _ = values
        if item.retry_at is not None:
            retry = item.retry_recipients
            later.append(
                (
                    recipients, attempts, reply, duration, item.retry_at,
                    dumps_plain(list(retry)) if retry is not None else None,
                    item.audit_id, owner,
                )
            )  # fmt: skip
        else:
            final.append(
                (
                    status, recipients, attempts, reply, duration, sent_at, transport, pmid,
                    item.audit_id, owner,
                )
            )  # fmt: skip
    if later:
        cursor.executemany(_RESCHEDULE, later)
    if final:
        cursor.execute(_FINAL_MANY, (*_columns(final), owner))


def _columns(final: list[tuple[Any, ...]]) -> list[list[Any]]:
    """The rows of final outcomes as the nine arrays _FINAL_MANY unnests."""
    return [list(column) for column in zip(*(row[:9] for row in final), strict=True)]


def mark_settling(
    cursor: Any, owner: str, audit_ids: Sequence[str], finals: Sequence[Settlement]
) -> set[str]:
    """Final outcomes and marks in one statement (a data-modifying WITH): one round trip
    for what a worker does before each message goes out. The ids marked."""
    if not finals:
        cursor.execute(MARK, (list(audit_ids), owner))
        return {row[0] for row in cursor.fetchall()}
    now = time.time()
    final = []
    for item in sorted(finals, key=lambda s: s.audit_id):
        status, recipients, attempts, reply, duration, sent_at, _, transport, pmid, _ = (
            finish_values(item.result, [], now, item.audit_id)
        )
        final.append(
            (status, recipients, attempts, reply, duration, sent_at, transport, pmid,
             item.audit_id)
        )  # fmt: skip
    cursor.execute(_MARK_SETTLING, (*_columns(final), owner, list(audit_ids), owner))
    return {row[0] for row in cursor.fetchall()}


# The settlements waiting, then the marks: the CTE runs whether or not it is read.
_MARK_SETTLING = f"WITH settled AS ({_FINAL_MANY} RETURNING m.id) {MARK}"


def settles_in_one(items: Sequence[Settlement]) -> bool:
    """Only final outcomes: ``settle`` runs one statement (it needs no transaction block)."""
    return all(item.retry_at is None for item in items)
