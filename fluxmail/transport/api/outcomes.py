"""What one HTTP attempt means (``judge``) and the result of the last one (``Verdict.result``).

The table is in :mod:`fluxmail.transport.api.base`'s docstring; here it is code. A verdict says
whether another attempt may follow (``retry``) and what the message's outcome is if none does.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from fluxmail.errors import AuthenticationFailed, DeliveryError, OutcomeUnknown, Refused
from fluxmail.results import Attempt, MessageStatus, RecipientOutcome, RecipientStatus, ServerReply
from fluxmail.transport.api.client import Exchange
from fluxmail.transport.api.http import ApiReply
from fluxmail.transport.mail import Mail, TransportResult

__all__ = ["Kind", "Verdict", "judge", "judge_batch", "reply_text", "retry_after"]

RETRIED_STATUSES = frozenset({408, 429})  # and every 5xx
TEXT_LIMIT = 500
# What a non-2xx reply means, when a provider reads it differently from its status alone
# (ApiTransport.classify): Gmail's 403 rateLimitExceeded is a rate limit, not a refused key.
Kind = Literal["rate_limited", "unavailable", "authentication", "rejected"]


class Judged(Protocol):
    """What the verdicts read of the transport (fluxmail.transport.api.base.ApiTransport)."""

    @property
    def name(self) -> str: ...

    @property
    def idempotency_header(self) -> str | None: ...

    def message_id(self, mail: Mail, reply: ApiReply) -> str | None: ...

    def error_text(self, reply: ApiReply) -> str: ...

    def recipients(self, mail: Mail, reply: ApiReply) -> Mapping[str, RecipientStatus] | None: ...

    def scrub(self, text: str) -> str: ...

    def classify(self, reply: ApiReply) -> Kind | None: ...

    def split_batch(self, mails: Sequence[Mail], reply: ApiReply) -> list[ApiReply] | None: ...


@dataclass(frozen=True)
class Verdict:
    attempt: Attempt
    status: MessageStatus
    recipients: Mapping[str, RecipientStatus]
    error: DeliveryError | None = None
    retry: bool = False
    retry_after: float | None = None
    maybe_sent: bool = False
    final_reply: ServerReply | None = None
    provider_message_id: str | None = None

    def result(self, verdicts: Sequence[Verdict], elapsed: float) -> TransportResult:
        """The message's result after its last attempt (this one)."""
        attempts = tuple(v.attempt for v in verdicts)
        earlier = any(v.maybe_sent for v in verdicts)
        if earlier and self.status == "failed":
            # An earlier attempt may have been taken: a later failure does not undo that.
            unknown = OutcomeUnknown(
                "an earlier attempt may have reached the provider and the last one failed "
                f"({self.error.message if self.error else 'no reply'}); not resent",
                stage="end_of_data",
            )
            each = {a: RecipientStatus(a, "unknown", text=unknown.message) for a in self.recipients}
            return TransportResult("unknown", each, attempts, None, elapsed, unknown)
        return TransportResult(
            self.status,
            self.recipients,
            attempts,
            self.final_reply,
            elapsed,
            self.error,
            provider_message_id=self.provider_message_id,
        )


def _attempt(number: int, wall: float, elapsed: float, error: DeliveryError | None) -> Attempt:
    if error is None:
        return Attempt(number, wall, elapsed)
    return Attempt(number, wall, elapsed, error.message, error.code)


def _all(
    mail: Mail, status: RecipientOutcome, code: int | None, text: str
) -> dict[str, RecipientStatus]:
    return {a: RecipientStatus(a, status, code, None, text) for a in mail.envelope.recipients}


def judge(
    transport: Judged, mail: Mail, done: Exchange, wall: float, elapsed: float, number: int
) -> Verdict:
    """The verdict on one attempt: its outcome, and whether another may follow."""
    if done.response is None:
        return _network(transport, mail, done, _attempt_of(number, wall, elapsed))
    response = done.response
    headers = {k.lower(): v for k, v in response.headers.items()}
    return _judge_reply(transport, mail, ApiReply(response.status_code, headers, response.content),
                        Attempt(number, wall, elapsed))  # fmt: skip


def judge_batch(
    transport: Judged, mails: Sequence[Mail], done: Exchange, wall: float, elapsed: float,
    number: int,
) -> list[Verdict]:  # fmt: skip
    """The verdicts on one attempt of a batch request, one per message, in order. A reply
    for the whole request (an error, a lost connection) is every message's; a 2xx is split
    into each message's own reply (``split_batch``)."""
    response = done.response
    if response is None or not 200 <= response.status_code < 300:
        return [judge(transport, mail, done, wall, elapsed, number) for mail in mails]
    headers = {k.lower(): v for k, v in response.headers.items()}
    reply = ApiReply(response.status_code, headers, response.content)
    each = transport.split_batch(mails, reply)
    attempt = Attempt(number, wall, elapsed)
    if each is None:  # accepted, but the reply does not say what became of each message
        unknown = OutcomeUnknown(
            f"{transport.name} accepted the batch (HTTP {reply.status}) but its reply does not "
            "give one result per message; not resent",
            stage="end_of_data",
        )
        return [
            Verdict(_attempt(number, wall, elapsed, unknown), "unknown",
                    _all(mail, "unknown", reply.status, unknown.message), unknown)
            for mail in mails
        ]  # fmt: skip
    return [_judge_reply(transport, m, r, attempt) for m, r in zip(mails, each, strict=True)]


