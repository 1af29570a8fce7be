"""Bulk sending: many messages over several kept-open connections, politely rate-limited.

Messages are pulled lazily from any iterable (or async iterable) of drafts or ``create()``
keyword dicts, so memory stays flat whatever the count; outcomes stream back as they complete.
Each message follows the delivery retry rules and gets its own audit record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fluxmail.draft import Draft
from fluxmail.errors import ConfigurationError, FluxMailException

if TYPE_CHECKING:
    from fluxmail.mailer import FluxMail
    from fluxmail.pool import ConnectionPool
    from fluxmail.progress import ProgressDisplay
    from fluxmail.results import SendResult

Item = Draft | Mapping[str, Any]
MessageSource = Iterable[Item] | AsyncIterable[Item]

_DONE = object()


@dataclass(frozen=True)
class BulkOutcome:
    """One message's outcome: its position in the input, the result, and the error if any."""

    index: int
    result: SendResult | None
    error: FluxMailException | None = None

    @property
    def status(self) -> str:
        return self.result.status if self.result is not None else "failed"

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BulkSummary:
    total: int = 0
    sent: int = 0
    partial: int = 0
    failed: int = 0
    unknown: int = 0
    dry_run: int = 0
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.total / self.elapsed if self.elapsed > 0 else 0.0

    def add(self, outcome: BulkOutcome) -> None:
        self.total += 1
        status = outcome.status if outcome.status != "queued" else "sent"
        setattr(self, status, getattr(self, status) + 1)


class RateLimiter:
    """Spaces starts evenly at ``per_second`` (shared by every worker)."""

    def __init__(self, per_second: float | None) -> None:
        if per_second is not None and not per_second > 0:
            raise ConfigurationError(
                f"rate_limit must be a positive number of messages per second, not {per_second!r}",
                code="invalid_rate_limit",
            )
        self._interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        start = max(self._next, now)
        self._next = start + self._interval
        if start > now:
            await asyncio.sleep(start - now)


def _outcome(index: int, result: SendResult, error: Any) -> BulkOutcome:
    from fluxmail.mailer import raise_for

    try:
        raise_for(result, error)
    except FluxMailException as exc:
        return BulkOutcome(index, result, exc)
    return BulkOutcome(index, result)


class BulkRun:
    """Iterate (or ``async for``) to get outcomes as they complete; ``summary`` at the end."""

    def __init__(
        self,
        mailer: FluxMail,
        source: MessageSource,
        *,
        concurrency: int = 4,
        rate_limit: float | None = None,
        max_messages_per_connection: int | None = None,
        progress: bool | None = None,
        dry_run: bool = False,
    ) -> None:
        if not 1 <= concurrency <= 256:
            raise ConfigurationError(
                f"concurrency must be between 1 and 256, not {concurrency!r}",
                code="invalid_concurrency",
            )
        self._mailer = mailer
        self._source = source
        self._concurrency = concurrency
        limit = rate_limit if rate_limit is not None else mailer.config.rate_limit
        self._limiter = RateLimiter(limit)
        self._per_conn = max_messages_per_connection
        self._progress_wanted = progress
        self._dry_run = dry_run
        self.summary = BulkSummary()
        self._out: asyncio.Queue[Any] | None = None
        self._task: asyncio.Future[None] | None = None
        self._display: ProgressDisplay | None = None

    # -- the async engine --------------------------------------------------------------------

    async def _start(self) -> None:
        if self._out is not None:
            return
        from fluxmail.progress import make_display

        self._display = make_display(self._progress_wanted, _length(self._source))
        self._out = asyncio.Queue(maxsize=1024)
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        assert self._out is not None
        started = time.monotonic()
        work: asyncio.Queue[Any] = asyncio.Queue(maxsize=self._concurrency * 2)
        workers = [asyncio.ensure_future(self._worker(work)) for _ in range(self._concurrency)]
        try:
            await self._feed(work)
            await asyncio.gather(*workers)
        except BaseException:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        finally:
            self.summary.elapsed = time.monotonic() - started
            if self._display is not None:
                self._display.close()
            await self._out.put(_DONE)

    async def _feed(self, work: asyncio.Queue[Any]) -> None:
        index = 0
        if isinstance(self._source, AsyncIterable):
            async for item in self._source:
                await work.put((index, item))
                index += 1
        else:
            for item in self._source:
                await work.put((index, item))
                index += 1
        for _ in range(self._concurrency):
            await work.put(None)

    async def _worker(self, work: asyncio.Queue[Any]) -> None:
        assert self._out is not None
        pool = self._private_pool()
        sent_on_conn = 0
        try:
            while (job := await work.get()) is not None:
                await self._limiter.wait()
                index, item = job
                outcome = await self._one(index, item, pool)
                self.summary.add(outcome)
                if self._display is not None:
                    self._display.advance(outcome.ok)
                await self._out.put(outcome)
                sent_on_conn += 1
                if pool is not None and self._per_conn and sent_on_conn >= self._per_conn:
                    await pool.close()
                    sent_on_conn = 0
        finally:
            if pool is not None:
                await pool.close()

    def _private_pool(self) -> ConnectionPool | None:
        make = getattr(self._mailer._backend, "private_pool", None)
        return make() if make is not None else None

    async def _one(self, index: int, item: Item, pool: ConnectionPool | None) -> BulkOutcome:
        try:
            draft = item if isinstance(item, Draft) else self._mailer.create(**item)
            result, error = await self._mailer._deliver_one(draft, self._dry_run, pool)
        except FluxMailException as exc:
            return BulkOutcome(index, None, exc)
        return _outcome(index, result, error)

    async def _next_batch(self) -> list[Any]:
        await self._start()
        assert self._out is not None
        batch = [await self._out.get()]
        while batch[-1] is not _DONE and not self._out.empty():
            batch.append(self._out.get_nowait())
        return batch

    async def _cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _finished(self, batch: list[Any]) -> Iterator[BulkOutcome]:
        for item in batch:
            if item is _DONE:
                assert self._task is not None
                if self._task.done() and not self._task.cancelled():
                    exc = self._task.exception()
                    if exc is not None:
                        raise exc
                return
            yield item

    # -- the sync face -----------------------------------------------------------------------

    def __iter__(self) -> Iterator[BulkOutcome]:
        runner = self._mailer._runner
        try:
            while True:
                batch = runner.run(self._next_batch())
                yield from self._finished(batch)
                if batch[-1] is _DONE:
                    return
        except (KeyboardInterrupt, GeneratorExit):
            # Ctrl-C: stop cleanly; in-flight messages are recorded as unknown, never resent.
            runner.run(self._cancel())
            raise

    def wait(self) -> BulkSummary:
        """Run to the end (discarding streamed outcomes) and return the summary."""
        for _ in self:
            pass
        return self.summary

    # -- the async face ----------------------------------------------------------------------

    async def __aiter__(self) -> AsyncIterator[BulkOutcome]:
        try:
            while True:
                batch = await self._next_batch()
                for outcome in self._finished(batch):
                    yield outcome
                if batch[-1] is _DONE:
                    return
        except BaseException:
            await self._cancel()
            raise

    async def wait_async(self) -> BulkSummary:
        async for _ in self:
            pass
        return self.summary

    def __await__(self) -> Generator[Any, None, BulkSummary]:
        return self.wait_async().__await__()


