"""Bulk sending: many messages over several kept-open connections, politely rate-limited.

Messages are pulled lazily from any iterable (or async iterable) of drafts or ``create()``
keyword dicts, so memory stays flat whatever the count; outcomes stream back as they complete.
Each message follows the delivery retry rules and gets its own audit record.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from typing import TYPE_CHECKING, Any, Protocol

from fluxmail._lazy import lazy_module
from fluxmail.draft import Draft
from fluxmail.engine.handoff import Handoff
from fluxmail.engine.outcomes import BulkOutcome, BulkSummary, RateLimiter, is_rate
from fluxmail.engine.pipeline import Pipeline
from fluxmail.engine.pipeline_books import BulkBooks
from fluxmail.engine.sending import Engine
from fluxmail.errors import ConfigurationError, FluxMailException, MessageError, shown
from fluxmail.message.model import Message
from fluxmail.progress import ProgressDisplay, make_display

if TYPE_CHECKING:
    from fluxmail.engine import builders
    from fluxmail.engine.builders import Built
else:  # multiprocessing and the pool: loaded by a run with processes=N only (~8 ms)
    builders = lazy_module("fluxmail.engine.builders")

__all__ = ["BulkOutcome", "BulkRun", "BulkSender", "BulkSummary", "RateLimiter"]

Item = Draft | Mapping[str, Any]
MessageSource = Iterable[Item] | AsyncIterable[Item]


class Creates(Protocol):
    """Anything with the mailer's ``create()`` (its items are checked against it)."""

    def create(self, *args: Any, **kwargs: Any) -> Draft: ...


class BulkMailer(Protocol):
    """What a bulk run needs of its mailer (``FluxMail``): the engine and ``create()``."""

    @property
    def engine(self) -> Engine: ...

    def create(self, *args: Any, **kwargs: Any) -> Draft: ...

    def send_many(self, messages: MessageSource, **options: Any) -> BulkRun: ...

    def send_many_async(self, messages: MessageSource, **options: Any) -> BulkRun: ...


_DONE = object()


class BulkRun:
    """Iterate (or ``async for``) to get outcomes as they complete; ``summary`` at the end."""

    def __init__(
        self,
        mailer: BulkMailer,
        source: MessageSource,
        *,
        concurrency: int = 4,
        rate_limit: float | None = None,
        rate_limit_per_connection: float | None = None,
        max_messages_per_connection: int | None = None,
        progress: bool | None = None,
        dry_run: bool = False,
        processes: int = 1,
    ) -> None:
        _check_count("concurrency", concurrency, 256, code="invalid_concurrency")
        _check_count("processes", processes, MAX_PROCESSES)
        if processes > 1 and not isinstance(source, Iterable):
            raise ConfigurationError(
                "processes= needs a plain iterable of messages (an async iterable is read on "
                "the event loop)",
                code="invalid_option",
            )
        if max_messages_per_connection is not None:
            _check_count("max_messages_per_connection", max_messages_per_connection, None)
        _check_flag("progress", progress, optional=True)
        _check_flag("dry_run", dry_run)
        self._mailer = mailer
        self._source = source
        self._concurrency = concurrency
        limit = rate_limit if rate_limit is not None else mailer.engine.config.rate_limit
        self._limiter = RateLimiter(limit)
        # Validated now, before anything is sent.
        RateLimiter(rate_limit_per_connection, "rate_limit_per_connection")
        self._per_conn_rate = rate_limit_per_connection
        self._per_conn = max_messages_per_connection
        self._progress_wanted = progress
        self._dry_run = dry_run
        self._processes = processes
        self.summary = BulkSummary()
        self._out: asyncio.Queue[Any] | None = None
        self._task: asyncio.Future[None] | None = None
        self._display: ProgressDisplay | None = None
        self._handoff: Handoff | None = None
        self._streaming = True  # wait() only needs the summary

    # -- the async engine --------------------------------------------------------------------

    async def _start(self, handoff: bool = False) -> None:
        if self._out is not None:
            return
        self._display = make_display(self._progress_wanted, _length(self._source))
        self._out = asyncio.Queue(maxsize=1024)
        if handoff:  # the sync face: outcomes cross to the caller's thread (engine/handoff)
            self._handoff = Handoff(asyncio.get_running_loop())
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        assert self._out is not None
        started = time.monotonic()
        source: Any = self._source
        build = functools.partial(_build, self._mailer)
        pool, chunked = None, False
        if self._processes > 1:  # built in child processes, sent from here (engine/builders)
            pool = builders.Builders(
                self._processes, start=_start_builder, start_args=(type(self._mailer),),
                config=self._mailer.engine.config, build=_build_in_child, local=_built_already,
            )  # fmt: skip
            source, build = pool.built(source), functools.partial(_take, build)
            chunked = True
        engine = self._mailer.engine
        pipeline = Pipeline(
            engine, source, self._emit,
            books=BulkBooks(engine, build, dry=engine.dry(self._dry_run)),
            concurrency=self._concurrency, limiter=self._limiter,
            connection_rate=self._per_conn_rate,
            per_connection=self._per_conn, chunked=chunked,
        )  # fmt: skip
        try:
            await pipeline.run()
        finally:
            if pool is not None:
                await asyncio.to_thread(pool.close)  # joined: their CPU is the run's
            self.summary.elapsed = time.monotonic() - started
            if self._display is not None:
                self._display.close()
            await (self._handoff or self._out).put(_DONE)

    async def _emit(self, outcome: BulkOutcome) -> None:
        assert self._out is not None
        self.summary.add(outcome)
        if self._display is not None:
            self._display.advance(outcome.ok)
        if self._streaming:
            await (self._handoff or self._out).put(outcome)

    async def _next_batch(self, linger: float = 0.0) -> list[Any]:
        await self._start()
        assert self._out is not None
        batch = [await self._out.get()]
        if linger and self._out.qsize() < 64:
            await asyncio.sleep(linger)  # a cross-thread hop per outcome would cost more
        while batch[-1] is not _DONE and not self._out.empty():
            batch.append(self._out.get_nowait())
        return batch

    async def _ended(self) -> None:
        if self._task is not None:
            await asyncio.wait([self._task])

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
        runner = self._mailer.engine.runner
        try:
            if self._out is None:
                runner.run(self._start(handoff=True))
            if self._handoff is None:  # iterated after an async start: the loop's queue
                batches = iter(lambda: runner.run(self._next_batch(linger=0.002)), None)
            else:
                batches = iter(self._handoff.take, None)
            for batch in batches:
                if batch[-1] is _DONE and self._handoff is not None:
                    # Handed over from inside the run's last steps: let the task end, so an
                    # error that ended it is raised here, not lost.
                    runner.run(self._ended())
                yield from self._finished(batch)
                if batch[-1] is _DONE:
                    return
        except (KeyboardInterrupt, GeneratorExit):
            # Ctrl-C: stop cleanly; in-flight messages are recorded as unknown, never resent.
            runner.run(self._cancel())
            raise

    def wait(self) -> BulkSummary:
        """Run to the end (discarding streamed outcomes) and return the summary."""
        if self._out is None:
            self._streaming = False
            return self._mailer.engine.runner.run(self.wait_async())
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


