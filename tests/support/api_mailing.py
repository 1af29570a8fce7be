"""Helpers for the HTTP API transport tests: a mailer aimed at an ``http_api`` server.

``api_mailer(server, "resend")`` sends through the Resend transport to the test server (its
base URL as FLUXMAIL_API_BASE_URL, trusting the test CA), auditing off unless ``audit_dir`` is
given, retries 10 ms apart. Every keyword is a setting (``max_retries=2``, ``api_key=...``).
"""

from __future__ import annotations

from typing import Any

from fluxmail import Draft, FluxMail
from fluxmail.message.attachments import Attachment
from tests.support.http_api import HttpApiServer

__all__ = ["KEY", "PDF", "PNG", "RICH_HEADERS", "SENDER", "api_mailer", "rich_draft"]

SENDER = "Shop <shop@example.com>"
KEY = "k-Zq9distinctiveApiKey7731"  # distinctive: the secrets scans look for it


def api_mailer(server: HttpApiServer, provider: str, **options: Any) -> FluxMail:
    settings: dict[str, Any] = {
        "transport": "api",
        "provider": provider,
        "api_key": KEY,
        "api_base_url": server.url,
        "sender": SENDER,
        "audit": False,
        "retry_delay": 0.01,
    }
    if server.tls:
        settings["ca_file"] = server.ca_path
    if "audit_dir" in options:
        settings["audit"] = True
    settings.update(options)
    return FluxMail(**settings)


PDF = b"%PDF-1.4 fluxmail test report\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def rich_draft(mailer: FluxMail, **changes: Any) -> Draft:
    """A message using every field a JSON API must carry (the mapping tests check each)."""
    fields: dict[str, Any] = {
        "subject": "Quarterly report",
        "recipients": ["Bob Example <bob@example.com>", "carol@example.com"],
        "body": '<p>Hi <img src="cid:logo@shop.example.com"></p>',
        "html_body": True,
        "plain_body": "Hi (text)",
        "cc": ["Cy <cy@example.com>"],
        "bcc": ["hidden@example.com"],
        "reply_to": ['"Support, Team" <support@example.com>'],
        "attachments": [("report.pdf", PDF, "application/pdf")],
        "inline_images": {"logo@shop.example.com": Attachment("logo.png", PNG, "image/png")},
        "headers": {"X-Campaign": "q3"},
        "unsubscribe_url": "https://shop.example.com/unsub?u=1",
        "in_reply_to": "<prev@example.com>",
        "references": ["<root@example.com>", "<prev@example.com>"],
        "priority": "high",
        "message_id": "<rich-1@shop.example.com>",
    }
    fields.update(changes)
    return mailer.create(**fields)


# The headers every JSON mapping carries for rich_draft(), in the MIME writer's order.
RICH_HEADERS = [
    ("Message-ID", "<rich-1@shop.example.com>"),
    ("In-Reply-To", "<prev@example.com>"),
    ("References", "<root@example.com> <prev@example.com>"),
    ("X-Priority", "1"),
    ("Importance", "high"),
    ("List-Unsubscribe", "<https://shop.example.com/unsub?u=1>"),
    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ("X-Campaign", "q3"),
]
