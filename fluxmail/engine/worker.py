"""The outbox worker: claim due rows, deliver them through the bulk pipeline's senders (pooled
lanes, PIPELINING priming, coalesced wire marks), settle them (docs/outbox.md).

- Claims are made only when the pipeline has room (a lease is held while a row waits), in a
  worker thread; when nothing is due the worker waits on the store's waiter (LISTEN/NOTIFY on
  PostgreSQL) until the next row is due or the poll interval passes, in slices short enough to
  notice a stop within a second.
- A heartbeat renews the leases every ``lease / 3`` and commits settlements the store refused
  earlier. A store that is down (PostgreSQL restarting) makes claiming back off and carry on.
- Stop: no more claims; rows claimed but not handed to a lane are released as ``pending``;
  what is in flight finishes, for at most ``grace`` seconds, then is cancelled (the interrupt
  rule makes a marked message ``unknown``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fluxmail.audit.outbox import Delivery, Outbox, Waiter
from fluxmail.engine.outcomes import BulkOutcome, RateLimiter
from fluxmail.engine.pipeline import Pipeline
from fluxmail.engine.sending import Engine
from fluxmail.engine.worker_books import WorkerBooks, WorkerReport
from fluxmail.engine.worker_rate import FleetLimiter
from fluxmail.errors import FluxMailException

__all__ = ["OutboxWorker", "WorkerReport"]

log = logging.getLogger("fluxmail.worker")
SLICE = 0.5  # seconds of one idle wait: how soon a stop is noticed
MAX_PAUSE = 30.0  # the longest back-off while the store is unreachable


class OutboxWorker:
    def __init__(self, engine: Engine, *, concurrency: int, batch: int, grace: float) -> None:
        self._engine = engine
        self._concurrency = concurrency
        self._batch = batch
        self._grace = grace
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_early = False  # stop() before the loop started
        self.limiter: FleetLimiter | None = None

    def stop(self) -> None:
        """From any thread (a signal handler too): stop claiming, finish, return."""
        self._stop_early = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)

    async def run(self, *, once: bool = False, ids: Sequence[str] | None = None) -> WorkerReport:
        config = self._engine.config
        outbox: Outbox = self._engine.audit.store().outbox()
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        if self._stop_early:
            self._stop.set()
        coalesce = config.audit_url is not None  # PostgreSQL: a mark is a round trip
        books = WorkerBooks(config, outbox, self.owner, coalesce=coalesce)
        limiter: Any = RateLimiter(None)
        if config.rate_limit:
            limiter = self.limiter = FleetLimiter(outbox, config.endpoint, config.rate_limit)
        pipeline = Pipeline(
            self._engine, self._source(outbox, books, once, ids), self._emit(books), books=books,
            concurrency=self._concurrency, limiter=limiter, connection_rate=None,
            per_connection=None,
        )  # fmt: skip
        log.info("worker %s started (concurrency %d)", self.owner, self._concurrency)
        beat = asyncio.ensure_future(self._heartbeat(outbox, books))
        try:
            await self._until_stopped(asyncio.ensure_future(pipeline.run()), books)
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
            books.flush()
            self._stop_early = False
            await self._engine.transport.aclose()
        log.info("worker %s stopped: %s", self.owner, books.report.to_dict())
        return books.report

    async def _until_stopped(self, task: asyncio.Future[None], books: WorkerBooks) -> None:
        assert self._stop is not None
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not task.done():
            books.stopping = True  # nothing new is marked: the queued rows are released
            books.changed.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), max(0.0, self._grace - 1.0))
            except asyncio.TimeoutError:
                log.warning("grace period over: cancelling what is in flight")
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return
        task.result()

    def _emit(self, books: WorkerBooks) -> Any:
        async def emit(outcome: BulkOutcome) -> None:
            # Anything the pipeline reports is out of this worker's hands (a row another
            # worker took back meanwhile is dropped here; the rest were settled already).
            if outcome.result is not None and outcome.result.audit_id:
                books.lost(outcome.result.audit_id)

        return emit

    # -- claiming ----------------------------------------------------------------------------

    async def _source(
        self, outbox: Outbox, books: WorkerBooks, once: bool, ids: Sequence[str] | None
    ) -> AsyncIterator[Delivery]:
        assert self._stop is not None
        config = self._engine.config
        low = max(self._concurrency * 2, self._batch // 2)
        waiter: Waiter | None = None
        pause = 0.5
        try:
            while not self._stop.is_set():
                if books.outstanding >= low:  # wait for room: a lease is held while a row waits
                    books.changed.clear()
                    await books.changed.wait()
                    continue
                try:
                    rows = await asyncio.to_thread(
                        outbox.claim_due, self.owner, limit=self._batch,
                        lease=config.outbox_lease, ids=ids,
                    )  # fmt: skip
                    pause = 0.5
                except FluxMailException as exc:
                    log.warning("could not claim (retrying in %.1f s): %s", pause, exc.code)
                    await self._nap(random.uniform(pause / 2, pause))
                    pause = min(pause * 2, MAX_PAUSE)
                    continue
                if rows:
                    books.claimed(rows)
                    log.info("claimed %d rows: %s", len(rows), " ".join(r.audit_id for r in rows))
                    for row in rows:
                        yield row
                    if ids is None:
                        continue
                if once or ids is not None:
                    return
                waiter = waiter or outbox.waiter()
                await self._idle(outbox, waiter)
        finally:
            if waiter is not None:
                waiter.close()

    async def _idle(self, outbox: Outbox, waiter: Waiter) -> None:
        """Until a row is due, an enqueue is announced, the poll interval passes or a stop."""
        assert self._stop is not None
        poll = self._engine.config.outbox_poll_interval
        try:
            due = await asyncio.to_thread(outbox.next_due)
        except FluxMailException:
            due = None
        until = time.monotonic() + (poll if due is None else min(poll, due - time.time()))
        while not self._stop.is_set():
            left = until - time.monotonic()
            if left <= 0 or await asyncio.to_thread(waiter.wait, min(left, SLICE)):
                return

    async def _nap(self, seconds: float) -> None:
        assert self._stop is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _heartbeat(self, outbox: Outbox, books: WorkerBooks) -> None:
        lease = self._engine.config.outbox_lease
        while True:
            await asyncio.sleep(lease / 3)
            try:
                await asyncio.to_thread(outbox.renew, self.owner, lease=lease)
            except FluxMailException as exc:
                log.warning("could not renew the leases: %s", exc.code)
                continue
            if books.backlog:
                books.flush()
