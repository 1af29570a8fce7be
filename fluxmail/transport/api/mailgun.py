"""Mailgun: ``POST /v3/{domain}/messages.mime`` with the message as a MIME file.

API reference: https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/messages
(``messages.mime``: multipart/form-data with ``to``, every recipient including Bcc, and
``message``, the MIME file) and the domains API (``GET /v3/domains/{domain}``) for ``fluxmail
check``. HTTP Basic with the user ``api`` and the API key. US accounts use api.mailgun.net, EU
accounts api.eu.mailgun.net (``?region=eu``). The file posted is exactly the audited bytes.
"""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import quote

from fluxmail.errors import ConfigurationError
from fluxmail.transport.api.base import ApiReply, ApiRequest, ApiTransport
from fluxmail.transport.mail import Mail

if TYPE_CHECKING:
    from fluxmail.config.model import Config

__all__ = ["REGIONS", "TRANSPORT", "MailgunTransport"]

REGIONS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
_DOMAIN = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)


class MailgunTransport(ApiTransport):
    """Mailgun's raw MIME endpoint: the audited bytes, every envelope recipient in ``to``."""

    name: ClassVar[str] = "mailgun"
    default_base_url: ClassVar[str] = REGIONS["us"]

    def __init__(self, config: Config) -> None:
        options = config.api_options
        self.region = (options.get("region") or "us").lower()
        if self.region not in REGIONS:
            raise ConfigurationError(
                f"Mailgun's region is us or eu, not {self.region!r} (?region=eu in FLUXMAIL_URL)",
                code="invalid_region",
            )
        self.domain = _domain(options.get("domain"))
        key = config.api_key
        if key is None:
            raise ConfigurationError(
                "Mailgun needs its API key: mailgun+api://KEY@your-domain.example in FLUXMAIL_URL "
                "or FLUXMAIL_API_KEY",
                code="credentials_incomplete",
            )
        basic = base64.b64encode(f"api:{key.get_secret_value()}".encode()).decode("ascii")
        self._auth = {"Authorization": f"Basic {basic}"}
        super().__init__(config)
        self.secrets = (*self.secrets, basic)  # the header's base64 form is a secret too

    def base_url(self) -> str:
        override = self.config.api_base_url
        return override.rstrip("/") if override else REGIONS[self.region]

    def request(self, mail: Mail, idempotency_key: str | None) -> ApiRequest:
        # Mailgun delivers to ``to`` only: the headers inside the file decide nothing, so Bcc
        # recipients are here and nowhere in the bytes. Addresses never hold a comma (the
        # strict parser refuses one in a local part), so one comma-separated field is exact.
        return ApiRequest(
            "POST",
            f"/v3/{quote(self.domain)}/messages.mime",
            headers=self._auth,
            data={"to": ",".join(mail.envelope.recipients)},
            files=[("message", ("message.mime", mail.data, "message/rfc822"))],
        )

    def message_id(self, mail: Mail, reply: ApiReply) -> str | None:
        """``{"id": "<...@domain>", "message": "Queued. Thank you."}``: the id without <>."""
        data = reply.json()
        value = data.get("id") if isinstance(data, dict) else None
        if not isinstance(value, str):
            return None
        return value.strip().strip("<>") or None

    def error_text(self, reply: ApiReply) -> str:
        data = reply.json()
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return str(data["message"])
        text = reply.body[:300].decode("utf-8", "replace").strip()
        return text or f"HTTP {reply.status}"

    async def probe(self) -> str:
        """GET the sending domain: authenticated, read-only; reports its state."""
        reply = await self.call(
            ApiRequest("GET", f"/v3/domains/{quote(self.domain)}", headers=self._auth)
        )
        if not 200 <= reply.status < 300:
            raise self.refused_probe(reply)
        data = reply.json()
        domain = data.get("domain") if isinstance(data, dict) else None
        state = domain.get("state", "unknown") if isinstance(domain, dict) else "unknown"
        return f"Mailgun domain {self.domain} ({self.region.upper()}): {state}"


def _domain(value: str | None) -> str:
    if not value or not _DOMAIN.fullmatch(value):
        raise ConfigurationError(
            "Mailgun needs the sending domain: mailgun+api://KEY@mg.example.com in FLUXMAIL_URL "
            f"(got {'nothing' if not value else repr(value)})",
            code="invalid_config",
        )
    return value.lower()


TRANSPORT = MailgunTransport
