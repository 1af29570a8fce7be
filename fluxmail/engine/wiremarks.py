"""The pipeline's "handed to the wire" marks, group-committed (engine/pipeline.py).

A mark that costs a database round trip (``lease.coalesce``: PostgreSQL) is written on a
worker thread, one write at a time: while one is on its way, the marks every sender asks for
gather and go together in the next. The loop keeps sending on the other connections meanwhile
(a mark on the loop stalled all of them for a round trip, and so took one round trip per
message). A cheap mark (SQLite's journal file) is made at once, on the loop.
"""

from __future__ import annotations

import asyncio

from fluxmail.audit.contract import RunLease

__all__ = ["WireMarks"]


class WireMarks:
    def __init__(self, lease: RunLease) -> None:
        self._lease = lease
        self._ids: list[str] = []
        self._done: asyncio.Future[frozenset[str]] | None = None  # the next write's waiters
        self._writing = False

    async def mark(self, audit_ids: list[str]) -> frozenset[str]:
        """Durable when it returns; the ids that must not be sent (see RunLease.mark)."""
        if not self._lease.coalesce:
            return self._lease.mark(audit_ids)
        self._ids.extend(audit_ids)
        if self._done is None:
            loop = asyncio.get_running_loop()
            self._done = loop.create_future()
            if not self._writing:
                loop.call_soon(self._write)
        # Shielded: one sender's cancellation must not fail the others sharing the write.
        return await asyncio.shield(self._done)

    def _write(self) -> None:
        ids, self._ids = self._ids, []
        done, self._done = self._done, None
        assert done is not None
        self._writing = True
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(None, self._lease.mark, ids)
        job.add_done_callback(lambda finished: self._landed(finished, done))

    def _landed(
        self, job: asyncio.Future[frozenset[str]], done: asyncio.Future[frozenset[str]]
    ) -> None:
        self._writing = False
        if job.cancelled():
            done.cancel()
        elif (exc := job.exception()) is not None:
            done.set_exception(exc)
            done.exception()  # retrieved: no warning when every waiter was cancelled
        else:
            done.set_result(job.result())
        if self._done is not None:  # asked for while this write was on its way
            self._write()
