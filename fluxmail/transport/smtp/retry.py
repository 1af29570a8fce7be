"""The retry loop: one message, many recipients, every attempt accounted for.

Policy (docs/delivery.md, "What is retried"): retry only transient failures (connection, 4xx)
with exponential backoff and jitter; never retry a 5xx; retry only deferred recipients, never one
already accepted; a loss after the final "." is ``unknown`` and is never resent (RFC 1047).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from fluxmail.errors import ConnectionFailed, DeliveryError, OutcomeUnknown
from fluxmail.results import (
    Attempt,
    RecipientOutcome,
    RecipientStatus,
    ServerReply,
    overall_status,
)
from fluxmail.transport.mail import Envelope, TransportResult
from fluxmail.transport.smtp.pool import ConnectionPool, LanePool
from fluxmail.transport.smtp.session import Staged, TransactionResult

MAX_BACKOFF = 300.0
TOO_MANY_RECIPIENTS = (452, 552)  # RFC 5321 4.5.3.1.10: move the rest to a new transaction


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 0
    retry_delay: float = 1.0
    deadline: float | None = None

    def backoff(self, retry: int) -> float:
        """Exponential backoff with jitter (half to full of the doubled delay)."""
        base = min(self.retry_delay * (2 ** (retry - 1)), MAX_BACKOFF)
        return random.uniform(base / 2, base)


@dataclass
class _Progress:
    """Mutable bookkeeping for one delivery; frozen into a TransportResult at the end."""

    pending: list[str]
    final: dict[str, RecipientStatus] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    final_reply: ServerReply | None = None
    error: DeliveryError | None = None
    deferred: dict[str, ServerReply] = field(default_factory=dict)  # from the last transaction

    def settle(self, status: RecipientOutcome, addrs: Sequence[str], exc: DeliveryError) -> None:
        for addr in addrs:
            self.final[addr] = RecipientStatus(
                addr,
                status,
                exc.smtp_code,
                exc.enhanced_status,
                exc.smtp_text or exc.message,
            )
        self.pending = [a for a in self.pending if a not in self.final]

    def absorb(self, tr: TransactionResult) -> bool:
        """Record one transaction; True when it made progress but hit a too-many-recipients cap."""
        final, deferred = self.final, {}
        data_reply = tr.data_reply
        accepted = capped = False
        for addr, reply in tr.recipients.items():  # one pass: the bulk hot path
            code = reply.code
            if 200 <= code < 300:
                if data_reply is not None:
                    final[addr] = _status(addr, "sent", data_reply)
                accepted = True
            elif 400 <= code < 500 or code == 552:  # 552 to RCPT: temporary (RFC 5321)
                deferred[addr] = reply
                capped = capped or code in TOO_MANY_RECIPIENTS
            else:
                final[addr] = _status(addr, "rejected", reply)
        if data_reply is not None:
            self.final_reply = data_reply
        self.pending = [a for a in self.pending if a not in final]
        self.deferred = deferred
        return capped and accepted and data_reply is not None

    def result(self, started: float, transport: str | None = None) -> TransportResult:
        for addr in self.pending:  # still deferred after the last attempt
            reply = self.deferred.get(addr)
            if reply is not None:
                self.final[addr] = _status(addr, "deferred", reply)
            elif self.error is not None:
                self.settle("deferred", [addr], self.error)
        return TransportResult(
            status=overall_status(self.final),
            recipients=self.final,
            attempts=tuple(self.attempts),
            final_reply=self.final_reply,
            elapsed=time.monotonic() - started,
            error=self.error,
            transport=transport,
        )


def _status(addr: str, status: RecipientOutcome, reply: ServerReply) -> RecipientStatus:
    return RecipientStatus(addr, status, reply.code, reply.enhanced_status, reply.text)


async def _transaction(
    pool: ConnectionPool | LanePool, mail: Staged, then: Staged | None = None
) -> TransactionResult:
    session, reused = await pool.acquire()
    healthy = False
    try:
        if mail.smtputf8 and not session.supports_smtputf8:
            # A fault of this server, not of the message (one with SMTPUTF8 takes it): a
            # DeliveryError carrying the result, never retried; nothing was sent.
            raise DeliveryError(
                f"an address has a non-ASCII local part, which needs SMTPUTF8 (RFC 6531), "
                f"and {session.where} does not offer it; nothing was sent",
                code="smtputf8_required",
                transient=False,
                stage="mail",
            )
        try:
            result = await session.send_staged(mail, then)
        except ConnectionFailed:
            if not reused:
                raise
            # An idle connection the server closed: reopen once, transparently.
            await pool.release(session, healthy=False)
            session, reused = await pool.acquire(fresh=True)
            result = await session.send_staged(mail)
        healthy = True
        return result
    finally:
        await pool.release(session, healthy=healthy)


async def deliver(
    pool: ConnectionPool | LanePool,
    env: Envelope,
    data: bytes,
    policy: RetryPolicy,
    then: Staged | None = None,
    *,
    transport: str | None = None,
    current: Staged | None = None,
) -> TransportResult:
    """Deliver ``data`` to every envelope recipient; the result carries the last error.

    ``then`` (bulk) is the message the same connection sends next, primed on the first attempt;
    ``current``, this message as staged when it was primed itself (its commands are reused).
    ``transport`` names the server in the result.
    """
    started = time.monotonic()
    progress = _Progress(pending=list(env.recipients))
    retries = 0
    while progress.pending:
        number = len(progress.attempts) + 1
        t0, wall = time.monotonic(), time.time()
        if number == 1 and current is not None:
            mail = current
        else:  # a retry goes to the deferred recipients only
            mail = Staged(env.sender, tuple(progress.pending), data, env.smtputf8)
        try:
            first = then if number == 1 else None
            capped = progress.absorb(await _transaction(pool, mail, first))
        except OutcomeUnknown as exc:
            progress.attempts.append(_attempt(number, wall, t0, exc))
            progress.error = exc
            progress.settle("unknown", progress.pending, exc)
            break
        except DeliveryError as exc:
            progress.attempts.append(_attempt(number, wall, t0, exc))
            progress.error, progress.deferred = exc, {}
            if not exc.transient:
                progress.settle("rejected", progress.pending, exc)
                break
            capped = False
        else:
            progress.attempts.append(_attempt(number, wall, t0, None))
        if not progress.pending:
            break
        if capped:
            continue
        retries += 1
        if retries > policy.max_retries:
            break
        delay = policy.backoff(retries)
        if policy.deadline is not None and time.monotonic() - started + delay > policy.deadline:
            break
        await asyncio.sleep(delay)
    return progress.result(started, transport)


def _attempt(number: int, wall: float, t0: float, exc: DeliveryError | None) -> Attempt:
    elapsed = time.monotonic() - t0
    if exc is None:
        return Attempt(number, wall, elapsed)
    return Attempt(number, wall, elapsed, exc.message, exc.code, exc.smtp_code, exc.smtp_text)