# -- option parsing: every value is checked before anything is claimed or sent ----------------

MAX_PROCESSES = 64
_OPTIONS = (
    "concurrency",
    "dry_run",
    "max_messages_per_connection",
    "processes",
    "progress",
    "rate_limit",
    "rate_limit_per_connection",
)


def _check_count(name: str, value: object, high: int | None, code: str = "invalid_option") -> None:
    fits = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if not fits or (high is not None and value > high):  # type: ignore[operator]
        upper = f" and {high}" if high is not None else ""
        raise ConfigurationError(
            f"{name} must be a whole number between 1{upper}, not {shown(value)}", code=code
        )


def _check_flag(name: str, value: object, *, optional: bool = False) -> None:
    # A truthy string ("false") must not flip a switch.
    if not isinstance(value, bool) and not (optional and value is None):
        allowed = "True, False or None" if optional else "True or False"
        raise ConfigurationError(
            f"{name} must be {allowed}, not {shown(value)}", code="invalid_option"
        )


def _check_call(call: str, messages: object, options: Mapping[str, object]) -> None:
    unknown = sorted(set(options) - set(_OPTIONS), key=str)
    if unknown:
        raise ConfigurationError(
            f"{call}(): unknown option {unknown[0]!r}; allowed: {', '.join(_OPTIONS)}",
            code="invalid_option",
        )
    iterable = isinstance(messages, Iterable) or (
        call == "send_many_async" and isinstance(messages, AsyncIterable)
    )
    if not iterable or isinstance(messages, (str, bytes, bytearray, Mapping, Draft)):
        raise ConfigurationError(
            f"{call}() takes an iterable of drafts or create() keyword dicts (a list, a "
            f"generator...), not {type(messages).__name__}",
            code="invalid_config",
        )


def send_many(mailer: BulkMailer, messages: MessageSource, **options: Any) -> BulkRun:
    if isinstance(messages, AsyncIterable):
        raise ConfigurationError(
            "send_many() takes a plain iterable; use send_many_async() for an async iterable",
            code="invalid_config",
        )
    _check_call("send_many", messages, options)
    return BulkRun(mailer, messages, **options)


def send_many_async(mailer: BulkMailer, messages: MessageSource, **options: Any) -> BulkRun:
    _check_call("send_many_async", messages, options)
    return BulkRun(mailer, messages, **options)


