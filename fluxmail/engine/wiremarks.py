"""The bulk pipeline's "handed to the wire" marks, coalesced per loop tick (engine/pipeline.py)."""

from __future__ import annotations

import asyncio

from fluxmail.audit.contract import RunLease

__all__ = ["WireMarks"]


class WireMarks:
    """Every sender's "handed to the wire" marks of one loop tick in one ``lease.mark`` (when
    the lease asks for it: a database round trip), else each mark at once."""

    def __init__(self, lease: RunLease) -> None:
        self._lease = lease
        self._ids: list[str] = []
        self._done: asyncio.Future[frozenset[str]] | None = None

    async def mark(self, audit_ids: list[str]) -> frozenset[str]:
        """Durable when it returns; the ids that must not be sent (see RunLease.mark)."""
        if not self._lease.coalesce:
            return self._lease.mark(audit_ids)
        self._ids.extend(audit_ids)
        if self._done is None:
            loop = asyncio.get_running_loop()
            self._done = loop.create_future()
            loop.call_soon(self._write)
        # Shielded: one sender's cancellation must not fail the others sharing the write.
        return await asyncio.shield(self._done)

    def _write(self) -> None:
        ids, self._ids = self._ids, []
        done, self._done = self._done, None
        assert done is not None
        try:
            done.set_result(self._lease.mark(ids))
        except Exception as exc:
            done.set_exception(exc)
            done.exception()  # retrieved: no warning when every waiter was cancelled
