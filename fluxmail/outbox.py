"""The outbox from the caller's side: ``mailer.enqueue_many()`` and ``mailer.outbox`` (stats,
retry, cancel). Workers (``fluxmail worker``) deliver what is enqueued; see docs/outbox.md."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from fluxmail.audit.contract import AuditStore
from fluxmail.audit.outbox import Outbox, OutboxStats
from fluxmail.bulk import create_args
from fluxmail.draft import Draft
from fluxmail.engine.enqueue import DEFAULT_DEADLINE, due_at
from fluxmail.errors import ConfigurationError, shown
from fluxmail.message.model import Message

__all__ = ["OutboxAdmin", "OutboxStats", "enqueue_many", "enqueue_many_async"]

Built = tuple[Message, bytes]
Item = Draft | Mapping[str, Any]


class EnqueueMailer(Protocol):
    """What enqueue_many needs of its mailer (``FluxMail``)."""

    def create(self, *args: Any, **kwargs: Any) -> Draft: ...

    def _enqueue(self, built: Sequence[Built], send_at: object, connection: Any) -> list[str]: ...

    async def _enqueue_async(
        self, built: Sequence[Built], send_at: object, connection: Any
    ) -> list[str]: ...


class OutboxAdmin:
    """``mailer.outbox``: what an operator does to queued messages (also ``fluxmail outbox``)."""

    def __init__(self, store: Callable[[], AuditStore], retry_deadline: float | None) -> None:
        self._store = store
        self._deadline = retry_deadline or DEFAULT_DEADLINE

    def _outbox(self) -> Outbox:
        return self._store().outbox()

    def stats(self) -> OutboxStats:
        """Counts by state and the age of the oldest due message."""
        return self._outbox().stats()

    def retry(self, audit_id: str, force: bool = False) -> None:
        """Queue a ``failed`` or ``cancelled`` message again, due now, retried until the retry
        deadline from now; an ``unknown`` one only with ``force=True`` (it may have arrived)."""
        if not isinstance(force, bool):
            raise ConfigurationError(
                f"retry(force=...) must be True or False, not {shown(force)}",
                code="invalid_option",
            )
        deadline_at = time.time() + self._deadline
        self._outbox().retry(audit_id, deadline_at=deadline_at, force=force)

    def cancel(self, audit_id: str) -> None:
        """Withdraw a ``pending`` message: no worker will send it."""
        self._outbox().cancel(audit_id)


# -- enqueue_many: drafts or create() keyword dicts, written in batches ----------------------


def _check(call: str, items: object, batch_size: object, *, aio: bool = False) -> None:
    fits = isinstance(batch_size, int) and not isinstance(batch_size, bool)
    if not fits or not 1 <= batch_size <= 100_000:  # type: ignore[operator]
        raise ConfigurationError(
            f"batch_size must be a whole number between 1 and 100000, not {shown(batch_size)}",
            code="invalid_option",
        )
    iterable = isinstance(items, Iterable) or (aio and isinstance(items, AsyncIterable))
    if not iterable or isinstance(items, (str, bytes, bytearray, Mapping, Draft)):
        raise ConfigurationError(
            f"{call}() takes an iterable of drafts or create() keyword dicts (a list, a "
            f"generator...), not {type(items).__name__}",
            code="invalid_config",
        )


def _built(mailer: EnqueueMailer, item: object) -> Built:
    """A Draft, or the keyword arguments of ``create()`` (checked: a bad item is its own
    MessageError, never a TypeError)."""
    if isinstance(item, Draft):
        return item.message, item.as_bytes()
    item = create_args(mailer, item, "enqueue_many()")
    draft = mailer.create(**item)
    return draft.message, draft.as_bytes()


def enqueue_many(
    mailer: EnqueueMailer,
    items: Iterable[Item],
    *,
    send_at: object = None,
    connection: Any = None,
    batch_size: int = 500,
) -> list[str]:
    """Every item's audit id, in order. Each batch is built (a bad item raises its
    MessageError) before any of it is written; batches already written stay written (each
    commits, unless ``connection`` is given: then the caller's transaction decides)."""
    _check("enqueue_many", items, batch_size)
    due_at(send_at, time.time())  # a bad send_at fails before the first item is built
    ids: list[str] = []
    batch: list[Built] = []
    for item in items:
        batch.append(_built(mailer, item))
        if len(batch) >= batch_size:
            ids += mailer._enqueue(batch, send_at, connection)
            batch = []
    if batch:
        ids += mailer._enqueue(batch, send_at, connection)
    return ids


async def enqueue_many_async(
    mailer: EnqueueMailer,
    items: Iterable[Item] | AsyncIterable[Item],
    *,
    send_at: object = None,
    connection: Any = None,
    batch_size: int = 500,
) -> list[str]:
    """``enqueue_many`` on the caller's loop (an async iterable of items works too)."""
    _check("enqueue_many_async", items, batch_size, aio=True)
    due_at(send_at, time.time())
    ids: list[str] = []
    batch: list[Built] = []

    async def flush() -> None:
        nonlocal batch
        ids.extend(await mailer._enqueue_async(batch, send_at, connection))
        batch = []

    if isinstance(items, AsyncIterable):
        async for item in items:
            batch.append(_built(mailer, item))
            if len(batch) >= batch_size:
                await flush()
    else:
        for item in items:
            batch.append(_built(mailer, item))
            if len(batch) >= batch_size:
                await flush()
    if batch:
        await flush()
    return ids
