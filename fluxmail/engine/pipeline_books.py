"""The pipeline's bookkeeping, a strategy (engine/pipeline.py): how its messages are claimed,
marked as handed to the wire and recorded. ``BulkBooks`` is a bulk run's: batched claims under
a run lease, batched finishes, and claimed-but-unsent records failed at the end. The outbox
worker's (engine/worker_books.py) takes rows already claimed, settles and releases them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any, Protocol

from fluxmail.audit.contract import AuditStore, RunLease
from fluxmail.audit.records import Claim, Claims
from fluxmail.engine.outgoing import Outgoing
from fluxmail.engine.protocol import Outcome
from fluxmail.engine.sending import Engine
from fluxmail.engine.wiremarks import WireMarks
from fluxmail.errors import FluxMailException
from fluxmail.message.model import Message
from fluxmail.results import SendResult

# Outcomes per finish commit. The wait is bounded by FINISH_DELAY, not by the count: 256 a
# commit costs ~1 µs less per message than 64 (fewer index and header pages rewritten).
FINISH_BATCH = 256
FINISH_DELAY = 0.2  # seconds an outcome may wait for its batch (slow, rate-limited runs)
# Outcomes that may wait while a batch is on its way to a round-trip store; beyond, the loop
# waits for the database, as a commit on the loop would: memory stays flat when it falls behind.
FINISH_BACKLOG = 4 * FINISH_BATCH

Build = Callable[[Any], tuple[Message, bytes]]  # an input item -> the message and its bytes
# None: nothing for after_claim to read (no audit, or a new record: its id is on the message).
Claimed = list[tuple[int, Outgoing, Claim | None]]
Refused = list[tuple[int, FluxMailException]]


class Books(Protocol):
    """What the pipeline asks of its bookkeeping, in the order a message meets it."""

    def open(self) -> WireMarks | None:
        """Start (a bulk run's lease); the marks to make before any byte goes out, if any."""
        ...

    def holding(self) -> AbstractContextManager[Any]: ...

    def prepare(self, item: Any) -> Outgoing:
        """The message for one input item; a FluxMailException if it cannot be built."""
        ...

    async def claim(self, batch: list[tuple[int, Outgoing]]) -> tuple[Claimed, Refused]:
        """Commit the batch's records before any of them is handed on."""
        ...

    def admits(self, out: Outgoing) -> bool:
        """May this claimed, not yet marked message still go out? (False: a worker stopping;
        it stays claimed and ``close`` gives it back.)"""
        ...

    def unmarked(self, out: Outgoing, exc: FluxMailException) -> None:
        """Its mark could not be made: it is not sent."""
        ...

    def finish_now(self, out: Outgoing, result: SendResult) -> None: ...

    def done(self, out: Outgoing, outcome: Outcome) -> None:
        """After ``transmit``: the whole outcome (with the transport's error)."""
        ...

    def close(self, unsent: Sequence[Outgoing]) -> None:
        """Resolve what was claimed but never handed to a lane, and commit what is pending."""
        ...


class BulkBooks:
    """A bulk run: claims in one commit per batch, a run lease, finishes in batches.

    Nothing is handed on before its record is committed. Where a commit is a round trip
    (PostgreSQL: ``lease.coalesce``), claims and finishes are committed by threads of the
    run's own, one batch at a time each, while the loop sends. With SQLite they stay on
    the loop: a thread there took the GIL from it for every statement, and the run got slower
    (docs/performance.md). ``close`` waits for what is on its way and commits the rest, so a
    run never ends with a record left ``sending``.
    """

    def __init__(self, engine: Engine, build: Build, *, dry: bool) -> None:
        self._engine = engine
        self._build = build
        self._dry = dry
        self._store: AuditStore | None = None
        self._lease: RunLease | None = None
        self._unrecorded = False  # some outcome could not be committed: keep the lease's trail
        self._finishes: list[tuple[str, SendResult]] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        # Round-trip stores only: a thread for claims and one for finishes, so that a claim
        # never queues behind a batch of outcomes; the store's lock keeps their statements apart.
        self._claimer: ThreadPoolExecutor | None = None
        self._finisher: ThreadPoolExecutor | None = None
        self._finishing: Future[None] | None = None  # the batch on its way, if any
        self._claiming: Future[tuple[Claimed, Refused]] | None = None  # the same, of claims
        self._broken: BaseException | None = None  # a finishing error that is not the store's

    def open(self) -> WireMarks | None:
        if not self._engine.audit.enabled:
            return None
        self._store = self._engine.audit.store()
        if self._dry:
            return None
        self._lease = self._store.begin_run()
        if self._lease.coalesce:
            self._claimer = ThreadPoolExecutor(1, thread_name_prefix="fluxmail-claim")
            self._finisher = ThreadPoolExecutor(1, thread_name_prefix="fluxmail-finish")
        return WireMarks(self._lease)

    def holding(self) -> AbstractContextManager[Any]:
        return self._store.hold_snapshots() if self._store else contextlib.nullcontext()

    def prepare(self, item: Any) -> Outgoing:
        return Outgoing.prepare(*self._build(item), dry=self._dry)

    async def claim(self, batch: list[tuple[int, Outgoing]]) -> tuple[Claimed, Refused]:
        """Claim audit records for a batch (one commit): on the loop, or where a commit is a
        round trip by the run's claiming thread, the loop sending meanwhile. A claim the run
        stops waiting for is resolved by ``close``."""
        if self._claimer is None:
            return self._claim_now(batch)
        job = self._claimer.submit(self._claim_now, batch)
        self._claiming = job
        answer = await asyncio.wrap_future(job)
        self._claiming = None  # the pipeline tracks its records from here
        return answer

    def _claim_now(self, batch: list[tuple[int, Outgoing]]) -> tuple[Claimed, Refused]:
        """Claim audit records for a batch (one commit): the claims, and the items refused.

        A new record's id goes straight to its message (``None`` in place of a Claim): no
        object per message is made for what the pipeline reads once (docs/performance.md).
        """
        if self._store is None or not batch:
            return [(index, out, None) for index, out in batch], []
        config = self._engine.config
        records = [out.record(config) for _, out in batch]
        claim_many = self._store.claim_many
        run = self._lease.token if self._lease is not None else None
        try:  # on the loop, synchronously: committed before any of these is handed on
            claims: Claims | None = claim_many(records, defer_snapshots=True, run=run)
        except FluxMailException:
            claims = None  # one bad record (e.g. a key conflict) spoils the batch: go one by one
        kept: Claimed = []
        refused: Refused = []
        for n, (index, out) in enumerate(batch):
            got, at = claims, n
            if got is None:
                try:
                    got, at = claim_many([records[n]], defer_snapshots=True, run=run), 0
                except FluxMailException as exc:
                    refused.append((index, exc))
                    continue
            audit_id, replay = got.ids[at], got.replays.get(at)
            if replay is not None:
                kept.append((index, out, Claim(audit_id, replay)))
            else:
                out.audit_id = audit_id
                kept.append((index, out, None))
        return kept, refused

    def admits(self, out: Outgoing) -> bool:
        return True

    def unmarked(self, out: Outgoing, exc: FluxMailException) -> None:
        self.finish_now(out, out.unsent(str(exc)))

    def done(self, out: Outgoing, outcome: Outcome) -> None:
        return None

    def finish_now(self, out: Outgoing, result: SendResult) -> None:
        """Queue the outcome for the next batched commit (the protocol's Recorder)."""
        if self._broken is not None:  # a bug, not a store error: end the run with it
            raise self._broken
        if out.audit_id is None:
            return
        self._finishes.append((out.audit_id, result))
        if len(self._finishes) >= FINISH_BATCH:
            if self._finishing is not None and len(self._finishes) >= FINISH_BACKLOG:
                self._settle()  # the database is behind: wait for it here
                if self._broken is not None:
                    raise self._broken
            self._flush()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(FINISH_DELAY, self._flush)

    def close(self, unsent: Sequence[Outgoing]) -> None:
        """Claimed-but-unsent records fail; every pending finish is committed.

        Snapshot folders are not waited for: their bytes were committed with each claim, so
        they are as durable as the records; the store's writer thread keeps writing them, and
        ``mailer.close()``, any read and the next open finish the job.
        """
        for out in unsent:
            self._never_sent(out)
        self._abandoned()
        self._settle()
        for pool in (self._claimer, self._finisher):
            if pool is not None:
                pool.shutdown()
        self._claimer = self._finisher = None  # from here on, _flush commits on this thread
        if self._broken is None:
            self._flush()  # synchronous: nothing is left 'sending'
        if self._lease is not None:
            # Every record resolved: the lease ends without a trail. Else the next opener
            # of the store resolves what is left from the marks, as after a crash.
            self._lease.close(resolved=not self._unrecorded and self._broken is None)
        if self._broken is not None:
            raise self._broken

    def _flush(self) -> None:
        """Commit the waiting outcomes in one transaction: here, or by the finishing thread
        (one batch at a time: what gathers meanwhile follows it, ``_landed``)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        busy = self._finishing is not None or self._broken is not None
        if busy or not self._finishes or self._store is None:
            return
        batch, self._finishes = self._finishes, []
        if self._finisher is None:
            try:
                self._record(batch)
            except BaseException as exc:  # a bug: the records stay for recovery (close)
                self._broken = exc
                raise
            return
        job = self._finisher.submit(self._record, batch)
        self._finishing = job
        loop = asyncio.get_running_loop()
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._landed, job))

    def _abandoned(self) -> None:
        """A claim the run stopped waiting for (cancelled): once committed, its new records
        fail, as never handed on."""
        job, self._claiming = self._claiming, None
        if job is None or job.cancelled() or job.exception() is not None:
            return  # never started, or rolled back
        kept, _ = job.result()
        for _, out, claim in kept:
            if claim is None:  # a new record (a replay is not this run's to resolve)
                self._never_sent(out)

    def _never_sent(self, out: Outgoing) -> None:
        assert out.audit_id is not None
        self._finishes.append((out.audit_id, out.unsent("the bulk run stopped first")))

    def _settle(self) -> None:
        """Wait for the batch on its way, if any (blocking: the end of a run, or a backlog);
        an error that is not the store's is kept for ``finish_now`` and ``close`` to raise."""
        job, self._finishing = self._finishing, None
        if job is not None:
            self._broken = self._broken or job.exception()

    def _landed(self, job: Future[None]) -> None:
        """On the loop, once a batch is committed: hand on what gathered meanwhile if it is a
        batch, or if its wait is over (no timer left for it)."""
        if self._finishing is not job:
            return  # waited for already (close, or a backlog)
        self._settle()  # done: no wait
        waiting = len(self._finishes)
        if self._broken is None and (
            waiting >= FINISH_BATCH or (waiting and self._flush_timer is None)
        ):
            self._flush()

    def _record(self, batch: list[tuple[str, SendResult]]) -> None:
        assert self._store is not None
        try:
            self._store.finish_many(batch)
        except FluxMailException as exc:
            # The records stay 'sending'; recovery reads the marked ones as 'unknown' later.
            self._unrecorded = True
            self._engine.log.error("could not record %d outcomes: %s", len(batch), exc)
