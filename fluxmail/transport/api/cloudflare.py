"""Cloudflare Email Service: ``send_raw`` with the whole MIME message.

API reference: https://developers.cloudflare.com/api/resources/email_sending/methods/send_raw
(``POST /client/v4/accounts/{account_id}/email/sending/send_raw``, JSON ``from`` and
``recipients`` for the envelope, ``mime_message`` the message; a Bearer API token) and
https://developers.cloudflare.com/email-service/api/send-emails/rest-api/. The raw endpoint
carries every field of the message as written, so nothing is mapped field by field: the
``mime_message`` string is exactly the audited bytes. The reply lists each recipient as
``delivered``, ``queued`` or ``permanent_bounces``; it carries no message id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from fluxmail.errors import ConfigurationError, MessageError
from fluxmail.results import RecipientStatus
from fluxmail.transport.api.base import ApiReply, ApiRequest, ApiTransport
from fluxmail.transport.mail import Mail

if TYPE_CHECKING:
    from fluxmail.config.model import Config

__all__ = ["TRANSPORT", "CloudflareTransport"]

_ACCOUNT = re.compile(r"[0-9a-f]{32}")


class CloudflareTransport(ApiTransport):
    """Cloudflare's raw-MIME send for one account, with an API token allowed to send email."""

    name: ClassVar[str] = "cloudflare"
    default_base_url: ClassVar[str] = "https://api.cloudflare.com"

    def __init__(self, config: Config) -> None:
        self.account_id = _account(config.api_options.get("account_id"))
        key = config.api_key
        if key is None:
            raise ConfigurationError(
                "Cloudflare needs an API token with the Email Sending permission: "
                "cloudflare+api://TOKEN@ACCOUNT_ID in FLUXMAIL_URL or FLUXMAIL_API_KEY",
                code="credentials_incomplete",
            )
        self._auth = {"Authorization": f"Bearer {key.get_secret_value()}"}
        super().__init__(config)

    def request(self, mail: Mail, idempotency_key: str | None) -> ApiRequest:
        try:
            # A JSON string holds text: the writer's bytes are ASCII, or UTF-8 under SMTPUTF8.
            text = mail.data.decode("utf-8")
        except UnicodeDecodeError:
            raise MessageError(
                "Cloudflare's send_raw takes the message as text; these bytes are not UTF-8",
                code="invalid_message",
            ) from None
        return ApiRequest(
            "POST",
            f"/client/v4/accounts/{self.account_id}/email/sending/send_raw",
            headers=self._auth,
            json={
                "from": mail.envelope.sender,
                "recipients": list(mail.envelope.recipients),
                "mime_message": text,
            },
        )

    def message_id(self, mail: Mail, reply: ApiReply) -> str | None:
        return None  # the documented reply has no id

    def recipients(self, mail: Mail, reply: ApiReply) -> Mapping[str, RecipientStatus] | None:
        """delivered and queued: accepted ("sent"); permanent_bounces: rejected; unlisted:
        unknown (Cloudflare said nothing about it)."""
        data = reply.json()
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, dict):
            return None
        lists = {
            key: {str(a).casefold() for a in result.get(key) or [] if isinstance(a, str)}
            for key in ("delivered", "queued", "permanent_bounces")
        }
        outcomes: dict[str, RecipientStatus] = {}
        for address in mail.envelope.recipients:
            key = address.casefold()
            if key in lists["permanent_bounces"]:
                outcomes[address] = RecipientStatus(address, "rejected", text="permanent bounce")
            elif key in lists["delivered"]:
                outcomes[address] = RecipientStatus(address, "sent", text="delivered")
            elif key in lists["queued"]:
                outcomes[address] = RecipientStatus(address, "sent", text="queued")
            else:
                outcomes[address] = RecipientStatus(address, "unknown", text="not in the reply")
        return outcomes

    def error_text(self, reply: ApiReply) -> str:
        """Cloudflare's envelope: ``{"success": false, "errors": [{"code", "message"}]}``."""
        data = reply.json()
        errors = data.get("errors") if isinstance(data, dict) else None
        if isinstance(errors, list):
            texts = [
                f"{e.get('code')}: {e.get('message')}" if e.get("code") else str(e.get("message"))
                for e in errors
                if isinstance(e, dict) and e.get("message")
            ]
            if texts:
                return "; ".join(texts)
        text = reply.body[:300].decode("utf-8", "replace").strip()
        return text or f"HTTP {reply.status}"

    async def probe(self) -> str:
        """Verify the API token: read-only. A user token verifies at ``/user/tokens/verify``,
        an account-owned token at ``/accounts/{account_id}/tokens/verify``."""
        reply = await self.call(
            ApiRequest("GET", "/client/v4/user/tokens/verify", headers=self._auth)
        )
        if reply.status in (401, 403):
            path = f"/client/v4/accounts/{self.account_id}/tokens/verify"
            reply = await self.call(ApiRequest("GET", path, headers=self._auth))
        if not 200 <= reply.status < 300:
            raise self.refused_probe(reply)
        data = reply.json()
        result = data.get("result") if isinstance(data, dict) else None
        status = result.get("status", "unknown") if isinstance(result, dict) else "unknown"
        return f"Cloudflare API token: {status} (account {self.account_id})"


def _account(value: str | None) -> str:
    if not value or not _ACCOUNT.fullmatch(value.lower()):
        raise ConfigurationError(
            "Cloudflare needs the account id (32 hexadecimal characters, on the dashboard's "
            "overview page): cloudflare+api://TOKEN@ACCOUNT_ID in FLUXMAIL_URL",
            code="invalid_config",
        )
    return value.lower()


TRANSPORT = CloudflareTransport
