"""The send protocol, once for single and bulk sends: record -> claim -> replay? -> transmit ->
finish, and what each outcome means for the caller.

The callers differ only in how the audit steps run: a single send claims and finishes in a
worker thread, a bulk run claims a batch in one commit and finishes in batches. Both pass
their claim results to ``after_claim`` and their finish functions to ``transmit``.

- Replay rule: a claim that finds the key already used returns the stored result; nothing
  is sent again.
- Interrupt rule: a message error found before MAIL FROM is ``failed`` (nothing went out);
  any other interruption once transmission started is ``unknown`` and never resent. Messages
  sharing one request (``transmit_many``: an API's batch endpoint) share that rule.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from fluxmail.audit.records import Claim
from fluxmail.engine.outgoing import Outgoing
from fluxmail.errors import DeliveryError, FluxMailException, MessageError, OutcomeUnknown, Refused
from fluxmail.results import SendResult
from fluxmail.transport.mail import TransportResult


@dataclass(frozen=True)
class Outcome:
    """A message's end: the result (None when it could not be built or sent at all) and the
    error ``send()`` raises for it (None for sent, partial, queued, dry runs and replays)."""

    result: SendResult | None
    error: FluxMailException | None = None

    @classmethod
    def of(cls, result: SendResult, transport_error: DeliveryError | None = None) -> Outcome:
        return cls(result, failure(result, transport_error))


class Recorder(Protocol):
    """Where outcomes are recorded. ``finish_now`` runs synchronously: an interrupted send
    (Ctrl-C, a cancelled task) records its outcome before the interruption goes on."""

    async def finish(self, out: Outgoing, result: SendResult) -> None: ...

    def finish_now(self, out: Outgoing, result: SendResult) -> None: ...


def after_claim(out: Outgoing, claim: Claim | None) -> Outcome | None:
    """The replay and dry-run rules; None when the message is to be transmitted."""
    if claim is not None:
        if claim.replay is not None:
            return Outcome(claim.replay)
        out.audit_id = claim.audit_id
    if out.dry:
        return Outcome(out.dry_result())
    return None


async def transmit(
    out: Outgoing, send: Callable[[], Awaitable[TransportResult]], recorder: Recorder
) -> Outcome:
    """Hand the message to the transport and record what happened, whatever happened."""
    try:
        sent = await send()
    except MessageError as exc:
        # Found while preparing the SMTP commands or the request: before anything went out.
        recorder.finish_now(out, out.unsent(str(exc)))
        return Outcome(None, exc)
    except BaseException as exc:
        recorder.finish_now(out, out.interrupted(exc))
        raise
    return await _finished(out, sent, recorder)


async def transmit_many(
    outs: Sequence[Outgoing],
    send: Callable[[], Awaitable[Sequence[TransportResult | MessageError]]],
    recorder: Recorder,
) -> list[Outcome]:
    """``transmit`` for messages that share one request (an API's batch endpoint): the
    interrupt rule covers every one of them; ``send`` gives one result per message, or the
    MessageError that kept that message out of any request."""
    try:
        sent = await send()
    except MessageError as exc:
        for out in outs:
            recorder.finish_now(out, out.unsent(str(exc)))
        return [Outcome(None, exc) for _ in outs]
    except BaseException as exc:
        for out in outs:
            recorder.finish_now(out, out.interrupted(exc))
        raise
    done: list[Outcome] = []
    for out, each in zip(outs, sent, strict=True):
        if isinstance(each, MessageError):
            recorder.finish_now(out, out.unsent(str(each)))
            done.append(Outcome(None, each))
        else:
            done.append(await _finished(out, each, recorder))
    return done


async def _finished(out: Outgoing, sent: TransportResult, recorder: Recorder) -> Outcome:
    result = out.result(sent)
    await recorder.finish(out, result)
    return Outcome.of(result, sent.error)


def failure(result: SendResult, error: DeliveryError | None) -> FluxMailException | None:
    """What ``send()`` raises for a result: nothing for sent/partial/queued/dry_run results and
    replays; otherwise the transport's error (carrying the result) or one made from the result."""
    if result.ok or result.replayed:
        return None
    if result.status == "unknown":
        if isinstance(error, OutcomeUnknown):
            return error.with_result(result)
        return OutcomeUnknown("the outcome of the send is unknown", result=result)
    statuses = {r.status for r in result.recipients.values()}
    if statuses == {"rejected"} and (error is None or isinstance(error, Refused)):
        first = next(iter(result.recipients.values()))
        return Refused(
            f"every recipient was refused (first: {first.code} {first.text})",
            code="all_recipients_refused" if error is None else error.code,
            smtp_code=first.code, smtp_text=first.text, enhanced_status=first.enhanced_status,
            transient=False, result=result,
        )  # fmt: skip
    if error is not None:
        return error.with_result(result)
    return DeliveryError("every recipient was deferred; nothing was delivered", result=result)
