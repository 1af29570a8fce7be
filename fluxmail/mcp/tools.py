"""The MCP tools as plain functions over a mailer (no SDK here; ``server`` registers them).

Every message is built by ``mailer.create()``, so the rules of every other path apply
(addresses, header injection, sizes); the guard rails come on top. The mailer was built with
``origin="mcp"``, so each record a tool writes says where it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from fluxmail.audit.records import AuditRecord
from fluxmail.draft import Draft
from fluxmail.errors import DeliveryError, FluxMailException, MessageError
from fluxmail.mailer import FluxMail
from fluxmail.mcp.guards import Guards, SendBudget
from fluxmail.results import SendResult

__all__ = ["AgentTools"]

REVIEW = (
    "A person reviews it with `fluxmail drafts show {id}` and sends it with "
    "`fluxmail drafts send {id}`."
)


def _summary(record: AuditRecord, *, bcc: bool) -> dict[str, Any]:
    data = {
        "id": record.id,
        "status": record.status,
        "created_at": record.created_at.isoformat(),
        "origin": getattr(record, "origin", None),
        "sender": record.sender,
        "to": list(record.to),
        "cc": list(record.cc),
        "subject": record.subject,
    }
    if bcc:
        data["bcc"] = list(record.bcc or ())
    return data


def _part(message: EmailMessage, kind: str) -> str | None:
    body = message.get_body(preferencelist=(kind,))
    return None if body is None else str(body.get_content()).replace("\r\n", "\n")


class AgentTools:
    """draft_email, list_records, show_record, preview, send_draft and send_email."""

    def __init__(self, mailer: FluxMail, guards: Guards) -> None:
        self.mailer = mailer
        self.guards = guards
        self.budget = SendBudget(guards.max_sends)

    # -- building -----------------------------------------------------------------------

    def build(
        self,
        to: Sequence[str],
        cc: Sequence[str] | None,
        bcc: Sequence[str] | None,
        subject: str,
        text: str | None,
        html: str | None,
        attachments: Sequence[str] | None,
    ) -> Draft:
        """A validated message inside the guard rails (nothing stored, nothing sent)."""
        files = [self.guards.attachment(name) for name in attachments or ()]
        if text is None and html is None:
            raise MessageError("give text, html or both", code="invalid_body")
        html_body = html is not None
        draft = self.mailer.create(
            subject, list(to), html if html_body else text, cc=list(cc or ()),
            bcc=list(bcc or ()), attachments=files, html_body=html_body,
            plain_body=text if html_body else None,
        )  # fmt: skip
        m = draft.message
        self.guards.recipients(a.addr for a in (*m.to, *m.cc, *m.bcc))
        return draft

    def _preview(self, draft: Draft) -> dict[str, Any]:
        m = draft.message
        return {
            "message_id": m.message_id,
            "from": m.sender.addr,
            "to": [a.addr for a in m.to],
            "cc": [a.addr for a in m.cc],
            "bcc": [a.addr for a in m.bcc],
            "subject": m.subject,
            "attachments": [
                {"filename": a.filename, "size": len(a.content)} for a in m.attachments
            ],
            "size": len(draft.as_bytes()),
        }

    # -- the tools ----------------------------------------------------------------------

    def draft_email(self, **fields: Any) -> dict[str, Any]:
        draft = self.build(**fields)
        audit_id = draft.save_draft()
        hint = REVIEW.format(id=audit_id)
        if self.guards.allow_send:
            hint += " The send_draft tool sends it too."
        return {"id": audit_id, "status": "draft", **self._preview(draft), "next": hint}

    def list_records(self, status: str | None, limit: int) -> dict[str, Any]:
        found = self.mailer.audit.list(status=status, limit=limit, include_bcc=False)
        return {"records": [_summary(r, bcc=False) for r in found], "count": len(found)}

    def show_record(self, audit_id: str, include_bcc: bool) -> dict[str, Any]:
        record = self.mailer.audit.get(audit_id, include_bcc=include_bcc)
        data = record.to_dict()
        data.pop("folder", None)  # a path on the server's disk; not the agent's business
        data["origin"] = getattr(record, "origin", None)
        if not include_bcc:
            data.pop("bcc", None)
            hidden = set(self.mailer.audit.get(audit_id, include_bcc=True).bcc or ())
            data["recipients"] = {k: v for k, v in data["recipients"].items() if k not in hidden}
        return data

    def preview(self, audit_id: str) -> dict[str, Any]:
        eml = self.mailer.audit.get_eml(audit_id)
        message = message_from_bytes(eml, policy=policy.default)
        assert isinstance(message, EmailMessage)
        return {
            "id": audit_id,
            "headers": [[name, str(value)] for name, value in message.items()],
            "text": _part(message, "plain"),
            "html": _part(message, "html"),
            "attachments": [
                {
                    "filename": part.get_filename(),
                    "content_type": part.get_content_type(),
                    "size": len(part.get_payload(decode=True) or b""),
                }
                for part in message.iter_attachments()
            ],
            "size": len(eml),
        }

    def send_draft(self, audit_id: str) -> dict[str, Any]:
        record = self.mailer.audit.get(audit_id, include_bcc=True)
        self.guards.recipients((*record.to, *record.cc, *(record.bcc or ())))
        hidden = set(record.bcc or ())
        send = self.mailer.send_draft
        return self._counted(lambda: send(audit_id), hidden)

    def send_email(self, **fields: Any) -> dict[str, Any]:
        draft = self.build(**fields)
        return self._counted(draft.send, set())

    def _counted(self, send: Any, hidden: set[str]) -> dict[str, Any]:
        """One send against the budget: a replay, or an error raised before anything could
        have left (a bad record, the audit store), gives the slot back."""
        self.budget.take()
        try:
            result: SendResult = send()
        except DeliveryError:
            raise  # it tried: the slot stays used
        except FluxMailException:
            self.budget.give_back()
            raise
        if result.replayed:
            self.budget.give_back()
        data = result.to_dict()
        data["recipients"] = {k: v for k, v in data["recipients"].items() if k not in hidden}
        data["sends_left"] = self._left()
        return data

    def _left(self) -> int | None:
        cap = self.budget.cap
        return None if cap is None else max(0, cap - self.budget.used)
