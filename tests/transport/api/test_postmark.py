"""Postmark (``POST /email``): the request field by field, MessageStream, MessageID, ErrorCode
errors, the 50-recipient limit, and the probe."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import pytest

from fluxmail import FluxMail
from fluxmail.errors import MessageError, Refused
from tests.support.api_mailing import KEY, PDF, PNG, RICH_HEADERS, api_mailer, rich_draft
from tests.support.http_api import HttpApiServer, Reply

Server = Callable[..., HttpApiServer]
OK = Reply(
    200,
    body={"To": "bob@example.com", "SubmittedAt": "2026-12-02T01:00:00Z",
          "MessageID": "b7bc2f4a-e38e-4336-af7d-e6c392c2f817", "ErrorCode": 0, "Message": "OK"},
    times=None,
)  # fmt: skip


def test_every_field_of_the_message_is_mapped(http_api: Server, send: Any) -> None:
    """From, To, Cc, Bcc, ReplyTo, Subject, TextBody, HtmlBody, Headers, Attachments, stream."""
    server = http_api(default=OK)
    mailer = api_mailer(server, "postmark")
    result = send(rich_draft(mailer))
    assert result.status == "queued"
    assert result.provider_message_id == "b7bc2f4a-e38e-4336-af7d-e6c392c2f817"
    [seen] = server.requests
    assert (seen.method, seen.path) == ("POST", "/email")
    assert seen.headers["x-postmark-server-token"] == KEY
    assert seen.headers["accept"] == "application/json"
    assert "authorization" not in seen.headers
    body = seen.json()
    assert body["From"] == "Shop <shop@example.com>"
    assert body["To"] == "Bob Example <bob@example.com>, carol@example.com"
    assert body["Cc"] == "Cy <cy@example.com>"
    assert body["Bcc"] == "hidden@example.com"
    assert body["ReplyTo"] == '"Support, Team" <support@example.com>'
    assert body["Subject"] == "Quarterly report"
    assert body["TextBody"] == "Hi (text)"
    assert body["HtmlBody"] == '<p>Hi <img src="cid:logo@shop.example.com"></p>'
    assert body["Headers"] == [{"Name": n, "Value": v} for n, v in RICH_HEADERS]
    assert body["Attachments"] == [
        {"Name": "report.pdf", "Content": base64.b64encode(PDF).decode(),
         "ContentType": "application/pdf"},
        {"Name": "logo.png", "Content": base64.b64encode(PNG).decode(), "ContentType": "image/png",
         "ContentID": "cid:logo@shop.example.com"},
    ]  # fmt: skip
    assert body["MessageStream"] == "outbound"
    mailer.close()


def test_the_message_stream_comes_from_the_url(http_api: Server) -> None:
    """postmark+api://TOKEN@default?message_stream=broadcast&endpoint=...: that stream."""
    server = http_api(default=OK)
    url = f"postmark+api://{KEY}@default?message_stream=broadcast&endpoint={server.url}"
    mailer = FluxMail.from_url(url, ca_file=server.ca_path, sender="shop@example.com", audit=False)
    mailer.create("Hi", "bob@example.com", "x").send()
    assert server.requests[0].json()["MessageStream"] == "broadcast"
    assert server.requests[0].headers["x-postmark-server-token"] == KEY
    mailer.close()


def test_repeated_custom_headers_are_carried(http_api: Server) -> None:
    """Postmark takes headers as a list: both X-Tag headers go."""
    server = http_api(default=OK)
    mailer = api_mailer(server, "postmark")
    mailer.create("Hi", "bob@example.com", "x", headers=[("X-Tag", "a"), ("X-Tag", "b")]).send()
    headers = server.requests[0].json()["Headers"]
    assert [h for h in headers if h["Name"] == "X-Tag"] == [
        {"Name": "X-Tag", "Value": "a"}, {"Name": "X-Tag", "Value": "b"}
    ]  # fmt: skip
    mailer.close()


def test_an_error_code_is_refused_with_the_apis_text(http_api: Server) -> None:
    """422 with ErrorCode 406 (inactive recipient): failed, the code and text quoted."""
    error = {"ErrorCode": 406, "Message": "You tried to send to recipient(s) that have been "
             "marked as inactive."}  # fmt: skip
    server = http_api(default=Reply(422, body=error, times=None))
    mailer = api_mailer(server, "postmark", max_retries=2)
    with pytest.raises(Refused) as info:
        mailer.create("Hi", "bob@example.com", "x").send()
    assert "marked as inactive. (ErrorCode 406)" in info.value.message and server.count == 1
    mailer.close()


def test_more_than_50_recipients_are_refused_before_any_request(http_api: Server) -> None:
    server = http_api(default=OK)
    mailer = api_mailer(server, "postmark")
    with pytest.raises(MessageError) as info:
        mailer.create("Hi", [f"u{i}@example.com" for i in range(40)], "x",
                      bcc=[f"b{i}@example.com" for i in range(11)]).send()  # fmt: skip
    assert info.value.code == "api_unsupported" and server.count == 0
    mailer.close()


def test_the_probe_names_the_server(http_api: Server) -> None:
    from fluxmail.transport.registry import make_transport

    server = http_api(default=Reply(200, body={"ID": 1, "Name": "Shop transactional"}))
    transport: Any = make_transport(api_mailer(server, "postmark").config)
    assert "Shop transactional" in asyncio.run(transport.probe())
    seen = server.requests[0]
    assert (seen.method, seen.path) == ("GET", "/server")
    assert seen.headers["x-postmark-server-token"] == KEY
