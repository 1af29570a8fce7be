"""Resend (``POST /emails``): the request field by field, the reply, errors and the probe."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from fluxmail.errors import MessageError
from tests.support.api_mailing import KEY, PDF, PNG, RICH_HEADERS, api_mailer, rich_draft
from tests.support.http_api import HttpApiServer, Reply

Server = Callable[..., HttpApiServer]
OK = Reply(200, body={"id": "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"}, times=None)


def test_every_field_of_the_message_is_mapped(http_api: Server, send: Any) -> None:
    """from, to, cc, bcc, reply_to, subject, html, text, headers, attachments (inline by cid)."""
    server = http_api(default=OK)
    mailer = api_mailer(server, "resend")
    result = send(rich_draft(mailer))
    assert result.status == "queued"
    assert result.provider_message_id == "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"
    assert set(result.recipients) == {
        "bob@example.com", "carol@example.com", "cy@example.com", "hidden@example.com"
    }  # fmt: skip
    [seen] = server.requests
    assert (seen.method, seen.path) == ("POST", "/emails")
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["idempotency-key"] == "rich-1@shop.example.com"
    body = seen.json()
    assert body["from"] == "Shop <shop@example.com>"
    assert body["to"] == ["Bob Example <bob@example.com>", "carol@example.com"]
    assert body["cc"] == ["Cy <cy@example.com>"]
    assert body["bcc"] == ["hidden@example.com"]
    assert body["reply_to"] == ['"Support, Team" <support@example.com>']
    assert body["subject"] == "Quarterly report"
    assert body["html"] == '<p>Hi <img src="cid:logo@shop.example.com"></p>'
    assert body["text"] == "Hi (text)"
    assert body["headers"] == dict(RICH_HEADERS)
    report, logo = body["attachments"]
    assert report == {
        "filename": "report.pdf", "content": base64.b64encode(PDF).decode(),
        "content_type": "application/pdf",
    }  # fmt: skip
    assert logo == {
        "filename": "logo.png", "content": base64.b64encode(PNG).decode(),
        "content_type": "image/png", "content_id": "logo@shop.example.com",
    }  # fmt: skip
    assert set(body) == {
        "from", "to", "cc", "bcc", "reply_to", "subject", "html", "text", "headers", "attachments"
    }  # fmt: skip
    mailer.close()


def test_a_text_only_message_sends_no_html(http_api: Server) -> None:
    server = http_api(default=OK)
    mailer = api_mailer(server, "resend")
    mailer.create("Hi", "bob@example.com", "plain words").send()
    body = server.requests[0].json()
    assert body["text"] == "plain words" and "html" not in body and "attachments" not in body
    mailer.close()


def test_an_html_only_message_asks_resend_not_to_invent_a_text_part(http_api: Server) -> None:
    """The message has no plain part; an empty ``text`` keeps Resend from generating one."""
    server = http_api(default=OK)
    mailer = api_mailer(server, "resend")
    mailer.create("Hi", "bob@example.com", "<b>x</b>", html_body=True).send()
    body = server.requests[0].json()
    assert body["html"] == "<b>x</b>" and body["text"] == ""
    mailer.close()


def test_more_than_50_to_recipients_is_refused_before_any_request(http_api: Server) -> None:
    server = http_api(default=OK)
    mailer = api_mailer(server, "resend")
    many = [f"u{i}@example.com" for i in range(51)]
    with pytest.raises(MessageError) as info:
        mailer.create("Hi", many, "x").send()
    assert info.value.code == "api_unsupported" and "50" in info.value.message
    assert server.count == 0
    mailer.close()


def test_a_header_given_twice_is_refused_before_any_request(http_api: Server) -> None:
    """Resend takes headers as a JSON object: two X-Tag headers cannot both go."""
    server = http_api(default=OK)
    mailer = api_mailer(server, "resend")
    draft = mailer.create("Hi", "bob@example.com", "x", headers=[("X-Tag", "a"), ("X-Tag", "b")])
    with pytest.raises(MessageError) as info:
        draft.send()
    assert info.value.code == "api_unsupported" and server.count == 0
    mailer.close()


def test_the_probe_lists_domains(http_api: Server) -> None:
    import asyncio

    from fluxmail.transport.registry import make_transport

    server = http_api(default=Reply(200, body={"data": [{"name": "shop.example.com"}]}))
    transport: Any = make_transport(api_mailer(server, "resend").config)
    assert "shop.example.com" in asyncio.run(transport.probe())
    seen = server.requests[0]
    assert (seen.method, seen.path) == ("GET", "/domains")
    assert seen.headers["authorization"] == f"Bearer {KEY}"


def test_the_probe_accepts_a_sending_only_key(http_api: Server) -> None:
    import asyncio

    from fluxmail.transport.registry import make_transport

    restricted = {"statusCode": 401, "name": "restricted_api_key", "message": "restricted"}
    server = http_api(default=Reply(401, body=restricted))
    transport: Any = make_transport(api_mailer(server, "resend").config)
    assert "sending-only" in asyncio.run(transport.probe())
