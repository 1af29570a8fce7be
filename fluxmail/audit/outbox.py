"""The outbox contract: the audit record is the queue row (docs/outbox.md).

``enqueue`` writes a record as ``pending`` (in the caller's own transaction when given a
``connection``), so a message and the business change that caused it commit or roll back
together. Workers ``claim_due`` rows under a lease (``SELECT ... FOR UPDATE SKIP LOCKED`` on
PostgreSQL), ``mark`` each one as handed to the wire before any of its bytes go out, and
``settle`` it: a final outcome, or back to ``pending`` at ``retry_at``.

Row life: ``pending`` -> ``sending`` (leased by one worker) -> ``sent`` / ``partial`` /
``queued`` / ``failed`` / ``unknown``, or ``pending`` again (a retry); ``cancelled`` by an
operator. A lease that runs out (its worker died) makes an unmarked row ``pending`` again and a
marked one ``unknown``: it may have reached the server, so it is never resent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fluxmail.audit.records import OutboundRecord
from fluxmail.results import SendResult

__all__ = ["Delivery", "Outbox", "OutboxStats", "Queued", "Settlement", "Waiter"]


@dataclass(frozen=True)
class Queued:
    """One message to enqueue: its record (status ``pending``), the model as JSON
    (``fluxmail.message.stored``), when it is due and when retrying must stop (epoch seconds)."""

    record: OutboundRecord
    spec: Mapping[str, Any]
    due_at: float
    deadline_at: float


@dataclass(frozen=True)
class Delivery:
    """A row a worker claimed: what it needs to send it, and what earlier tries left."""

    audit_id: str
    spec: Mapping[str, Any]
    eml: bytes
    attachments: tuple[bytes, ...]  # contents in position order (attachments, inline images)
    # Envelope addresses still to deliver after a partial try; None: every recipient.
    recipients: tuple[str, ...] | None
    tries: int  # tries begun before this one
    created_at: float
    deadline_at: float
    # What earlier tries recorded (JSON, as SendResult.to_dict writes them).
    prior_recipients: Mapping[str, Mapping[str, Any]]
    prior_attempts: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class Settlement:
    """A claimed row's end: ``result`` is final, unless ``retry_at`` sends it back to
    ``pending`` then, for ``retry_recipients`` only (None: all of them)."""

    audit_id: str
    result: SendResult  # the whole record's result, earlier tries merged in
    retry_at: float | None = None
    retry_recipients: tuple[str, ...] | None = None


@dataclass(frozen=True)
class OutboxStats:
    pending: int  # waiting, due or not, retries included
    due: int  # pending and due now
    scheduled: int  # pending, due later (send_at or a retry's backoff)
    retrying: int  # pending after at least one try
    sending: int  # under a worker's lease now
    failed: int
    unknown: int
    cancelled: int
    oldest_due_age: float | None  # seconds the oldest due message has waited

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class Waiter(Protocol):
    """Wakes an idle worker: ``wait`` returns True when an enqueue was announced (PostgreSQL's
    LISTEN/NOTIFY), False when ``timeout`` seconds passed (the timed poll)."""

    def wait(self, timeout: float) -> bool: ...

    def close(self) -> None: ...


class Outbox(Protocol):
    """What the mailer, the workers and the CLI need from the store's outbox side.

    Every method is one transaction. ``owner`` is a worker's id: a row is changed by the
    lease methods only while that worker still holds it.
    """

    def enqueue_many(self, items: Sequence[Queued], *, connection: Any = None) -> list[str]:
        """Store the rows as ``pending``; their ids in order. A key already stored returns its
        record's id (nothing written) unless that record ``failed`` (or was a dry run or a
        draft): then it is queued again. Different content under a used key is the
        ``idempotency_conflict`` AuditError. ``connection``: the caller's open connection
        (psycopg 3), written in its transaction and committed by the caller; announced to
        workers on commit."""
        ...

    async def enqueue_many_async(
        self, items: Sequence[Queued], *, connection: Any = None
    ) -> list[str]:
        """``enqueue_many`` through the caller's ``psycopg.AsyncConnection`` (or, without one,
        on a worker thread)."""
        ...

    def claim_due(
        self, owner: str, *, limit: int, lease: float, ids: Sequence[str] | None = None
    ) -> list[Delivery]:
        """Up to ``limit`` due rows, oldest due first, now ``sending`` under ``owner``'s lease
        for ``lease`` seconds; with ``ids``, only those of them that are due (a Celery task's).
        Rows another worker holds are skipped, never waited for. Expired leases are resolved
        first (``expire_leases``)."""
        ...

    def renew(self, owner: str, *, lease: float) -> int:
        """Extend every lease ``owner`` holds; how many rows."""
        ...

    def mark(
        self, owner: str, audit_ids: Sequence[str], *, settle: Sequence[Settlement] = ()
    ) -> frozenset[str]:
        """Durably note the rows as handed to the wire, before any byte goes out; the ids that
        must not be sent (no longer ``owner``'s). ``settle``: outcomes committed with the
        marks (PostgreSQL: in the same statement, one round trip), as ``settle`` would."""
        ...

    def settle(self, owner: str, items: Sequence[Settlement]) -> None:
        """Record outcomes (or reschedule) of rows ``owner`` holds, or held until its lease ran
        out while the row was marked; a row taken back meanwhile is left alone."""
        ...

    def release(self, owner: str, audit_ids: Sequence[str]) -> None:
        """Give unmarked rows back as ``pending``, due as they were (a worker stopping)."""
        ...

    def expire_leases(self) -> int:
        """Rows whose lease ran out: unmarked -> ``pending``, marked -> ``unknown``; how many."""
        ...

    def next_due(self) -> float | None:
        """When the next ``pending`` row is due (epoch seconds), None when there is none."""
        ...

    def stats(self) -> OutboxStats: ...

    def retry(self, audit_id: str, *, deadline_at: float, force: bool = False) -> None:
        """Queue a ``failed`` or ``cancelled`` outbox row again, due now, retrying until
        ``deadline_at``; ``unknown`` only with ``force`` (it may have been delivered). Other
        statuses, or a record that was sent inline (no stored model): AuditError
        ``outbox_not_retryable``; no such row: ``record_not_found``."""
        ...

    def cancel(self, audit_id: str) -> None:
        """``pending`` -> ``cancelled``; other statuses: AuditError ``outbox_not_cancellable``."""
        ...

    def reserve(self, key: str, rate: float, count: int) -> float:
        """Fleet-wide pacing: room for ``count`` sends at ``rate`` per second under ``key``
        (the transport's endpoint), shared by every worker of the store (a generic cell rate
        algorithm: one row per key holds when the next slot is free). Returns the seconds to
        wait before the first may start (0 when at once); the rest follow ``1/rate`` apart."""
        ...

    def waiter(self) -> Waiter: ...
