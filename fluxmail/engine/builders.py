"""``send_many(processes=N)``: messages built in N child processes, sent from this one.

Building (validation, templates, MIME, DKIM signing) is the CPU-bound part of a bulk run that
needs no connection and no audit store, so it is the part that can leave the event loop's
process. The children only turn ``create()`` keyword dicts into a message and its bytes; the
parent claims, marks, sends and records every message exactly as without them, so every
guarantee of a bulk run holds (docs/bulk.md, "Several processes").

- The children are spawned, not forked: the mailer's loop thread may hold locks at fork time.
  Each gets the mailer's configuration without the secrets it does not need (logins, tokens);
  the DKIM key stays, since a child signs.
- Order is kept: chunks of items go out in order and are read back in order.
- Memory stays flat: a few chunks are in flight, each capped in bytes once the size of a built
  message is known.
- A chunk that cannot be pickled (a file object in an item, say) is built here instead; an
  item's MessageError comes back as that item's failure, as without processes.
- What a child runs (the mailer's ``create()``) belongs to the API layer, which passes it in
  (fluxmail.bulk): the engine imports no mailer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import pickle
import signal
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

from fluxmail.errors import FluxMailException

if TYPE_CHECKING:
    from fluxmail.config.model import Config
    from fluxmail.message.model import Message

CHUNK = 64  # items per task: few enough pickles and wake-ups, small enough to interleave
CHUNK_BYTES = 1 << 20  # and at most about this many built bytes per chunk
IN_FLIGHT = 2  # chunks queued per process: each process finds its next one ready


@dataclasses.dataclass(frozen=True)
class Built:
    """An item built in a child: the message and its wire bytes, or why it could not be."""

    message: Message | None
    data: bytes = b""
    error: FluxMailException | None = None


def child_config(config: Config) -> Config:
    """What a child needs to build: the configuration without logins and tokens."""
    return dataclasses.replace(
        config,
        password=None,
        audit_password=None,
        oauth_client_secret=None,
        oauth_refresh_token=None,
        token_provider=None,
        ssl_context_override=None,
    )


def ignore_interrupts() -> None:
    """In a child: Ctrl-C reaches the whole process group, and it is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Builders:
    """A pool of builder processes for one bulk run; ``close()`` joins them."""

    def __init__(
        self,
        processes: int,
        *,
        start: Callable[..., None],
        start_args: tuple[Any, ...] = (),
        config: Config,
        build: Callable[[list[Any]], list[Built]],
        local: Callable[[Any], bool],
    ) -> None:
        """``start(*start_args, child_config(config))`` runs once in each child, ``build(items)``
        per chunk there (importable functions: a spawned child finds them by name); items that
        ``local`` picks (built already) never leave this process."""
        self._pool = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=start,
            initargs=(*start_args, child_config(config)),
        )
        self._build = build
        self._local = local
        self._depth = processes * IN_FLIGHT
        self._chunk = CHUNK

    async def built(self, items: Iterable[Any]) -> AsyncIterator[list[Any]]:
        """The items in order, in chunks; each a ``Built`` or (built already, or in a chunk
        that could not be pickled) the item itself, for the run to build as without
        processes."""
        source = iter(items)
        waiting: deque[tuple[Future[list[Built]] | None, list[Any]]] = deque()
        while True:
            while len(waiting) < self._depth and (chunk := self._next_chunk(source)):
                waiting.append((self._submit(chunk), chunk))
            if not waiting:
                return
            future, chunk = waiting.popleft()
            results = await self._results(future, chunk)
            if results is None:  # not picklable: the run builds these items itself
                yield chunk
                continue
            self._resize(results)
            yield results

    def _next_chunk(self, source: Iterator[Any]) -> list[Any]:
        chunk: list[Any] = []
        for item in source:
            chunk.append(item)
            if self._local(item) or len(chunk) >= self._chunk:
                break  # one built already travels alone, to keep the order
        return chunk

    def _submit(self, chunk: list[Any]) -> Future[list[Built]] | None:
        if len(chunk) == 1 and self._local(chunk[0]):
            return None
        try:
            return self._pool.submit(self._build, chunk)
        except RuntimeError:  # the pool is shut down (the run is stopping)
            return None

    async def _results(
        self, future: Future[list[Built]] | None, chunk: list[Any]
    ) -> list[Built] | None:
        if future is None:
            return None
        try:
            return await asyncio.wrap_future(future)
        except (pickle.PicklingError, TypeError, AttributeError):
            return None  # an item that cannot cross to a process: built here instead

    def _resize(self, results: list[Built]) -> None:
        """Chunks of large messages get smaller, so built bytes in flight stay bounded."""
        sizes = [len(r.data) for r in results if r.message is not None]
        if sizes:
            average = max(sum(sizes) // len(sizes), 1)
            self._chunk = max(1, min(CHUNK, CHUNK_BYTES // average))

    def close(self) -> None:
        """Stop the children and wait for them (a stopped run cancels what was queued)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
