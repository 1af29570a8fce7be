"""Enqueueing: built messages become outbox rows (fluxmail.audit.outbox); no server is contacted.

The record written before a send is the outbox row: ``pending`` with the model as JSON, due at
``send_at``, and written in the caller's own transaction when given its ``connection``. A dry
run (``FLUXMAIL_DRY_RUN``) writes ``dry_run`` records instead, which no worker ever delivers.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from fluxmail.audit.contract import AuditStore
from fluxmail.audit.log import AuditLog, outbound_record
from fluxmail.audit.outbox import Outbox, Queued
from fluxmail.audit.records import Claim
from fluxmail.config.resolve import Config, audit_off_reason
from fluxmail.errors import ConfigurationError, shown
from fluxmail.message.model import Message
from fluxmail.message.stored import message_to_spec

__all__ = ["DEFAULT_DEADLINE", "due_at", "enqueue", "enqueue_async", "outbox_store"]

Built = tuple[Message, bytes]  # a message and its exact bytes (what send() would write)

# Seconds a queued message may keep being retried when FLUXMAIL_RETRY_DEADLINE is unset.
DEFAULT_DEADLINE = 86400.0
# Epoch seconds before 2001-09-09: surely a delay meant as a timedelta (send_at=60).
_EPOCH_FLOOR = 1_000_000_000


def outbox_store(audit: AuditLog, config: Config) -> AuditStore:
    """The store whose rows the workers deliver; refused when the audit is off (no row)."""
    if not audit.enabled:
        why = audit_off_reason(config)
        raise ConfigurationError(
            f"enqueue() writes the message to the audit store, where workers find it, and "
            f"{why}. Turn the audit on (FLUXMAIL_AUDIT=true; FLUXMAIL_AUDIT_URL=postgresql://..."
            " for a fleet of workers), or send() inline",
            code="outbox_needs_audit",
        )
    return audit.store()


def due_at(send_at: object, now: float) -> float:
    """When a message is due (epoch seconds): now, an aware datetime, a timedelta from now,
    or epoch seconds. Anything else (a naive datetime, a bool, NaN...) is refused."""
    if send_at is None:
        return now
    if isinstance(send_at, datetime):
        if send_at.tzinfo is None or send_at.utcoffset() is None:
            raise _bad_send_at(send_at, "a naive datetime has no time zone; use an aware one")
        return send_at.timestamp()
    if isinstance(send_at, timedelta):
        return now + send_at.total_seconds()
    if isinstance(send_at, (int, float)) and not isinstance(send_at, bool):
        if not math.isfinite(send_at):
            raise _bad_send_at(send_at, "not a finite number")
        if send_at < _EPOCH_FLOOR:
            raise _bad_send_at(
                send_at, "epoch seconds that far back look like a delay: use timedelta"
            )
        return float(send_at)
    raise _bad_send_at(send_at, "use an aware datetime, a timedelta or epoch seconds")


def _bad_send_at(value: object, why: str) -> ConfigurationError:
    return ConfigurationError(f"send_at={shown(value)}: {why}", code="invalid_send_at")


def queued(config: Config, built: Built, due: float, now: float) -> Queued:
    """One outbox row; retrying stops ``FLUXMAIL_RETRY_DEADLINE`` after it falls due."""
    message, data = built
    deadline = config.retry_deadline or DEFAULT_DEADLINE
    return Queued(
        record=outbound_record(config, message, data, "pending"),
        spec=message_to_spec(message),
        due_at=due,
        deadline_at=max(due, now) + deadline,
    )


def _dry_ids(store: AuditStore, config: Config, built: Sequence[Built]) -> list[str]:
    # Recorded as a dry-run send would record them: kept, never delivered.
    records = [outbound_record(config, m, data, "dry_run") for m, data in built]
    return [_claim_id(c) for c in store.claim_many(records)]


def _claim_id(claim: Claim) -> str:
    replay = claim.replay
    if replay is not None and replay.audit_id is not None:
        return replay.audit_id
    return claim.audit_id


def enqueue(
    audit: AuditLog,
    config: Config,
    built: Sequence[Built],
    *,
    send_at: object = None,
    connection: Any = None,
) -> list[str]:
    """Write the messages as one batch (one transaction, or inside ``connection``'s)."""
    now = time.time()
    due = due_at(send_at, now)  # before any write, before the store is even opened
    store = outbox_store(audit, config)
    if not built:
        return []
    if config.dry_run:
        return _dry_ids(store, config, built)
    items = [queued(config, b, due, now) for b in built]
    outbox: Outbox = store.outbox()
    return outbox.enqueue_many(items, connection=connection)


async def enqueue_async(
    audit: AuditLog,
    config: Config,
    built: Sequence[Built],
    *,
    send_at: object = None,
    connection: Any = None,
) -> list[str]:
    """``enqueue`` without blocking the caller's loop: the store's I/O runs in a worker
    thread, unless ``connection`` is the caller's ``psycopg.AsyncConnection``."""
    if connection is None or config.dry_run:
        return await asyncio.to_thread(
            enqueue, audit, config, built, send_at=send_at, connection=connection
        )
    now = time.time()
    due = due_at(send_at, now)
    store = await asyncio.to_thread(outbox_store, audit, config)  # opening it is blocking I/O
    if not built:
        return []
    items = [queued(config, b, due, now) for b in built]
    return await store.outbox().enqueue_many_async(items, connection=connection)
