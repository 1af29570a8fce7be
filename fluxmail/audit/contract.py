"""The audit store contract: what the engine and the CLI need from a backend.

The mailer calls :meth:`AuditStore.claim` before contacting the server (the record is committed
when it returns) and :meth:`AuditStore.finish` once the outcome is known. Bulk runs claim with
``defer_snapshots=True`` (the snapshot is committed in the database, its folder written later)
inside :meth:`AuditStore.hold_snapshots`, and call :meth:`AuditStore.materialize_pending` at the
end. Two backends implement it: SQLite plus a snapshot folder (one machine) and PostgreSQL
(fleets). Backends subclass :class:`AuditStore` to inherit its defaults.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any, Protocol

from fluxmail.audit.outbox import Outbox
from fluxmail.audit.records import AuditRecord, Claim, Claims, DraftClaim, OutboundRecord
from fluxmail.results import SendResult

__all__ = ["AuditStore", "RunLease"]


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
    ) -> Claims: ...
    def begin_run(self) -> RunLease: ...
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

    def save_draft(self, record: OutboundRecord, spec: Mapping[str, Any]) -> str:
        """Store a record as ``draft`` with its model (fluxmail.message.stored) and snapshot;
        its id. A key already stored with the same content: that record's id (nothing
        written); other content: the ``idempotency_conflict`` AuditError."""
        ...

    def claim_draft(self, audit_id: str) -> DraftClaim:
        """Turn a ``draft`` (or a draft whose send ``failed``) ``sending`` and return what to
        send; a draft sent already (or on its way) is a replay. Not a draft: AuditError
        ``not_a_draft``; no such record: ``record_not_found``."""
        ...

    def discard_draft(self, audit_id: str) -> None:
        """Delete a record that is still ``draft`` (snapshot included); else ``not_a_draft``."""
        ...

    def outbox(self) -> Outbox:
        """The store's outbox side (fluxmail.audit.outbox): enqueue, claim, settle."""
        ...

    def hold_snapshots(self) -> AbstractContextManager[None]:
        """While a bulk run sends, keep any background snapshot writer idle (it catches up
        afterwards). Nothing to hold by default."""
        return contextlib.nullcontext()

    def materialize_pending(self) -> int:
        """Write every deferred snapshot now; how many. None are deferred by default."""
        return 0
