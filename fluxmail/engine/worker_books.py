"""The outbox worker's bookkeeping for the pipeline (engine/pipeline_books.py): rows arrive
claimed, each is marked through ``outbox.mark`` before its bytes go out, settled in batches
(a retry when the reply allows one, engine/worker_retry.py), and the rows never handed to a
lane are released as ``pending`` when the worker stops.

Settlements that cannot be committed (the store is down) are kept, up to ``BACKLOG``, and
committed again later (``flush``); past that the oldest are dropped: those rows stay marked and
their lease's expiry makes them ``unknown``, never resent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from fluxmail.audit.outbox import Delivery, Outbox, Settlement
from fluxmail.audit.records import Claim
from fluxmail.config.resolve import Config
from fluxmail.engine.outgoing import Outgoing
from fluxmail.engine.protocol import Outcome
from fluxmail.engine.wiremarks import WireMarks
from fluxmail.engine.worker_retry import build, settlement
from fluxmail.errors import FluxMailException
from fluxmail.results import SendResult

SETTLE_BATCH = 64
SETTLE_DELAY = 0.2  # seconds a settlement may wait for its batch
BACKLOG = 10_000  # settlements kept while the store is unreachable

log = logging.getLogger("fluxmail.worker")


@dataclass
class WorkerReport:
    """What a worker did: rows claimed, and how they ended (``retried``: back to ``pending``
    for a later try; ``released``: given back untried when the worker stopped)."""

    claimed: int = 0
    sent: int = 0
    partial: int = 0
    retried: int = 0
    failed: int = 0
    unknown: int = 0
    released: int = 0
    # audit id -> its status now (``pending`` for retried and released rows)
    statuses: dict[str, str] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if isinstance(v, int)}


class OwnerLease:
    """``outbox.mark`` under a worker's id, shaped as the RunLease that WireMarks coalesces
    (on PostgreSQL it runs on WireMarks' writer thread).

    Each mark carries the outcomes waiting since the last one (one statement on
    PostgreSQL): a worker killed then leaves marked-but-unsettled (``unknown``) only what
    went out since, about one message per lane plus the one primed behind it.
    """

    def __init__(self, books: WorkerBooks, outbox: Outbox, owner: str, *, coalesce: bool) -> None:
        self.token = owner
        self.coalesce = coalesce
        self._books = books
        self._outbox = outbox
        self.marked = books.marked

    def mark(self, audit_ids: Sequence[str]) -> frozenset[str]:
        releases, batch = self._books.take()
        try:
            if releases:
                self._outbox.release(self.token, releases)
                releases = []
            refused = self._outbox.mark(self.token, audit_ids, settle=batch)
        except FluxMailException:
            self._books.keep(releases, batch)
            raise
        self.marked.update(a for a in audit_ids if a not in refused)
        return refused

    def close(self, *, resolved: bool) -> None:
        return None


class WorkerBooks:
    def __init__(self, config: Config, outbox: Outbox, owner: str, *, coalesce: bool) -> None:
        self._config = config
        self._outbox = outbox
        self._owner = owner
        self._coalesce = coalesce
        self.report = WorkerReport()
        self.stopping = False
        self.changed = asyncio.Event()  # set when rows leave this worker's hands
        self._held: dict[str, Delivery] = {}  # claimed, not yet settled or released
        self._results: dict[str, SendResult] = {}  # recorded, waiting for the outcome
        self._backlog: list[Settlement] = []
        # Releases the store refused: retried with the settlements (this worker's renewals
        # would otherwise keep those rows leased, and 'sending', for as long as it lives).
        self._unreleased: list[str] = []
        self.marked: set[str] = set()  # marked in the store: `release` refuses these
        self._timer: asyncio.TimerHandle | None = None
        # Guards the backlog and the releases: `commit` also runs on WireMarks' thread.
        self._lock = threading.Lock()

    @property
    def outstanding(self) -> int:
        return len(self._held)

    def claimed(self, rows: Sequence[Delivery]) -> None:
        for row in rows:
            self._held[row.audit_id] = row
        self.report.claimed += len(rows)

    # -- the pipeline's Books ----------------------------------------------------------------

    def open(self) -> WireMarks | None:
        return WireMarks(OwnerLease(self, self._outbox, self._owner, coalesce=self._coalesce))

    def holding(self) -> AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def prepare(self, item: Any) -> Outgoing:
        row: Delivery = item
        try:
            return build(row)
        except FluxMailException as exc:  # a spec this worker cannot rebuild: never sendable
            log.error("outbox %s cannot be rebuilt: %s", row.audit_id, exc.code)
            self._settle(settlement(row, None, Outcome(None, exc), self._config))
            raise

    async def claim(self, batch: list[tuple[int, Outgoing]]) -> tuple[Any, Any]:
        return [(index, out, Claim(out.audit_id or "")) for index, out in batch], []

    def admits(self, out: Outgoing) -> bool:
        return not self.stopping

    def unmarked(self, out: Outgoing, exc: FluxMailException) -> None:
        """Not sent: give it back now, or (the store being down) at its lease's expiry."""
        log.warning("outbox %s not sent, its mark failed: %s", out.audit_id, exc.code)
        self.release([out.audit_id or ""])

    def finish_now(self, out: Outgoing, result: SendResult) -> None:
        # Kept for ``done``, which sees the transport's error too; an interruption (unknown,
        # never retried) gets no ``done``: settled now.
        self._results[out.audit_id or ""] = result
        if result.status == "unknown":
            self.done(out, Outcome(result))

    def done(self, out: Outgoing, outcome: Outcome) -> None:
        result = self._results.pop(out.audit_id or "", None) or outcome.result
        row = self._held.get(out.audit_id or "")
        if row is None:
            return  # settled already, or lost to another worker
        self._settle(settlement(row, result, outcome, self._config, out.names))

    def close(self, unsent: Sequence[Outgoing]) -> None:
        # A result recorded without its outcome (cancelled in between): settle it as it is.
        for audit_id, result in list(self._results.items()):
            row = self._held.get(audit_id)
            if row is not None:
                self._settle(settlement(row, result, Outcome(result), self._config))
        self._results.clear()
        # Marked but never transmitted (primed behind a "." whose reply a stop cancelled):
        # its final "." never went, so nothing was delivered (RFC 5321 4.1.1.4). The store
        # will not release a marked row: reschedule it, or it stays 'sending' until its lease.
        for out in unsent:
            row = self._held.get(out.audit_id or "")
            if row is not None and row.audit_id in self.marked:
                result = out.unsent("the worker stopped before sending it")
                self._settle(settlement(row, result, Outcome(result), self._config, out.names))
        self.release([out.audit_id for out in unsent if out.audit_id])
        self.flush()

    # -- settling ----------------------------------------------------------------------------

    def release(self, audit_ids: Sequence[str]) -> None:
        ids = [a for a in audit_ids if a in self._held]
        if not ids:
            return
        with self._lock:
            self._unreleased.extend(ids)
        self.commit()
        for audit_id in ids:
            del self._held[audit_id]
            self.marked.discard(audit_id)
            self.report.statuses[audit_id] = "pending"
        self.report.released += len(ids)
        log.info("released %d rows", len(ids))
        self.changed.set()

    def lost(self, audit_id: str) -> None:
        self._held.pop(audit_id, None)
        self.marked.discard(audit_id)
        self.changed.set()

    def _settle(self, item: Settlement) -> None:
        row = self._held.pop(item.audit_id, None)
        self.marked.discard(item.audit_id)
        if row is None:
            return
        self._count(item)
        with self._lock:
            self._backlog.append(item)
        self.changed.set()
        if len(self._backlog) >= SETTLE_BATCH:
            self.flush()
        elif self._timer is None:
            with contextlib.suppress(RuntimeError):  # no running loop: flushed at close
                self._timer = asyncio.get_running_loop().call_later(SETTLE_DELAY, self.flush)

    def _count(self, item: Settlement) -> None:
        result = item.result
        code = result.final_reply.code if result.final_reply else None
        if item.retry_at is not None:
            self.report.retried += 1
            self.report.statuses[item.audit_id] = "pending"
            log.info(
                "outbox %s deferred (reply %s), retry at %.3f for %d recipients",
                item.audit_id, code, item.retry_at, len(item.retry_recipients or ()),
            )  # fmt: skip
            return
        status = result.status if result.status != "queued" else "sent"
        if status in ("sent", "partial", "failed", "unknown"):
            setattr(self.report, status, getattr(self.report, status) + 1)
        self.report.statuses[item.audit_id] = result.status
        log.info("outbox %s %s (reply %s)", item.audit_id, result.status, code)

    @property
    def backlog(self) -> int:
        return len(self._backlog) + len(self._unreleased)

    def flush(self) -> bool:
        """On the loop: ``commit`` now (the batch timer is no longer needed)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return self.commit()

    def commit(self) -> bool:
        """From any thread: commit the refused releases, then the waiting settlements, in
        transactions of up to SETTLE_BATCH * 4; False when the store refused (what was
        taken goes back, for the next commit)."""
        while True:
            releases, batch = self.take()
            if not releases and not batch:
                return True
            try:
                if releases:
                    self._outbox.release(self._owner, releases)
                    releases = []
                if batch:
                    self._outbox.settle(self._owner, batch)
            except FluxMailException as exc:
                self.keep(releases, batch)
                log.warning(
                    "could not record %d rows (kept for later): %s",
                    len(releases) + len(batch), exc.code,
                )  # fmt: skip
                return False

    def take(self) -> tuple[list[str], list[Settlement]]:
        """From any thread: the releases and up to SETTLE_BATCH * 4 settlements waiting,
        taken out (``keep`` puts them back when they could not be committed)."""
        with self._lock:
            releases, self._unreleased = self._unreleased, []
            batch = self._backlog[: SETTLE_BATCH * 4]
            del self._backlog[: len(batch)]
        return releases, batch

    def keep(self, releases: list[str], batch: list[Settlement]) -> None:
        with self._lock:
            self._unreleased[:0] = releases
            self._backlog[:0] = batch
            if len(self._backlog) > BACKLOG:
                dropped = len(self._backlog) - BACKLOG
                del self._backlog[:dropped]
                log.error("dropped %d settlements: their rows end as unknown", dropped)