def _length(source: object) -> int | None:
    try:
        return len(source)  # type: ignore[arg-type]
    except TypeError:
        return None


def send_many(mailer: FluxMail, messages: MessageSource, **options: Any) -> BulkRun:
    if isinstance(messages, AsyncIterable):
        raise ConfigurationError(
            "send_many() takes a plain iterable; use send_many_async() for an async iterable",
            code="invalid_config",
        )
    return BulkRun(mailer, messages, **options)


def send_many_async(mailer: FluxMail, messages: MessageSource, **options: Any) -> BulkRun:
    return BulkRun(mailer, messages, **options)


class BulkSender:
    """Upstream-compatible batch API on top of ``send_many``."""

    def __init__(self, mailer: FluxMail) -> None:
        self._mailer = mailer

    def send_batch(
        self,
        messages: Iterable[Mapping[str, Any]],
        *,
        on_success: Any = None,
        on_error: Any = None,
        progress: bool = True,
        concurrency: int = 4,
    ) -> dict[str, Any]:
        """Send every message; returns ``{"sent", "failed", "total", "errors"}`` like 0.3.3."""
        run = self._mailer.send_many(messages, concurrency=concurrency, progress=progress)
        return _tally(iter(run), on_success, on_error)

    async def send_batch_async(
        self,
        messages: Iterable[Mapping[str, Any]],
        *,
        on_success: Any = None,
        on_error: Any = None,
        progress: bool = True,
        max_per_second: float = 0,
        concurrency: int = 4,
    ) -> dict[str, Any]:
        if max_per_second < 0:
            raise ConfigurationError("max_per_second must be >= 0", code="invalid_config")
        run = self._mailer.send_many_async(
            messages, concurrency=concurrency, progress=progress,
            rate_limit=max_per_second or None,
        )  # fmt: skip
        outcomes = [o async for o in run]
        return _tally(iter(outcomes), on_success, on_error)


def _tally(outcomes: Iterator[BulkOutcome], on_success: Any, on_error: Any) -> dict[str, Any]:
    sent = failed = 0
    errors: list[tuple[int, FluxMailException]] = []
    for outcome in outcomes:
        if outcome.error is None:
            sent += 1
            if on_success is not None:
                on_success(outcome.index, outcome.result)
        else:
            failed += 1
            errors.append((outcome.index, outcome.error))
            if on_error is not None:
                on_error(outcome.index, outcome.error)
    return {"sent": sent, "failed": failed, "total": sent + failed, "errors": errors}
