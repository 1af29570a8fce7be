"""A message on its way out: the transport's ``Mail``, the caller's address spellings and the
audit record id; and the ``SendResult`` it ends as, built once from the transport's result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fluxmail.audit.log import outbound_record
from fluxmail.audit.records import OutboundRecord
from fluxmail.config.resolve import Config
from fluxmail.message.model import Message
from fluxmail.results import RecipientStatus, SendResult
from fluxmail.transport.mail import Envelope, Mail, TransportResult


@dataclass
class Outgoing:
    mail: Mail
    names: Mapping[str, str]  # envelope address -> the address as the caller gave it
    dry: bool
    audit_id: str | None = None

    @classmethod
    def prepare(cls, message: Message, data: bytes, *, dry: bool) -> Outgoing:
        """The SMTP envelope (IDNA domains unless SMTPUTF8 is needed) and who is who."""
        utf8 = message.needs_smtputf8
        names = {a.envelope(smtputf8=utf8): a.addr for a in message.envelope_recipients}
        envelope = Envelope(message.sender.envelope(smtputf8=utf8), tuple(names), utf8)
        return cls(Mail(envelope, data, message), names, dry)

    @property
    def message_id(self) -> str:
        return self.mail.message.message_id

    def record(self, config: Config) -> OutboundRecord:
        status = "dry_run" if self.dry else "sending"
        return outbound_record(config, self.mail.message, self.mail.data, status)

    def dry_result(self) -> SendResult:
        return SendResult("dry_run", self.message_id, audit_id=self.audit_id)

    def unsent(self, reason: str) -> SendResult:
        """Claimed but never transmitted (a run stopped first): failed, nothing went out."""
        return self._all("failed", "deferred", reason)

    def interrupted(self, exc: BaseException) -> SendResult:
        """Stopped mid-transmission: what reached the server is unknown; never resent."""
        return self._all("unknown", "unknown", f"interrupted: {type(exc).__name__}")

    def _all(self, status: str, each: str, text: str) -> SendResult:
        recipients = {a: RecipientStatus(a, each, text=text) for a in self.names.values()}  # type: ignore[arg-type]
        return SendResult(status, self.message_id, recipients, audit_id=self.audit_id)  # type: ignore[arg-type]

    def result(self, sent: TransportResult) -> SendResult:
        """The caller's result: recipients under the addresses as given (IDNA domains are
        shown as typed), with the message and audit ids."""
        names = self.names
        recipients = {
            names.get(a, a): r if names.get(a, a) == a else _renamed(r, names.get(a, a))
            for a, r in sent.recipients.items()
        }
        return SendResult(
            status=sent.status,
            message_id=self.message_id,
            recipients=recipients,
            attempts=sent.attempts,
            final_reply=sent.final_reply,
            elapsed=sent.elapsed,
            audit_id=self.audit_id,
            transport=sent.transport,
            provider_message_id=sent.provider_message_id,
        )


def _renamed(status: RecipientStatus, address: str) -> RecipientStatus:
    return RecipientStatus(address, status.status, status.code, status.enhanced_status, status.text)
