"""An outbox row's way out and back: the message rebuilt from its stored model, and the
settlement its try ends with (docs/outbox.md, "Retries").

- Retried: recipients still deferred (a 4xx, or a connection that failed before anything was
  accepted) after a transient failure, while ``now + backoff`` is before the row's deadline;
  only those recipients are tried again. Backoff: ``retry_delay * 2**tries`` capped at
  ``retry_max_delay``, jittered (half to full).
- Final: a 5xx, a MessageError or a permanent DeliveryError (failed / partial), ``unknown``
  (never retried), or the deadline reached.
- Every try is merged into the record: recipients accepted earlier stay sent, the attempts of
  all tries are kept (numbered on), and the status is computed over every recipient.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from fluxmail.audit.outbox import Delivery, Settlement
from fluxmail.config.resolve import Config
from fluxmail.engine.outgoing import Outgoing
from fluxmail.engine.protocol import Outcome
from fluxmail.errors import DeliveryError, MessageError, OutcomeUnknown
from fluxmail.message.stored import message_from_spec
from fluxmail.results import Attempt, MessageStatus, RecipientStatus, SendResult, overall_status
from fluxmail.transport.mail import Envelope, Mail

__all__ = ["backoff", "build", "settlement"]


def build(row: Delivery) -> Outgoing:
    """The row's message as ``Outgoing.prepare`` builds it (IDNA / SMTPUTF8 envelope),
    narrowed to the recipients a partial try left; MessageError if the model does not fit."""
    message = message_from_spec(row.spec, row.attachments)
    out = Outgoing.prepare(message, row.eml, dry=False)
    if row.recipients is not None:
        wanted = set(row.recipients)
        names = {env: given for env, given in out.names.items() if env in wanted}
        if not names:
            raise MessageError(
                "the stored recipients to retry are not the message's",
                code="invalid_stored_message",
            )
        env = out.mail.envelope
        envelope = Envelope(env.sender, tuple(names), env.smtputf8)
        out = Outgoing(Mail(envelope, row.eml, message), names, False)
    out.audit_id = row.audit_id
    return out


def backoff(config: Config, tries: int) -> float:
    base = min(config.retry_delay * 2**tries, config.retry_max_delay)
    return random.uniform(base / 2, base)


def settlement(
    row: Delivery,
    result: SendResult | None,
    outcome: Outcome,
    config: Config,
    names: Mapping[str, str] | None = None,
) -> Settlement:
    """How this try ends the row: final, or back to ``pending`` for the deferred ones.
    ``names``: the try's envelope address -> the address as the caller gave it."""
    if result is None:  # never sent: the model could not be rebuilt, or a MessageError
        error = outcome.error
        text = str(error) if error is not None else "not sent"
        recipients = {
            a: RecipientStatus(a, "rejected", text=text)
            for a in (row.recipients or _addresses(row.spec))
        }
        result = SendResult("failed", _message_id(row), recipients, audit_id=row.audit_id)
    merged = _merged(row, result)
    deferred = [a for a, r in result.recipients.items() if r.status == "deferred"]
    if deferred and result.status != "unknown" and _transient(outcome.error):
        retry_at = time.time() + backoff(config, row.tries)
        if retry_at < row.deadline_at:
            by_given = {given: env for env, given in (names or {}).items()}
            again = tuple(by_given.get(a, a) for a in deferred)
            return Settlement(row.audit_id, merged, retry_at=retry_at, retry_recipients=again)
    return Settlement(row.audit_id, merged)


def _transient(error: Any) -> bool:
    if error is None:
        return True
    if isinstance(error, (MessageError, OutcomeUnknown)):
        return False
    return isinstance(error, DeliveryError) and error.transient


def _merged(row: Delivery, result: SendResult) -> SendResult:
    recipients = {a: RecipientStatus(**r) for a, r in row.prior_recipients.items()}
    recipients.update(result.recipients)
    prior = [Attempt(**a) for a in row.prior_attempts]
    attempts = (
        *prior,
        *(replace(a, number=len(prior) + i + 1) for i, a in enumerate(result.attempts)),
    )
    return replace(
        result, recipients=recipients, attempts=attempts, status=_status(result, recipients)
    )


def _status(result: SendResult, recipients: dict[str, RecipientStatus]) -> MessageStatus:
    if result.status in ("unknown", "queued", "dry_run"):
        return result.status
    return overall_status(recipients)


def _addresses(spec: Any) -> list[str]:
    found: list[str] = []
    for key in ("to", "cc", "bcc"):
        for item in spec.get(key, []) if hasattr(spec, "get") else []:
            found.append(item[0] if isinstance(item, list) and item else str(item))
    return found


def _message_id(row: Delivery) -> str:
    spec = row.spec
    value = spec.get("message_id") if hasattr(spec, "get") else None
    return str(value) if value else f"<{row.audit_id}@outbox.invalid>"
