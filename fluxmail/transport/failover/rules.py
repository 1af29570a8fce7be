"""May a message go to the next member? Pure functions over a member's ``TransportResult``.

Only when the message cannot have been accepted (docs/delivery.md, "Failover and round-robin"):
the connection, TLS or login failed, or the server answered 421, 454 or another 4xx before the
final "." (to MAIL FROM, RCPT or DATA). Never after the final ".": that outcome is ``unknown``
and stays where it is (RFC 1047). A recipient refused with 5xx is not offered elsewhere, and once
any recipient was accepted the message is not sent again.
"""

from __future__ import annotations

from fluxmail.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DeliveryError,
    OutcomeUnknown,
    Stage,
    TLSFailure,
)
from fluxmail.results import Attempt, RecipientStatus, overall_status
from fluxmail.transport.mail import TransportResult

__all__ = ["handoff", "may_fail_over", "member_failed", "merge"]

# Before MAIL FROM: nothing about the message was said yet (RSET/NOOP check a reused connection).
BEFORE_MAIL: frozenset[Stage] = frozenset(
    {"connect", "tls", "greeting", "ehlo", "starttls", "auth", "rset", "noop"}
)
# The transaction's commands before the final ".": a refusal there delivers nothing.
BEFORE_DOT: frozenset[Stage] = frozenset({"mail", "rcpt", "data"})
_UNWELL = (ConnectionFailed, TLSFailure, AuthenticationFailed)


def may_fail_over(error: DeliveryError | None) -> bool:
    """Does ``error`` prove the message was not accepted, for a reason another member may not
    share? None: only per-recipient deferrals (4xx to RCPT), which accepted nothing."""
    if error is None:
        return True
    if isinstance(error, OutcomeUnknown) or error.stage == "end_of_data":
        return False
    if error.stage in BEFORE_MAIL:
        return True  # connect, TLS, greeting (421/554), EHLO, STARTTLS, AUTH (535, 454)
    if error.stage in BEFORE_DOT or error.stage is None:
        # 421, a 4xx (to MAIL FROM, DATA), a lost connection, "log in first" (530), or a
        # server without SMTPUTF8; a 5xx refusal of the sender or the data is the message's.
        return isinstance(error, _UNWELL) or error.transient or error.code == "smtputf8_required"
    return False


def _settled_by(status: RecipientStatus, error: DeliveryError | None) -> bool:
    """Marked refused by the session's error (retry.py settles them so), not by its own RCPT."""
    if error is None or status.status != "rejected":
        return False
    same = (error.smtp_code, error.enhanced_status, error.smtp_text or error.message)
    return (status.code, status.enhanced_status, status.text) == same


def handoff(result: TransportResult) -> tuple[str, ...]:
    """The recipients the next member may take; () when the message stays with this one."""
    if result.status != "failed" or not may_fail_over(result.error):
        return ()
    statuses = result.recipients
    if any(r.status in ("sent", "unknown") for r in statuses.values()):
        return ()  # something was accepted, or may have been: never a second copy
    return tuple(
        a for a, r in statuses.items() if r.status == "deferred" or _settled_by(r, result.error)
    )


def member_failed(result: TransportResult) -> bool:
    """Is the member unwell (rest it), as opposed to refusing this message or recipient?"""
    error = result.error
    if error is None:
        return False
    if isinstance(error, OutcomeUnknown):
        return True  # the connection broke after the final "."
    return may_fail_over(error) and error.code != "smtputf8_required"


def merge(earlier: TransportResult | None, later: TransportResult) -> TransportResult:
    """One result for a message two members saw: the later member's word on the recipients it
    took, the earlier's on the rest; attempts numbered across both."""
    if earlier is None:
        return later
    recipients = {**earlier.recipients, **later.recipients}
    attempts = tuple(
        Attempt(n, a.started_at, a.elapsed, a.error, a.error_code, a.smtp_code, a.smtp_text)
        for n, a in enumerate((*earlier.attempts, *later.attempts), 1)
    )
    status = overall_status(recipients)
    if status == "sent" and later.status == "queued":
        status = "queued"  # an HTTP API member took it: accepted, final delivery unknown
    return TransportResult(
        status=status,
        recipients=recipients,
        attempts=attempts,
        final_reply=later.final_reply or earlier.final_reply,
        elapsed=earlier.elapsed + later.elapsed,
        error=later.error,
        transport=later.transport,
        provider_message_id=later.provider_message_id,
    )
