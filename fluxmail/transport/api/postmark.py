"""Postmark: ``POST /email`` with a JSON body and the ``X-Postmark-Server-Token`` header.

API reference: https://postmarkapp.com/developer/api/email-api (``From``, ``To`` (required),
``Cc``, ``Bcc`` as comma-separated strings, 50 recipients in all; ``Subject``, ``TextBody``,
``HtmlBody``, ``ReplyTo``, ``Headers`` as ``[{"Name", "Value"}]``, ``Attachments`` with
``Name``, ``Content`` in base64, ``ContentType`` and ``ContentID`` (``cid:...``) for inline
images, and ``MessageStream``: FLUXMAIL_API_MESSAGE_STREAM, default ``outbound``). The reply
carries ``MessageID``; errors (422) carry ``ErrorCode`` and ``Message``
(https://postmarkapp.com/developer/api/overview#error-codes). Postmark documents no
idempotency key: a request that may have reached it is ``unknown``.

Bulk runs use ``POST /email/batch`` (https://postmarkapp.com/developer/api/email-api#send-batch-
emails): a JSON array of up to 500 of the same bodies, at most 50 MB; the 200 reply is an array
with one result per message, in order (``ErrorCode`` 0 and its ``MessageID``, else the error).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fluxmail.results import RecipientStatus
from fluxmail.transport.api import mapping
from fluxmail.transport.api.base import ApiReply, ApiRequest, ApiTransport
from fluxmail.transport.mail import Mail

__all__ = ["TRANSPORT", "PostmarkTransport"]

MAX_RECIPIENTS = 50


class PostmarkTransport(ApiTransport):
    name = "postmark"
    default_base_url = "https://api.postmarkapp.com"
    batch_path = "/email/batch"
    batch_limit = 500

    @property
    def message_stream(self) -> str:
        return self.config.api_options.get("message_stream") or "outbound"

    def _auth(self) -> dict[str, str]:
        return {"X-Postmark-Server-Token": self.api_key, "Accept": "application/json"}

    def request(self, mail: Mail, idempotency_key: str | None) -> ApiRequest:
        m = mail.message
        if not m.to:
            raise mapping.unsupported(self.name, "a message without a To recipient (Cc/Bcc only)")
        mapping.limit(self.name, [*m.to, *m.cc, *m.bcc], MAX_RECIPIENTS, "recipients")
        body: dict[str, Any] = {
            "From": mapping.formatted(m.sender),
            "To": ", ".join(mapping.formatted(a) for a in m.to),
            "Subject": m.subject,
        }
        for key, group in (("Cc", m.cc), ("Bcc", m.bcc), ("ReplyTo", m.reply_to)):
            if group:
                body[key] = ", ".join(mapping.formatted(a) for a in group)
        if m.text is not None:
            body["TextBody"] = m.text
        if m.html is not None:
            body["HtmlBody"] = m.html
        body["Headers"] = [{"Name": n, "Value": v} for n, v in mapping.headers(m)]
        files = [*m.attachments, *m.inline_images]
        if files:
            body["Attachments"] = [self._file(item) for item in files]
        body["MessageStream"] = self.message_stream
        return ApiRequest("POST", "/email", headers=self._auth(), json=body)

    @staticmethod
    def _file(item: Any) -> dict[str, str]:
        found = {"Name": item.filename, "Content": mapping.b64(item.content)}
        found["ContentType"] = item.mimetype
        if item.content_id:
            found["ContentID"] = "cid:" + mapping.content_id(item.content_id)
        return found

    def message_id(self, mail: Mail, reply: ApiReply) -> str | None:
        data = reply.json()
        return str(data["MessageID"]) if isinstance(data, dict) and data.get("MessageID") else None

    def recipients(self, mail: Mail, reply: ApiReply) -> dict[str, RecipientStatus] | None:
        """A 200 whose ``ErrorCode`` is not 0 accepted nothing (the API reference's rule)."""
        data = reply.json()
        code = data.get("ErrorCode", 0) if isinstance(data, dict) else 0
        if not code:
            return None
        text = self.scrub(self.error_text(reply))
        return {
            a: RecipientStatus(a, "rejected", reply.status, None, text)
            for a in mail.envelope.recipients
        }

    def split_batch(self, mails: Sequence[Mail], reply: ApiReply) -> list[ApiReply] | None:
        data = reply.json()
        if not isinstance(data, list) or len(data) != len(mails):
            return None
        return [ApiReply(reply.status, reply.headers, json.dumps(item).encode()) for item in data]

    def error_text(self, reply: ApiReply) -> str:
        data = reply.json()
        if isinstance(data, dict) and "Message" in data:
            return f"{data['Message']} (ErrorCode {data.get('ErrorCode')})"
        return super().error_text(reply)

    async def probe(self) -> str:
        """``GET /server``: the server the token belongs to."""
        reply = await self.call(ApiRequest("GET", "/server", self._auth()))
        if not 200 <= reply.status < 300:
            raise self.refused_probe(reply)
        data = reply.json()
        name = data.get("Name") if isinstance(data, dict) else None
        return f"Postmark accepted the server token (server {name!r}, stream {self.message_stream})"


TRANSPORT = PostmarkTransport
