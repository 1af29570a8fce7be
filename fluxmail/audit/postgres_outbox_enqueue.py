"""Enqueueing outbox rows in PostgreSQL: multi-row ``INSERT ... ON CONFLICT DO NOTHING``.

The statements are planned once (a generator that yields each step and receives its rows) and
run by a sync or an async driver, so the caller's ``psycopg.Connection`` and
``psycopg.AsyncConnection`` take exactly the same path. A key already stored is read
``FOR UPDATE``: replayed (its id), refused as a conflict, or queued again when nothing of it
was accepted. ``pg_notify`` in the same transaction wakes the workers when it commits.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from fluxmail.audit.ids import new_ids
from fluxmail.audit.outbox import Queued
from fluxmail.audit.postgres_schema import ATTACHMENTS_TABLE, MESSAGES_TABLE
from fluxmail.audit.problems import conflict
from fluxmail.audit.records import REPLAY_STATUSES
from fluxmail.audit.rows import dumps, dumps_strings
from fluxmail.audit.snapshots import write_attachments

__all__ = ["CHANNEL", "Step", "plan_enqueue", "run_async", "run_sync"]

CHANNEL = "fluxmail_outbox"
BATCH = 500  # rows per INSERT: 500 x 25 parameters, well under the protocol's 65535
_T, _A = MESSAGES_TABLE, ATTACHMENTS_TABLE
_ROW = (
    "(%s, to_timestamp(%s), to_timestamp(%s), 'pending', %s, %s, %s, %s, %s::jsonb, %s::jsonb, "
    "%s::jsonb, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, to_timestamp(%s), "
    "to_timestamp(%s), %s::jsonb, 0, %s)"
)
_INSERT = (
    f"INSERT INTO {_T} (id, created_at, updated_at, status, backend, provider, host, sender, "
    "to_addrs, cc_addrs, bcc_addrs, subject, message_id, idempotency_key, content_hash, "
    "metadata, attachments, eml, body_text, body_html, due_at, deadline_at, spec, tries, "
    "origin) VALUES "
)
_CONFLICT = " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
_EXISTING = (
    f"SELECT idempotency_key, id, content_hash, status FROM {_T} "
    "WHERE idempotency_key = ANY(%s) ORDER BY idempotency_key FOR UPDATE"
)
# Nothing of it was accepted (failed, a dry run, a draft, cancelled): the same record again.
_REQUEUE = (
    f"UPDATE {_T} SET status='pending', updated_at=now(), sent_at=NULL, message_id=%s, "
    "attachments=%s::jsonb, eml=%s, body_text=%s, body_html=%s, run_id=NULL, on_wire_at=NULL, "
    "due_at=to_timestamp(%s), deadline_at=to_timestamp(%s), spec=%s::jsonb, tries=0, "
    "lease_owner=NULL, lease_until=NULL, retry_recipients=NULL WHERE id=%s"
)
_ADD_FILE = f"INSERT INTO {_A} (audit_id, position, content) VALUES (%s, %s, %s)"
_NOTIFY = f"SELECT pg_notify('{CHANNEL}', '')"


@dataclass(frozen=True)
class Step:
    """One statement: ``many`` runs it once per parameter tuple (no rows come back)."""

    sql: str
    params: Any
    many: bool = False


def plan_enqueue(items: Sequence[Queued]) -> Generator[Step, Any, list[str]]:
    """The statements of one enqueue; each ``yield`` receives the rows of its step."""
    ids: list[str] = []
    for start in range(0, len(items), BATCH):
        ids += yield from _batch(items[start : start + BATCH])
    if items:
        yield Step(_NOTIFY, ())
    return ids


def _batch(items: Sequence[Queued]) -> Generator[Step, Any, list[str]]:
    # Keys in sorted order, so two batches sharing keys wait for each other, never deadlock.
    order = sorted(range(len(items)), key=lambda i: items[i].record.idempotency_key or "")
    now = time.time()
    fresh = dict(zip(order, new_ids(len(order), now), strict=True))
    params: list[Any] = []
    for i in order:
        params += _values(fresh[i], now, items[i])
    rows = yield Step(_INSERT + ",".join([_ROW] * len(order)) + _CONFLICT, params)
    inserted = {r[0] for r in rows}
    ids = [fresh[i] if fresh[i] in inserted else "" for i in range(len(items))]
    files = [i for i in order if ids[i]]
    taken = [i for i in order if not ids[i]]
    if taken:
        keys = sorted({items[i].record.idempotency_key or "" for i in taken})
        found = {r[0]: r[1:] for r in (yield Step(_EXISTING, (keys,)))}
        again = yield from _existing(items, taken, found, ids)
        files += again
    attached = [
        (ids[i], n, content)
        for i in files
        for n, (_, _, content) in enumerate(items[i].record.attachments)
    ]
    if attached:
        yield Step(_ADD_FILE, attached, many=True)
    return ids


def _existing(
    items: Sequence[Queued], taken: list[int], found: dict[str, Any], ids: list[str]
) -> Generator[Step, Any, list[int]]:
    """Keys already stored: their ids, a conflict, or the record queued again; the items
    whose attachments must be written anew."""
    again: list[int] = []
    for i in taken:
        record = items[i].record
        key = record.idempotency_key or ""
        audit_id, content_hash, status = found[key]
        if content_hash != record.content_hash:
            raise conflict(key)
        ids[i] = audit_id
        if status in REPLAY_STATUSES:
            continue
        item = items[i]
        yield Step(
            _REQUEUE,
            (
                record.message_id, dumps(_manifest(item)), record.eml, record.text, record.html,
                item.due_at, item.deadline_at, dumps(dict(item.spec)), audit_id,
            ),
        )  # fmt: skip
        yield Step(f"DELETE FROM {_A} WHERE audit_id=%s", (audit_id,))
        found[key] = (audit_id, content_hash, "pending")  # the same key later in the batch
        again.append(i)
    return again


def _manifest(item: Queued) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in entry.items() if k != "stored_as"}
        for entry in write_attachments(None, item.record.attachments)
    ]


def _values(audit_id: str, now: float, item: Queued) -> tuple[Any, ...]:
    r = item.record
    return (
        audit_id, now, now, r.backend, r.provider, r.host, r.sender, dumps_strings(r.to),
        dumps_strings(r.cc), dumps_strings(r.bcc), r.subject, r.message_id, r.idempotency_key,
        r.content_hash, dumps(dict(r.metadata)), dumps(_manifest(item)), r.eml, r.text, r.html,
        item.due_at, item.deadline_at, dumps(dict(item.spec)), r.origin,
    )  # fmt: skip


def run_sync(cursor: Any, plan: Generator[Step, Any, list[str]]) -> list[str]:
    """Run a plan on a psycopg cursor (tuple rows), in the caller's transaction."""
    try:
        step = next(plan)
        while True:
            if step.many:
                cursor.executemany(step.sql, step.params)
                rows: list[Any] = []
            else:
                cursor.execute(step.sql, step.params)
                rows = cursor.fetchall() if cursor.description is not None else []
            step = plan.send(rows)
    except StopIteration as done:
        result: list[str] = done.value
        return result


async def run_async(cursor: Any, plan: Generator[Step, Any, list[str]]) -> list[str]:
    """run_sync() on a psycopg AsyncCursor."""
    try:
        step = next(plan)
        while True:
            if step.many:
                await cursor.executemany(step.sql, step.params)
                rows: list[Any] = []
            else:
                await cursor.execute(step.sql, step.params)
                rows = await cursor.fetchall() if cursor.description is not None else []
            step = plan.send(rows)
    except StopIteration as done:
        result: list[str] = done.value
        return result