class BulkSender:
    """Upstream-compatible batch API on top of ``send_many``."""

    def __init__(self, mailer: BulkMailer) -> None:
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
        tally = _Tally(on_success, on_error)
        for outcome in self._mailer.send_many(messages, concurrency=concurrency, progress=progress):
            tally.add(outcome)
        return tally.report()

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
        if not (max_per_second == 0 or is_rate(max_per_second)):
            raise ConfigurationError(
                f"max_per_second must be 0 (no limit) or a finite positive number, "
                f"not {shown(max_per_second)}",
                code="invalid_config",
            )
        run = self._mailer.send_many_async(
            messages, concurrency=concurrency, progress=progress,
            rate_limit=max_per_second or None,
        )  # fmt: skip
        tally = _Tally(on_success, on_error)
        async for outcome in run:  # callbacks as outcomes arrive; nothing accumulates
            tally.add(outcome)
        return tally.report()


class _Tally:
    """0.3.3's report dict and callbacks, fed one outcome at a time."""

    def __init__(self, on_success: Any, on_error: Any) -> None:
        for name, callback in (("on_success", on_success), ("on_error", on_error)):
            if callback is not None and not callable(callback):
                raise ConfigurationError(
                    f"{name} must be a function or None, not {type(callback).__name__}",
                    code="invalid_option",
                )
        self._on_success, self._on_error = on_success, on_error
        self.sent = self.failed = 0
        self.errors: list[tuple[int, FluxMailException]] = []

    def add(self, outcome: BulkOutcome) -> None:
        if outcome.error is None:
            self.sent += 1
            if self._on_success is not None:
                self._on_success(outcome.index, outcome.result)
            return
        self.failed += 1
        self.errors.append((outcome.index, outcome.error))
        if self._on_error is not None:
            self._on_error(outcome.index, outcome.error)

    def report(self) -> dict[str, Any]:
        total = self.sent + self.failed
        return {"sent": self.sent, "failed": self.failed, "total": total, "errors": self.errors}


# -- items: a Draft, or the keyword arguments of create() -----------------------------------


def _build(mailer: BulkMailer, item: Any) -> tuple[Message, bytes]:
    draft = item if isinstance(item, Draft) else mailer.create(**create_args(mailer, item))
    return draft.message, draft.as_bytes()


_builder: Any = None  # a builder process's mailer (send_many(processes=N))


def _start_builder(mailer_class: Any, config: Any) -> None:
    """In a builder process: the mailer that builds (``FluxMail._building``)."""
    builders.ignore_interrupts()
    global _builder
    _builder = mailer_class._building(config)


def _build_in_child(items: list[Any]) -> list[Built]:
    built = []
    for item in items:
        try:
            built.append(builders.Built(*_build(_builder, item)))
        except FluxMailException as exc:
            built.append(builders.Built(None, error=exc))
    return built


def _built_already(item: Any) -> bool:
    return isinstance(item, Draft)


def _take(build: Callable[[Any], tuple[Message, bytes]], item: Any) -> tuple[Message, bytes]:
    """An item from the builder processes: built there, or the item itself to build here."""
    if not isinstance(item, builders.Built):
        return build(item)
    if item.error is not None:
        raise item.error
    assert item.message is not None
    return item.message, item.data


def create_args(mailer: Creates, item: Any, caller: str = "send_many()") -> Mapping[str, Any]:
    """A bulk item that is not a Draft: the keyword arguments of ``create()``, checked here so
    a bad item is that item's MessageError, never a TypeError that ends the whole run.
    ``caller`` names the method in the message (enqueue_many() checks its items here too)."""
    if not isinstance(item, Mapping) or not all(isinstance(k, str) for k in item):
        raise MessageError(
            f"a message to {caller} must be a Draft or a mapping of create() arguments, "
            f"not {type(item).__name__}",
            code="invalid_message",
        )
    names, required = _create_arg_names(type(mailer).create)
    if names.issuperset(item) and required.issubset(item):
        return item  # the usual item: the two subset tests cost less than the differences
    unknown, missing = sorted(set(item) - names), sorted(required - set(item))
    if unknown or missing:
        what = f"unknown: {', '.join(unknown)}" if unknown else f"missing: {', '.join(missing)}"
        raise MessageError(
            f"a {caller} message has bad create() arguments ({what})",
            code="invalid_message",
        )
    return item


@functools.cache
def _create_arg_names(create: Any) -> tuple[frozenset[str], frozenset[str]]:
    """create()'s argument names, and the required ones (from its code object: importing
    ``inspect`` for this would cost every bulk run's start more than the whole lookup)."""
    code = create.__code__
    names = code.co_varnames[1 : code.co_argcount]  # after self
    required = names[: len(names) - len(create.__defaults__ or ())]
    return frozenset(names), frozenset(required)
