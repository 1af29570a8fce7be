"""SendGrid v3: ``POST /v3/mail/send`` with a JSON body and ``Authorization: Bearer KEY``.

API reference: https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send (one
``personalizations`` entry with ``to`` (required), ``cc`` and ``bcc``, each address unique
across the three, 1000 recipients at most; ``from``; ``reply_to`` or ``reply_to_list``;
``subject``; ``content`` with text/plain first, each value at least one character;
``attachments`` with ``content`` in base64, ``type``, ``filename``, ``disposition`` and
``content_id`` for inline images; ``headers``). Success is ``202 Accepted`` with the message's
id in the ``X-Message-Id`` header; errors are ``{"errors": [{"message", "field", "help"}]}``.
SendGrid documents no idempotency key: a request that may have reached it is ``unknown``.
"""

from __future__ import annotations

from typing import Any

from fluxmail.message.addresses import Address
from fluxmail.transport.api import mapping
from fluxmail.transport.api.base import ApiReply, ApiRequest, ApiTransport
from fluxmail.transport.mail import Mail

__all__ = ["TRANSPORT", "SendGridTransport"]

MAX_RECIPIENTS = 1000


def _party(address: Address) -> dict[str, str]:
    found = {"email": mapping.email(address)}
    if address.name:
        found["name"] = address.name
    return found


class SendGridTransport(ApiTransport):
    name = "sendgrid"
    default_base_url = "https://api.sendgrid.com"

    def request(self, mail: Mail, idempotency_key: str | None) -> ApiRequest:
        m = mail.message
        if not m.to:
            raise mapping.unsupported(self.name, "a message without a To recipient (Cc/Bcc only)")
        mapping.unique(self.name, (m.to, m.cc, m.bcc))
        mapping.limit(self.name, [*m.to, *m.cc, *m.bcc], MAX_RECIPIENTS, "recipients")
        people: dict[str, Any] = {"to": [_party(a) for a in m.to]}
        for key, group in (("cc", m.cc), ("bcc", m.bcc)):
            if group:
                people[key] = [_party(a) for a in group]
        body: dict[str, Any] = {
            "personalizations": [people],
            "from": _party(m.sender),
            "subject": m.subject,
            "content": self._content(m.text, m.html),
            "headers": mapping.single_headers(self.name, m),
        }
        if len(m.reply_to) == 1:
            body["reply_to"] = _party(m.reply_to[0])
        elif m.reply_to:
            body["reply_to_list"] = [_party(a) for a in m.reply_to]
        files = [self._file(a, "attachment") for a in m.attachments]
        files += [self._file(a, "inline") for a in m.inline_images]
        if files:
            body["attachments"] = files
        auth = {"Authorization": f"Bearer {self.api_key}"}
        return ApiRequest("POST", "/v3/mail/send", headers=auth, json=body)

    def _content(self, text: str | None, html: str | None) -> list[dict[str, str]]:
        """text/plain first, as SendGrid requires; an empty value is refused by the API."""
        parts = []
        if text:
            parts.append({"type": "text/plain", "value": text})
        if html:
            parts.append({"type": "text/html", "value": html})
        if not parts:
            raise mapping.unsupported(self.name, "an empty body (each content needs a character)")
        return parts

    @staticmethod
    def _file(item: Any, disposition: str) -> dict[str, str]:
        found = {
            "content": mapping.b64(item.content),
            "type": item.mimetype,
            "filename": item.filename,
            "disposition": disposition,
        }
        if item.content_id:
            found["content_id"] = mapping.content_id(item.content_id)
        return found

    def message_id(self, mail: Mail, reply: ApiReply) -> str | None:
        return reply.headers.get("x-message-id") or None

    def error_text(self, reply: ApiReply) -> str:
        data = reply.json()
        errors = data.get("errors") if isinstance(data, dict) else None
        if isinstance(errors, list) and errors:
            texts = []
            for error in errors:
                if isinstance(error, dict):
                    field = error.get("field")
                    message = str(error.get("message", ""))
                    texts.append(f"{field}: {message}" if field else message)
            return "; ".join(texts)
        return super().error_text(reply)

    async def probe(self) -> str:
        """``GET /v3/scopes``: the key's permissions; sending needs ``mail.send``."""
        reply = await self.call(
            ApiRequest("GET", "/v3/scopes", {"Authorization": f"Bearer {self.api_key}"})
        )
        if not 200 <= reply.status < 300:
            raise self.refused_probe(reply)
        data = reply.json()
        scopes = data.get("scopes", []) if isinstance(data, dict) else []
        if "mail.send" not in scopes:
            return "SendGrid accepted the API key, but it lacks the mail.send permission"
        return "SendGrid accepted the API key (it has the mail.send permission)"


TRANSPORT = SendGridTransport
