"""A Message built around build_message (directly, or with dataclasses.replace) cannot carry
header text that ends a line, whatever transport would write it."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from fluxmail import Draft
from fluxmail.errors import MessageError
from fluxmail.message.addresses import Address
from fluxmail.message.model import Message
from tests.support.mailing import mailer_for

SENDER = Address("a@example.org")
TO = (Address("b@example.org"),)

INJECTED = [
    ("subject", {"subject": "Hi\r\nBcc: victim@example.com"}, "header_injection"),
    ("subject", {"subject": "Hi\x00there"}, "header_injection"),
    ("message_id", {"message_id": "<a@b>\r\nBcc: v@example.com"}, "header_injection"),
    ("in_reply_to", {"in_reply_to": "<a@b>\nX: y"}, "header_injection"),
    ("unsubscribe_url", {"unsubscribe_url": "https://x.example/\r\nBcc: v"}, "header_injection"),
    ("references", {"references": ("<a@b>", "<c@d>\rX: y")}, "header_injection"),
    ("to", {"to": (Address("b@example.org", "Bob\r\nBcc: v@example.com"),)}, "header_injection"),
    ("sender", {"sender": Address("a@example.org\r\nBcc: v@example.com")}, "header_injection"),
    ("reply_to", {"reply_to": (Address("r@example.org", "R\n"),)}, "header_injection"),
    ("header 'X-A'", {"headers": (("X-A", "b\r\nBcc: v@example.com"),)}, "header_injection"),
    ("header name", {"headers": (("X-A\r\nBcc", "v@example.com"),)}, "header_injection"),
    (None, {"headers": (("Bcc:", "v@example.com"),)}, "invalid_header_name"),
    (None, {"headers": (("X A", "b"),)}, "invalid_header_name"),
    ("subject", {"subject": None}, "invalid_header_value"),
    ("header 'X-A'", {"headers": (("X-A", 123),)}, "invalid_header_value"),
    ("to", {"to": ("b@example.org\r\nX: y",)}, "invalid_address"),  # a str, not an Address
    ("to", {"to": None}, "invalid_address"),
    ("subject", {"subject": "Hi\u2028Bcc: v@example.com"}, "header_injection"),
    ("header name", {"headers": (("X-A", "b", "c"),)}, "invalid_header_value"),
]


@pytest.mark.parametrize(("field", "values", "code"), INJECTED)
def test_direct_construction_refuses_header_breaking_text(
    field: str | None, values: dict[str, Any], code: str
) -> None:
    with pytest.raises(MessageError) as caught:
        Message(**{"sender": SENDER, "to": TO, **values})
    assert caught.value.code == code
    if field is not None:
        assert caught.value.details["field"] == field


def test_replace_refuses_it_too_and_nothing_reaches_the_server(smtp_server: Any) -> None:
    """The way a caller changes a built message: the copy is refused, the original still sends."""
    server = smtp_server(tls="starttls")
    mailer = mailer_for(server)
    draft = mailer.create("Hi", ["b@example.org"], "body", headers={"X-Tag": "one"})
    with pytest.raises(MessageError) as caught:
        Draft(mailer, dataclasses.replace(draft.message, headers=(("X-Tag", "1\r\nBcc: v@x.io"),)))
    assert caught.value.code == "header_injection"
    assert server.connections == 0
    draft.send()
    [received] = server.messages
    assert b"X-Tag: one\r\n" in received.data and b"Bcc" not in received.data
    mailer.close()


def test_safe_values_still_pass() -> None:
    """Long text, encoded-word look-alikes and Unicode are fine."""
    message = Message(
        sender=Address("a@example.org", "Ann Lee"),
        to=(Address("jörg@bücher.de", "Jörg"),),
        subject="=?utf-8?q?x?= and ü",
        headers=(("X-Long", "word " * 60),),
    )
    assert message.message_id.endswith("@example.org>")