def _judge_reply(transport: Judged, mail: Mail, reply: ApiReply, attempt: Attempt) -> Verdict:
    if 200 <= reply.status < 300:
        return _accepted(transport, mail, reply, attempt)
    error, retry = _refusal(transport, reply)
    status: RecipientOutcome = "deferred" if retry else "rejected"
    # A refused key is the account's fault, not the recipients': no per-recipient code, so a
    # failover(...) hands them to the next member (failover/rules.py, _settled_by).
    code = None if isinstance(error, AuthenticationFailed) else reply.status
    return Verdict(
        Attempt(attempt.number, attempt.started_at, attempt.elapsed, error.message, error.code),
        "failed",
        _all(mail, status, code, error.message),
        error,
        retry=retry,
        retry_after=retry_after(reply.headers.get("retry-after")) if retry else None,
        final_reply=ServerReply(reply.status, error.message),
    )


def _attempt_of(number: int, wall: float, elapsed: float) -> tuple[int, float, float]:
    return number, wall, elapsed


def _network(
    transport: Judged, mail: Mail, done: Exchange, at: tuple[int, float, float]
) -> Verdict:
    error = done.error
    assert error is not None
    if not done.maybe_sent:
        status: RecipientOutcome = "deferred" if error.transient else "rejected"
        return Verdict(
            _attempt(*at, error), "failed", _all(mail, status, None, error.message), error,
            retry=error.transient,
        )  # fmt: skip
    header = transport.idempotency_header
    if header is not None:
        why = f"{error.message}; retried with the same {header}, which the API deduplicates"
    else:
        why = f"{error.message}; not resent (no idempotency key: a resend could deliver twice)"
    unknown = OutcomeUnknown(why, stage="end_of_data")
    return Verdict(
        _attempt(*at, unknown), "unknown", _all(mail, "unknown", None, unknown.message), unknown,
        retry=header is not None, maybe_sent=True,
    )  # fmt: skip


def _accepted(transport: Judged, mail: Mail, reply: ApiReply, attempt: Attempt) -> Verdict:
    provider_id = transport.message_id(mail, reply)
    text = f"accepted by {transport.name}" + (f" as {provider_id}" if provider_id else "")
    reported = transport.recipients(mail, reply)
    recipients = dict(reported) if reported is not None else _all(mail, "sent", reply.status, text)
    outcomes = {r.status for r in recipients.values()}
    if outcomes <= {"sent"}:
        status: MessageStatus = "queued"
    elif "sent" in outcomes:
        status = "partial"
    else:
        status = "failed"
    error = None
    if status == "failed":
        error = Refused(f"{transport.name} refused every recipient", code="all_recipients_refused")
    return Verdict(
        attempt, status, recipients, error,
        final_reply=ServerReply(reply.status, text), provider_message_id=provider_id,
    )  # fmt: skip


def _refusal(transport: Judged, reply: ApiReply) -> tuple[DeliveryError, bool]:
    """The error for a non-2xx reply, and whether a later attempt may succeed."""
    code = reply.status
    text = transport.scrub(transport.error_text(reply))[:TEXT_LIMIT]
    said = f"{transport.name} answered HTTP {code}: {text}"
    kind = transport.classify(reply) or _kind(code)
    if kind == "authentication":
        return AuthenticationFailed(
            f"{said}. Check FLUXMAIL_API_KEY (and that the key may send)", http_status=code
        ), False
    if kind in ("rate_limited", "unavailable"):
        return DeliveryError(
            said,
            code="rate_limited" if kind == "rate_limited" else "api_unavailable",
            transient=True,
            http_status=code,
        ), True
    if 300 <= code < 400:
        return DeliveryError(
            f"{transport.name} answered HTTP {code} (a redirect); fluxmail never follows one, "
            "it could carry the key elsewhere: set FLUXMAIL_API_BASE_URL to the API's address",
            code="api_redirect",
            transient=False,
            http_status=code,
        ), False
    refused = "message_too_large" if code == 413 else "api_rejected"
    return Refused(said, code=refused, http_status=code), False  # codes: also in refused_probe()


def _kind(code: int) -> Kind | None:
    """The status alone: 401/403 a refused key, 408/429/5xx worth another attempt."""
    if code in (401, 403):
        return "authentication"
    if code == 429:
        return "rate_limited"
    if code in RETRIED_STATUSES or code >= 500:
        return "unavailable"
    return None


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """RFC 9110 section 10.2.3: delay-seconds or an HTTP-date; None when absent or malformed."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def reply_text(parsed: Any, body: bytes) -> str:
    """A generic reading of an error body: ``message``, ``error`` or ``errors[].message``."""
    if isinstance(parsed, dict):
        for key in ("message", "error", "detail", "Message"):
            value = parsed.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return str(value["message"])
        errors = parsed.get("errors")
        if isinstance(errors, list):
            texts = [str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors]
            if texts:
                return "; ".join(texts)
    text = body.decode("utf-8", "replace").strip()
    return " ".join(text.split()) or "(no error text)"
