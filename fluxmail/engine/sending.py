"""The engine of one mailer: its configuration, transport, audit log and event loop, and the
single send (the bulk pipeline in ``pipeline.py`` runs the same protocol in batches)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from fluxmail._lazy import lazy_module
from fluxmail.audit.log import AuditLog
from fluxmail.config.resolve import Config
from fluxmail.engine.loop import LoopThread
from fluxmail.errors import FluxMailException
from fluxmail.transport.base import Transport
from fluxmail.transport.registry import make_transport

if TYPE_CHECKING:
    from fluxmail.engine import outgoing, protocol
    from fluxmail.engine.outgoing import Outgoing
    from fluxmail.engine.protocol import Outcome
    from fluxmail.message.model import Message
    from fluxmail.results import SendResult
else:  # the send path: loaded by the first send, not to build a mailer (cold start)
    outgoing = lazy_module("fluxmail.engine.outgoing")
    protocol = lazy_module("fluxmail.engine.protocol")


class Engine:
    def __init__(self, config: Config, log: logging.Logger) -> None:
        self.config = config
        self.log = log
        self.transport: Transport = make_transport(config)
        self.audit = AuditLog(config)
        self.runner = LoopThread()

    def dry(self, requested: bool) -> bool:
        return requested or self.config.dry_run

    async def send(self, message: Message, data: bytes, *, dry_run: bool) -> Outcome:
        """One message through the protocol; never raises for a delivery fault."""
        out = outgoing.Outgoing.prepare(message, data, dry=self.dry(dry_run))
        claim = None
        if self.audit.enabled:
            # In a worker thread: a PostgreSQL round trip or a SQLite lock held by another
            # process must not stall the event loop (other sends, the caller's own tasks).
            record = out.record(self.config)
            claim = await asyncio.to_thread(lambda: self.audit.store().claim(record))
        done = protocol.after_claim(out, claim)
        if done is not None:
            return done
        return await protocol.transmit(
            out, lambda: self.transport.send(out.mail), SingleRecorder(self)
        )

    def finish(self, out: Outgoing, result: SendResult) -> None:
        if out.audit_id is None:
            return
        try:
            self.audit.store().finish(out.audit_id, result)
        except FluxMailException as exc:
            # The message went out; raising now would invite a resend. The record stays
            # 'sending' and becomes 'unknown' when the store is next opened.
            self.log.error("could not record the outcome of %s: %s", out.audit_id, exc)

    def close(self) -> None:
        """Close this loop's connections, the loop thread and the audit store."""
        if self.runner.started:
            self.runner.run(self.transport.aclose())
        self.runner.stop()
        self.audit.close()


class SingleRecorder:
    """Outcomes recorded one at a time (``engine.finish``, in a worker thread): a single
    send's, and a saved draft's."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def finish(self, out: Outgoing, result: SendResult) -> None:
        if out.audit_id is not None:
            await asyncio.to_thread(self._engine.finish, out, result)

    def finish_now(self, out: Outgoing, result: SendResult) -> None:
        self._engine.finish(out, result)
