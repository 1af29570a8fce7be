"""The bulk pipeline: feed -> prepare + group-committed audit claims -> N senders -> finishes.

- Preparing (build and render) and the audit claims run on the event loop: one ``claim_many``
  per batch (one commit, always before any of its messages' transactions start) with
  ``defer_snapshots=True``, so the snapshot is committed in the database and the store's
  background thread writes the folders while the run goes on. No claim waits for a thread:
  the loop is CPU-bound and holds the GIL, and a worker thread doing the claims (and a mkdir
  and several writes per message) got it back only between the loop's own syscalls.
- Each sender owns a lane of the transport (``transport.lane()``): for SMTP one kept-open
  connection, where with PIPELINING the next message's MAIL/RCPT/DATA ride behind the current
  message's final "." (RFC 2920), saving a round trip per message. A lane with a batch
  endpoint (``lane.batch_size`` > 1: Postmark, Resend) takes up to that many ready messages in
  one request, all marked first (``transmit_many``); a rate-limited run sends them one by one.
- Every message goes through the send protocol of ``protocol.py``, the same as a single send:
  ``after_claim`` (replay and dry-run rules) and ``transmit`` (interrupt rule). The bookkeeping
  (claims, marks, finishes) is a strategy (``pipeline_books.py``): a bulk run's batched claims
  and finishes by default, the outbox worker's claimed rows and settlements otherwise.
- A run holds a lease on its claims (``store.begin_run``) and marks each record as handed to
  the wire (``lease.mark``, durable before it returns) right before its bytes may go out: as
  the message of a ``transmit``, or primed behind one (PostgreSQL: the marks of one loop turn
  share one UPDATE). After a crash, the next opener of the store resolves the run: marked records
  ``unknown`` (never resent), the other claimed ones ``failed`` (the same keys send them).
- Finishes are batched on the loop too (every FINISH_BATCH outcomes, or FINISH_DELAY seconds
  after the first one waiting); a crash before one commits leaves the record 'sending' and
  marked, which recovery makes 'unknown': never resent. The run ends once every snapshot of
  it is written (``materialize_pending``), also when it is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

from fluxmail.engine.outcomes import BulkOutcome, RateLimiter
from fluxmail.engine.outgoing import Outgoing
from fluxmail.engine.pipeline_books import Books
from fluxmail.engine.protocol import Outcome, after_claim, transmit, transmit_many
from fluxmail.engine.ready import ReadyQueue
from fluxmail.engine.sending import Engine
from fluxmail.engine.wiremarks import WireMarks
from fluxmail.errors import FluxMailException
from fluxmail.results import SendResult
from fluxmail.transport.base import Lane

CLAIM_BATCH = 64
# Bytes, not only messages, bound what is built ahead of the senders: memory stays flat with
# large attachments (a claim batch, and the queue of built messages, each hold at most this).
CLAIM_BYTES = 1 << 20
READY_BYTES = 2 << 20
_NOTHING = object()
Emit = Callable[[BulkOutcome], Awaitable[None]]


class Pipeline:
    def __init__(
        self,
        engine: Engine,
        source: Any,
        emit: Emit,
        *,
        books: Books,
        concurrency: int,
        limiter: RateLimiter,
        connection_rate: float | None,
        per_connection: int | None,
        chunked: bool = False,
    ) -> None:
        """``books``: the bookkeeping strategy (a bulk run's :class:`BulkBooks`, an outbox
        worker's); ``chunked``: ``source`` is an async iterable of lists of items."""
        self._engine = engine
        self._source = source
        self._chunked = chunked
        self._emit = emit
        self._concurrency = concurrency
        self._limiter = limiter
        self._connection_rate = connection_rate
        self._per_conn = per_connection
        self._books = books
        self._marks: WireMarks | None = None
        self._claimed: dict[str, Outgoing] = {}  # claimed, not yet handed to a sender

    async def run(self) -> None:
        work: asyncio.Queue[Any] = asyncio.Queue(maxsize=CLAIM_BATCH)
        lanes = [self._engine.transport.lane() for _ in range(self._concurrency)]
        # Room for a whole batch (bounded: flat memory), so a sender finds one ready.
        room = max(self._concurrency * 4, lanes[0].batch_size)
        ready = ReadyQueue(room, READY_BYTES)
        self._marks = self._books.open()
        feeding = isinstance(self._source, AsyncIterable) and not self._chunked
        tasks = [
            *([asyncio.ensure_future(self._feed(work))] if feeding else []),
            asyncio.ensure_future(self._prepare(work, ready)),
            *(asyncio.ensure_future(self._send(ready, lane)) for lane in lanes),
        ]
        try:
            with self._books.holding():
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._close()

    async def _close(self) -> None:
        """Resolve every claimed-but-unsent record and commit every pending finish."""
        unsent = list(self._claimed.values())
        self._claimed.clear()
        self._books.close(unsent)

    # -- stages ------------------------------------------------------------------------------

    async def _feed(self, work: asyncio.Queue[Any]) -> None:
        """Async sources only: pull items as they come (a sync source is read in _batches)."""
        index = 0
        async for item in self._source:
            await work.put((index, item))
            index += 1
        await work.put(None)

    async def _batches(self, work: asyncio.Queue[Any]) -> AsyncIterator[list[Any]]:
        """Up to CLAIM_BATCH jobs at a time: whatever an async source has ready, a slice of a
        sync iterable (read here directly: no extra task hop per message), or of a chunk."""
        index = 0
        if self._chunked:  # an async source of lists (builder processes): no hop per item
            async for chunk in self._source:
                for start in range(0, len(chunk), CLAIM_BATCH):
                    part = chunk[start : start + CLAIM_BATCH]
                    yield list(zip(itertools.count(index), part))
                    index += len(part)
            return
        if isinstance(self._source, AsyncIterable):
            while True:
                batch = [await work.get()]
                while len(batch) < CLAIM_BATCH and not work.empty():
                    batch.append(work.get_nowait())
                if batch[-1] is None:
                    yield batch[:-1]
                    return
                yield batch
        items = iter(self._source)
        while batch := list(zip(itertools.count(index), itertools.islice(items, CLAIM_BATCH))):
            index += len(batch)
            yield batch

    async def _prepare(self, work: asyncio.Queue[Any], ready: ReadyQueue) -> None:
        async for batch in self._batches(work):
            prepared: list[tuple[int, Outgoing]] = []
            size = 0
            for job in batch:
                built = await self._build(job)
                if built is None:
                    continue
                prepared.append(built)
                size += len(built[1].mail.data)
                if size >= CLAIM_BYTES:  # large messages: claim and hand on fewer at a time
                    await self._hand_on(prepared, ready)
                    prepared, size = [], 0
            await self._hand_on(prepared, ready)
        for _ in range(self._concurrency):
            await ready.put(None)

    async def _hand_on(self, prepared: list[tuple[int, Outgoing]], ready: ReadyQueue) -> None:
        """Claim built messages (one commit) and queue them for the senders."""
        claimed, refused = await self._books.claim(prepared)  # cancelled: the books resolve it
        # Every claimed record is tracked before the first await below: a run cancelled
        # while the queue is full must still resolve the rest of the batch (_close).
        ends = [(index, out, after_claim(out, claim)) for index, out, claim in claimed]
        for _, out, done in ends:
            if done is None and out.audit_id is not None:
                self._claimed[out.audit_id] = out
        for index, exc in refused:
            await self._emit(_failed(index, exc))
        for index, out, done in ends:
            if done is not None:
                await self._emit(_outcome(index, done))
            else:
                await ready.put((index, out))

    async def _build(self, job: tuple[int, Any]) -> tuple[int, Outgoing] | None:
        index, item = job
        try:
            return index, self._books.prepare(item)
        except FluxMailException as exc:
            await self._emit(_failed(index, exc))
            return None

    async def _send(self, ready: ReadyQueue, lane: Lane) -> None:
        own = RateLimiter(self._connection_rate)  # this connection's own pace, if any
        if lane.batch_size > 1 and not (self._limiter.active or own.active):
            # A rate-limited run sends one message per request: the limiter paces messages.
            await self._send_batches(ready, lane)
            return
        on_conn = 0
        primed: Outgoing | None = None  # marked already, as the previous message's `then`
        job = await ready.get()
        try:
            while job is not None:
                # Peek at the next message (it may be the end marker, None) to prime it.
                nxt: Any = ready.get_nowait() if not ready.empty() else _NOTHING
                if self._limiter.active:
                    await self._limiter.wait()
                if own.active:
                    await own.wait()
                last = self._per_conn is not None and on_conn + 1 >= self._per_conn
                then: Outgoing | None = None
                if lane.primes and nxt is not _NOTHING and nxt is not None and not last:
                    polite = self._limiter.active or own.active
                    then = None if polite else nxt[1]
                if self._marks is not None and primed is not job[1]:
                    # Connect before marking: a run killed while a server is slow to greet
                    # (or to log in) leaves those messages known never-sent, not unknown. A
                    # failure here is left to the send, which retries or reports it.
                    with contextlib.suppress(FluxMailException):
                        await lane.ready()
                go, then = await self._to_wire(job[0], job[1], primed is job[1], then)
                primed = then
                if go:
                    await self._send_one(job[0], job[1], lane, then)
                on_conn += 1
                if last:
                    await lane.close()
                    on_conn = 0
                job = nxt if nxt is not _NOTHING else await ready.get()
        finally:
            await lane.close()

    async def _send_batches(self, ready: ReadyQueue, lane: Lane) -> None:
        """Up to ``lane.batch_size`` ready messages per request (an API's batch endpoint):
        every one marked before the request goes out, each finished on its own."""
        job = await ready.get()
        try:
            while job is not None:
                jobs = [job]
                while len(jobs) < lane.batch_size and not ready.empty():
                    jobs.append(ready.get_nowait())
                    if jobs[-1] is None:
                        break
                job = jobs.pop() if jobs[-1] is None else _NOTHING
                await self._send_many(jobs, lane)
                if job is _NOTHING:
                    job = await ready.get()
        finally:
            await lane.close()

    async def _send_many(self, jobs: list[tuple[int, Outgoing]], lane: Lane) -> None:
        if self._marks is not None:
            with contextlib.suppress(FluxMailException):
                await lane.ready()  # as in _send: connect before marking
        go = await self._all_to_wire(jobs)
        if not go:
            return
        for _, out in go:
            self._claimed.pop(out.audit_id or "", None)
        outs = [out for _, out in go]
        done = await transmit_many(outs, lambda: lane.send_batch([o.mail for o in outs]), self)
        for out, each in zip(outs, done, strict=True):
            self._books.done(out, each)
        for (index, _), each in zip(go, done, strict=True):
            await self._emit(_outcome(index, each))

    async def _all_to_wire(self, jobs: list[tuple[int, Outgoing]]) -> list[tuple[int, Outgoing]]:
        """``_to_wire`` for a batch: one mark for all, before its request; the ones to send."""
        jobs = [job for job in jobs if self._books.admits(job[1])]  # the rest stay claimed
        if self._marks is None or not jobs:
            return jobs
        try:
            refused = await self._marks.mark([o.audit_id for _, o in jobs if o.audit_id])
        except FluxMailException as exc:
            for index, out in jobs:
                self._claimed.pop(out.audit_id or "", None)
                self._books.unmarked(out, exc)
                await self._emit(_failed(index, exc))
            return []
        kept = []
        for index, out in jobs:
            if out.audit_id in refused:  # resolved by a recovery meanwhile
                self._claimed.pop(out.audit_id, None)
                lost = Outcome(out.unsent("the run lost its audit lease"))
                await self._emit(_outcome(index, lost))
            else:
                kept.append((index, out))
        return kept

    async def _to_wire(
        self, index: int, out: Outgoing, marked: bool, then: Outgoing | None
    ) -> tuple[bool, Outgoing | None]:
        """Mark the message (unless it was primed) and the one to prime before any byte goes
        out; whether to send it, and what may still be primed. Nothing is sent unmarked."""
        if not marked and not self._books.admits(out):
            return False, None  # still claimed: the books give it back at the end
        if then is not None and not self._books.admits(then):
            then = None
        if self._marks is None:
            return True, then
        wanted = [o.audit_id for o in ((None if marked else out), then) if o and o.audit_id]
        try:
            refused = await self._marks.mark(wanted) if wanted else frozenset()
        except FluxMailException as exc:
            if marked:  # marked already (primed): it goes out; only the next one waits
                return True, None
            self._claimed.pop(out.audit_id or "", None)
            self._books.unmarked(out, exc)
            await self._emit(_failed(index, exc))
            return False, None
        if then is not None and then.audit_id in refused:
            then = None
        if out.audit_id in refused:  # resolved by a recovery meanwhile: no longer this run's
            self._claimed.pop(out.audit_id, None)
            await self._emit(_outcome(index, Outcome(out.unsent("the run lost its audit lease"))))
            return False, then
        return True, then

    async def _send_one(self, index: int, out: Outgoing, lane: Lane, then: Outgoing | None) -> None:
        if out.audit_id is not None:
            self._claimed.pop(out.audit_id, None)
        following = then.mail if then is not None else None
        done = await transmit(out, lambda: lane.send(out.mail, following), self)
        self._books.done(out, done)
        await self._emit(_outcome(index, done))

    # -- the protocol's Recorder -----------------------------------------------------------

    async def finish(self, out: Outgoing, result: SendResult) -> None:
        self._books.finish_now(out, result)

    def finish_now(self, out: Outgoing, result: SendResult) -> None:
        self._books.finish_now(out, result)


def _outcome(index: int, done: Outcome) -> BulkOutcome:
    return BulkOutcome(index, done.result, done.error)


def _failed(index: int, exc: FluxMailException) -> BulkOutcome:
    return BulkOutcome(index, None, exc)
