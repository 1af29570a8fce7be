"""Resend: ``POST /emails`` with a JSON body and ``Authorization: Bearer KEY``.

API reference: https://resend.com/docs/api-reference/emails/send-email (fields ``from``, ``to``
(at most 50), ``cc``, ``bcc``, ``reply_to``, ``subject``, ``html``, ``text``, ``headers``,
``attachments`` with ``content`` in base64, ``filename``, ``content_type`` and ``content_id``
for inline images: https://resend.com/docs/dashboard/emails/embed-inline-images). The reply is
``{"id": ...}``; errors are ``{"statusCode", "name", "message"}``. Resend deduplicates by the
``Idempotency-Key`` header for 24 hours (https://resend.com/docs/dashboard/emails/idempotency-keys),
so a request that may have reached it is retried with the same key: the Message-ID.

Bulk runs use ``POST /emails/batch`` (https://resend.com/docs/api-reference/emails/send-batch-
emails): a JSON array of up to 100 of the same bodies, without attachments (the batch endpoint
takes none: such a message is sent alone). The reply is ``{"data": [{"id": ...}, ...]}`` in
order; in the default (strict) validation mode one invalid email fails the whole request. The
batch endpoint honours ``Idempotency-Key`` too, so a batch whose reply was lost is retried
with the same key (one derived from its messages' Message-IDs).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fluxmail.transport.api import mapping
from fluxmail.transport.api.base import ApiReply, ApiRequest, ApiTransport
from fluxmail.transport.mail import Mail

__all__ = ["TRANSPORT", "ResendTransport"]

MAX_TO = 50


class ResendTransport(ApiTransport):
    name = "resend"
    default_base_url = "https://api.resend.com"
    idempotency_header = "Idempotency-Key"
    batch_path = "/emails/batch"
    batch_limit = 100

    def request(self, mail: Mail, idempotency_key: str | None) -> ApiRequest:
        m = mail.message
        mapping.limit(self.name, m.to, MAX_TO, "To recipients")
        body: dict[str, Any] = {
            "from": mapping.formatted(m.sender),
            "to": [mapping.formatted(a) for a in m.to],
            "subject": m.subject,
        }
        for key, group in (("cc", m.cc), ("bcc", m.bcc), ("reply_to", m.reply_to)):
            if group:
                body[key] = [mapping.formatted(a) for a in group]
        if m.html is not None:
            body["html"] = m.html
        # An empty text keeps Resend from writing a plain part the message does not have.
        body["text"] = m.text if m.text is not None else ""
        body["headers"] = mapping.single_headers(self.name, m)
        files = [*m.attachments, *m.inline_images]
        if files:
            body["attachments"] = [self._file(item) for item in files]
        auth = {"Authorization": f"Bearer {self.api_key}"}
        return ApiRequest("POST", "/emails", headers=auth, json=body)

    @staticmethod
    def _file(item: Any) -> dict[str, str]:
        found = {"filename": item.filename, "content": mapping.b64(item.content)}
        found["content_type"] = item.mimetype
        if item.content_id:
            found["content_id"] = mapping.content_id(item.content_id)
        return found

    def message_id(self, mail: Mail, reply: ApiReply) -> str | None:
        data = reply.json()
        return str(data["id"]) if isinstance(data, dict) and data.get("id") else None

    def batchable(self, planned: ApiRequest) -> bool:
        return "attachments" not in planned.json

    def split_batch(self, mails: Sequence[Mail], reply: ApiReply) -> list[ApiReply] | None:
        data = reply.json()
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or len(items) != len(mails):
            return None
        return [ApiReply(reply.status, reply.headers, json.dumps(item).encode()) for item in items]

    def error_text(self, reply: ApiReply) -> str:
        data = reply.json()
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            name = data.get("name")
            return f"{name}: {data['message']}" if name else str(data["message"])
        return super().error_text(reply)

    async def probe(self) -> str:
        """``GET /domains``: lists the domains a full-access key may send from."""
        reply = await self.call(
            ApiRequest("GET", "/domains", {"Authorization": f"Bearer {self.api_key}"})
        )
        data = reply.json()
        if (
            reply.status == 401
            and isinstance(data, dict)
            and data.get("name") == "restricted_api_key"
        ):
            return "Resend accepted the API key (a sending-only key: it cannot list domains)"
        if not 200 <= reply.status < 300:
            raise self.refused_probe(reply)
        domains = data.get("data", []) if isinstance(data, dict) else []
        names = ", ".join(str(d.get("name")) for d in domains if isinstance(d, dict)) or "none"
        return f"Resend accepted the API key; domains: {names}"


TRANSPORT = ResendTransport
