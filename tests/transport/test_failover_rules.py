"""The failover rule (``rules.handoff``: may a message go to the next member?) as a table, and
the circuit breaker with a hand-driven clock. Pure: no network."""

from __future__ import annotations

import pytest

from fluxmail.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DeliveryError,
    OutcomeUnknown,
    Refused,
    SendTimeout,
    TLSFailure,
)
from fluxmail.results import RecipientStatus
from fluxmail.transport.failover.breaker import Breaker
from fluxmail.transport.failover.rules import handoff, member_failed, merge
from fluxmail.transport.mail import TransportResult

A, B = "a@example.com", "b@example.com"


def _settled(error: DeliveryError, status: str) -> TransportResult:
    """What the SMTP retry loop reports when ``error`` stopped the session for everyone."""
    text = error.smtp_text or error.message
    each = {
        r: RecipientStatus(r, status, error.smtp_code, error.enhanced_status, text)  # type: ignore[arg-type]
        for r in (A, B)
    }
    return TransportResult("failed", each, error=error)


def _e(
    cls: type[DeliveryError], stage: str, code: int | None = None, **kw: object
) -> DeliveryError:
    return cls("x", stage=stage, smtp_code=code, smtp_text=f"{code} x" if code else None, **kw)  # type: ignore[arg-type]


CASES = [
    # (why, result, recipients the next member may take)
    ("closed port", _settled(_e(ConnectionFailed, "connect"), "deferred"), (A, B)),
    ("untrusted certificate", _settled(_e(TLSFailure, "tls"), "rejected"), (A, B)),
    ("421 at greeting", _settled(_e(ConnectionFailed, "greeting", 421), "deferred"), (A, B)),
    ("554 at greeting", _settled(_e(Refused, "greeting", 554), "rejected"), (A, B)),
    ("535 bad login", _settled(_e(AuthenticationFailed, "auth", 535), "rejected"), (A, B)),
    ("454 at AUTH", _settled(_e(AuthenticationFailed, "auth", 454, transient=True), "deferred"),
     (A, B)),
    ("451 to MAIL", _settled(_e(DeliveryError, "mail", 451, transient=True), "deferred"), (A, B)),
    ("421 to MAIL", _settled(_e(ConnectionFailed, "mail", 421), "deferred"), (A, B)),
    ("550 to MAIL", _settled(_e(Refused, "mail", 550), "rejected"), ()),
    ("lost at RCPT", _settled(_e(ConnectionFailed, "rcpt"), "deferred"), (A, B)),
    ("451 to DATA", _settled(_e(DeliveryError, "data", 451, transient=True), "deferred"), (A, B)),
    ("554 to DATA", _settled(_e(Refused, "data", 554), "rejected"), ()),
    ("lost after the dot", _settled(_e(OutcomeUnknown, "end_of_data"), "unknown"), ()),
    ("timeout after the dot", TransportResult("unknown", {A: RecipientStatus(A, "unknown")},
     error=_e(OutcomeUnknown, "end_of_data")), ()),
    ("451 after the dot", _settled(_e(DeliveryError, "end_of_data", 451, transient=True),
     "deferred"), ()),
    ("no SMTPUTF8 here", _settled(DeliveryError("x", code="smtputf8_required", stage="mail",
     transient=False), "rejected"), (A, B)),
    ("every RCPT 550", TransportResult("failed", {A: RecipientStatus(A, "rejected", 550),
     B: RecipientStatus(B, "rejected", 550)}), ()),
    ("every RCPT 451", TransportResult("failed", {A: RecipientStatus(A, "deferred", 451),
     B: RecipientStatus(B, "deferred", 451)}), (A, B)),
    ("one 550, one 451: only the deferred one moves", TransportResult("failed", {
     A: RecipientStatus(A, "rejected", 550), B: RecipientStatus(B, "deferred", 451)}), (B,)),
    ("one accepted, one deferred: never a second copy", TransportResult("partial", {
     A: RecipientStatus(A, "sent", 250), B: RecipientStatus(B, "deferred", 451)}), ()),
    ("sent", TransportResult("sent", {A: RecipientStatus(A, "sent", 250)}), ()),
    ("timeout before the dot", _settled(_e(SendTimeout, "rcpt"), "deferred"), (A, B)),
]  # fmt: skip


@pytest.mark.parametrize(("why", "result", "expected"), CASES, ids=[c[0] for c in CASES])
def test_handoff(why: str, result: TransportResult, expected: tuple[str, ...]) -> None:
    assert handoff(result) == expected, why


def test_a_refused_recipient_or_message_does_not_rest_the_member() -> None:
    assert member_failed(_settled(_e(ConnectionFailed, "connect"), "deferred"))
    assert member_failed(_settled(_e(OutcomeUnknown, "end_of_data"), "unknown"))
    assert not member_failed(_settled(_e(Refused, "data", 554), "rejected"))
    assert not member_failed(TransportResult("failed", {A: RecipientStatus(A, "rejected", 550)}))


def test_merge_keeps_the_first_members_refusals_and_numbers_attempts_across() -> None:
    first = TransportResult(
        "failed",
        {A: RecipientStatus(A, "rejected", 550), B: RecipientStatus(B, "deferred", 451)},
        transport="smtp://a.example:587",
    )
    second = TransportResult("sent", {B: RecipientStatus(B, "sent", 250)}, transport="memory")
    merged = merge(first, second)
    assert merged.status == "partial" and merged.transport == "memory"
    assert merged.recipients[A].status == "rejected" and merged.recipients[B].status == "sent"


def test_breaker_rests_then_lets_one_probe_through() -> None:
    now = [100.0]
    breaker = Breaker(30.0, clock=lambda: now[0])
    assert breaker.allow() and breaker.allow()  # closed: everyone
    breaker.record(True)
    assert str(breaker.state) == "open" and not breaker.allow()
    now[0] += 29.9
    assert not breaker.allow()
    now[0] += 0.2
    assert breaker.allow()  # the probe
    assert str(breaker.state) == "half_open"
    assert not breaker.allow()  # only one
    breaker.record(True)  # the probe failed: rest again
    assert not breaker.allow()
    now[0] += 30.1
    assert breaker.allow()
    breaker.record(False)
    assert str(breaker.state) == "closed" and breaker.allow()


def test_an_abandoned_probe_lets_the_next_message_probe() -> None:
    now = [0.0]
    breaker = Breaker(5.0, clock=lambda: now[0])
    breaker.record(True)
    now[0] = 6.0
    assert breaker.allow()
    breaker.abandon()  # the probing send was cancelled
    assert breaker.allow()
    assert str(breaker.state) == "half_open"
