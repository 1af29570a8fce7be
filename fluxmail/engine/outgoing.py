"""A message on its way out: built bytes, SMTP envelope and audit record id, in three steps.

``prepare`` (build, no I/O) -> the audit claim (by the caller, alone or in a batch) ->
``transmit`` (the backend). ``FluxMail`` runs them for one message; ``fluxmail.bulk`` runs them
as a pipeline so claims are group-committed while other messages are on the wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from fluxmail.results import RecipientStatus, SendResult

if TYPE_CHECKING:
    from fluxmail.audit.store import OutboundRecord
    from fluxmail.config.resolve import Config
    from fluxmail.draft import Draft
    from fluxmail.errors import DeliveryError
    from fluxmail.transport.local import Backend
    from fluxmail.transport.smtp.pool import ConnectionPool
    from fluxmail.transport.smtp.retry import Envelope
    from fluxmail.transport.smtp.session import Staged


@dataclass
class Outgoing:
    draft: Draft
    data: bytes
    env: Envelope
    names: Mapping[str, str]  # envelope address -> the address as the caller gave it
    dry: bool
    audit_id: str | None = None

    @classmethod
    def prepare(cls, draft: Draft, *, dry: bool) -> Outgoing:
        env, names = envelope(draft)
        return cls(draft, draft.as_bytes(), env, names, dry)

    def record(self, config: Config) -> OutboundRecord:
        from fluxmail.audit.log import outbound_record

        status = "dry_run" if self.dry else "sending"
        return outbound_record(config, self.draft.message, self.data, status)

    def staged(self) -> Staged:
        from fluxmail.transport.smtp.session import Staged

        return Staged(self.env.sender, self.env.recipients, self.data, self.env.smtputf8)

    def dry_result(self) -> SendResult:
        return SendResult("dry_run", self.draft.message_id, audit_id=self.audit_id)

    def unsent(self, reason: str) -> SendResult:
        """Claimed but never transmitted (a run stopped first): failed, nothing went out."""
        return self._all("failed", reason)

    def interrupted(self, exc: BaseException) -> SendResult:
        """Stopped mid-transmission: what reached the server is unknown; never resent."""
        return self._all("unknown", f"interrupted: {type(exc).__name__}")

    def _all(self, status: str, text: str) -> SendResult:
        recipients = {
            a: RecipientStatus(a, "unknown" if status == "unknown" else "deferred", text=text)
            for a in self.names.values()
        }
        return SendResult(
            status,  # type: ignore[arg-type]
            self.draft.message_id,
            recipients=recipients,
            audit_id=self.audit_id,
        )

    async def transmit(
        self, backend: Backend, pool: ConnectionPool | None = None, then: Staged | None = None
    ) -> tuple[SendResult, DeliveryError | None]:
        """Hand the bytes to the backend; results keyed by the addresses as given."""
        result, error = await backend.deliver(self.env, self.data, self.draft.message, pool, then)
        names = self.names
        if any(k != v for k, v in names.items()):  # IDNA: report the addresses as given
            recipients = {
                names.get(a, a): replace(r, address=names.get(a, a))
                for a, r in result.recipients.items()
            }
            result = replace(result, recipients=recipients)
        if self.audit_id is not None:
            result = replace(result, audit_id=self.audit_id)
        return result, error


def envelope(draft: Draft) -> tuple[Envelope, dict[str, str]]:
    """The SMTP envelope (IDNA domains unless SMTPUTF8 is needed) and envelope -> given address."""
    from fluxmail.transport.smtp.retry import Envelope

    message = draft.message
    utf8 = message.needs_smtputf8
    names = {a.envelope(smtputf8=utf8): a.addr for a in message.envelope_recipients}
    return Envelope(message.sender.envelope(smtputf8=utf8), tuple(names), utf8), names
