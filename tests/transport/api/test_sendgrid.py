"""SendGrid v3 (``POST /v3/mail/send``): the request field by field, 202 + X-Message-Id,
errors, the fields it cannot carry, and the probe."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import pytest

from fluxmail.errors import MessageError, Refused
from tests.support.api_mailing import KEY, PDF, PNG, RICH_HEADERS, api_mailer, rich_draft
from tests.support.http_api import HttpApiServer, Reply

Server = Callable[..., HttpApiServer]
OK = Reply(202, body=b"", headers={"X-Message-Id": "W1uCNBmzQ5eI0Wz8xLzkKQ"}, times=None)


def test_every_field_of_the_message_is_mapped(http_api: Server, send: Any) -> None:
    """personalizations (to, cc, bcc), from, reply_to, subject, content, headers, attachments."""
    server = http_api(default=OK)
    mailer = api_mailer(server, "sendgrid")
    result = send(rich_draft(mailer))
    assert result.status == "queued" and result.provider_message_id == "W1uCNBmzQ5eI0Wz8xLzkKQ"
    [seen] = server.requests
    assert (seen.method, seen.path) == ("POST", "/v3/mail/send")
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert "idempotency-key" not in seen.headers
    body = seen.json()
    assert body["personalizations"] == [
        {
            "to": [
                {"email": "bob@example.com", "name": "Bob Example"},
                {"email": "carol@example.com"},
            ],
            "cc": [{"email": "cy@example.com", "name": "Cy"}],
            "bcc": [{"email": "hidden@example.com"}],
        }
    ]
    assert body["from"] == {"email": "shop@example.com", "name": "Shop"}
    assert body["reply_to"] == {"email": "support@example.com", "name": "Support, Team"}
    assert body["subject"] == "Quarterly report"
    assert body["content"] == [
        {"type": "text/plain", "value": "Hi (text)"},
        {"type": "text/html", "value": '<p>Hi <img src="cid:logo@shop.example.com"></p>'},
    ]
    assert body["headers"] == dict(RICH_HEADERS)
    assert body["attachments"] == [
        {"content": base64.b64encode(PDF).decode(), "type": "application/pdf",
         "filename": "report.pdf", "disposition": "attachment"},
        {"content": base64.b64encode(PNG).decode(), "type": "image/png", "filename": "logo.png",
         "disposition": "inline", "content_id": "logo@shop.example.com"},
    ]  # fmt: skip
    assert set(body) == {
        "personalizations", "from", "reply_to", "subject", "content", "headers", "attachments"
    }  # fmt: skip
    mailer.close()


def test_several_reply_to_addresses_use_reply_to_list(http_api: Server) -> None:
    server = http_api(default=OK)
    mailer = api_mailer(server, "sendgrid")
    mailer.create("Hi", "bob@example.com", "x", reply_to=["a@example.com", "b@example.com"]).send()
    body = server.requests[0].json()
    assert "reply_to" not in body
    assert body["reply_to_list"] == [{"email": "a@example.com"}, {"email": "b@example.com"}]
    mailer.close()


def test_the_apis_error_text_names_the_field(http_api: Server) -> None:
    errors = {"errors": [{"message": "The from address does not match a verified Sender Identity.",
                          "field": "from", "help": None}]}  # fmt: skip
    server = http_api(default=Reply(403, body=errors, times=None))
    mailer = api_mailer(server, "sendgrid")
    with pytest.raises(Exception) as info:
        mailer.create("Hi", "bob@example.com", "x").send()
    assert "from: The from address does not match a verified Sender Identity." in str(info.value)
    mailer.close()


def test_a_400_is_refused_with_the_field_named(http_api: Server) -> None:
    errors = {"errors": [{"message": "Invalid type. Expected: array", "field": "content"}]}
    server = http_api(default=Reply(400, body=errors, times=None))
    mailer = api_mailer(server, "sendgrid", max_retries=2)
    with pytest.raises(Refused) as info:
        mailer.create("Hi", "bob@example.com", "x").send()
    assert "content: Invalid type. Expected: array" in info.value.message and server.count == 1
    mailer.close()


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"recipients": None, "bcc": ["hidden@example.com"]}, "without a To"),
        ({"recipients": ["a@example.com"], "cc": ["A@example.com"]}, "the same recipient twice"),
        ({"recipients": ["a@example.com"], "body": ""}, "an empty body"),
        ({"recipients": ["a@example.com"], "headers": [("X-T", "1"), ("X-T", "2")]}, "twice"),
    ],
)
def test_what_sendgrid_cannot_carry_is_refused_before_any_request(
    http_api: Server, fields: dict[str, Any], why: str
) -> None:
    server = http_api(default=OK)
    mailer = api_mailer(server, "sendgrid")
    with pytest.raises(MessageError) as info:
        mailer.create("Hi", **{"body": "x", **fields}).send()
    assert info.value.code == "api_unsupported" and why in info.value.message
    assert server.count == 0
    mailer.close()


def test_the_probe_reads_the_keys_scopes(http_api: Server) -> None:
    from fluxmail.transport.registry import make_transport

    server = http_api(default=Reply(200, body={"scopes": ["mail.send", "alerts.read"]}))
    transport: Any = make_transport(api_mailer(server, "sendgrid").config)
    assert "mail.send" in asyncio.run(transport.probe())
    seen = server.requests[0]
    assert (seen.method, seen.path) == ("GET", "/v3/scopes")
    assert seen.headers["authorization"] == f"Bearer {KEY}"
