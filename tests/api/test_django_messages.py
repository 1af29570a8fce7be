"""What fluxmail.django makes of Django's messages: bodies, alternatives, attachments (tuples,
EmailAttachment, MIMEBase parts), headers; checked on the bytes a real server received."""

from __future__ import annotations

import sys
import unittest
from email import encoders, message_from_bytes, policy
from email.message import EmailMessage as ParsedMessage
from email.message import MIMEPart
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.image import MIMEImage
from email.mime.text import MIMEText
from types import SimpleNamespace
from typing import Any

import pytest

import fluxmail.django
from fluxmail import ConfigurationError, MessageError
from tests.project.test_docs_examples import extract_blocks
from tests.support import ROOT
from tests.support.django_site import (  # noqa: F401  (site_fixture)
    BACKEND,
    LEGACY_MAIL_API,
    fluxmail_settings,
    has_mailers,
    site_fixture,
)

pytestmark = [pytest.mark.timeout(60), LEGACY_MAIL_API]  # get_connection(), fail_silently=
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
PDF = b"%PDF-1.4\n" + bytes(range(256))
# Django 6.1 deprecates MIMEBase parts in attach() for email.message.MIMEPart (tested below);
# they still work, and the tests that attach them ignore that one warning.
MIMEBASE_PARTS = pytest.mark.filterwarnings(
    "ignore:MIMEBase attachments are deprecated:PendingDeprecationWarning"
)


def _takes_mimepart() -> bool:
    """Whether Django's attach() takes an email.message.MIMEPart (Django 6.1+)."""
    from django.core import mail

    try:
        mail.EmailMessage().attach(MIMEPart())
    except ValueError:  # before: not a MIMEBase, so a filename without content
        return False
    return True


def _parsed(server: Any, index: int = 0) -> ParsedMessage:
    parsed = message_from_bytes(server.messages[index].data, policy=policy.default)
    assert isinstance(parsed, ParsedMessage)
    return parsed


def _attachments(parsed: ParsedMessage) -> dict[str, tuple[str, bytes]]:
    return {
        str(part.get_filename()): (part.get_content_type(), part.get_payload(decode=True))
        for part in parsed.iter_attachments()
    }


@MIMEBASE_PARTS
def test_multi_alternatives_with_html_and_attachments(site: Any, smtp_server: Any) -> None:
    """Text + HTML, a (filename, str, mimetype) tuple, bytes guessed by name, a MIMEImage
    shown inline by its Content-ID and a MIMEBase part named by its Content-Disposition."""
    from django.core import mail

    server = smtp_server()
    site(FLUXMAIL=fluxmail_settings(server))
    message = mail.EmailMultiAlternatives(
        "Your invoice", "Plain text.", None, ["ada@example.com"], cc=["cc@example.com"],
        bcc=["audit@example.com"], reply_to=["Support <support@example.com>"],
    )  # fmt: skip
    message.attach_alternative('<p>Hello <img src="cid:logo@shop"></p>', "text/html")
    message.attach("terms.txt", "Terms – and conditions", "text/plain")
    message.attach("data.csv", b"a,b\n1,2\n")
    logo = MIMEImage(PNG, "png")
    logo.add_header("Content-ID", "<logo@shop>")
    message.attach(logo)
    invoice = MIMEBase("application", "pdf")
    invoice.set_payload(PDF)
    encoders.encode_base64(invoice)
    invoice.add_header("Content-Disposition", "attachment", filename="invoice-42.pdf")
    message.attach(invoice)
    message.attach(MIMEApplication(b"\x00\x01raw", Name="blob.bin"))
    assert message.send() == 1

    [received] = server.messages
    assert sorted(received.rcpt_tos) == ["ada@example.com", "audit@example.com", "cc@example.com"]
    assert b"audit@example.com" not in received.data  # Bcc stays in the envelope
    parsed = _parsed(server)
    assert parsed["Reply-To"] == "Support <support@example.com>"
    assert parsed["Cc"] == "cc@example.com"
    plain = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert plain is not None and plain.get_content().strip() == "Plain text."
    assert html is not None and "cid:logo@shop" in html.get_content()
    inline = [p for p in parsed.walk() if p["Content-ID"] == "<logo@shop>"]
    assert len(inline) == 1 and inline[0].get_payload(decode=True) == PNG
    assert _attachments(parsed) == {
        "terms.txt": ("text/plain", "Terms – and conditions".encode()),
        "data.csv": ("text/csv", b"a,b\n1,2\n"),
        "invoice-42.pdf": ("application/pdf", PDF),
        "blob.bin": ("application/octet-stream", b"\x00\x01raw"),
    }


def test_mimepart_attachments(site: Any, smtp_server: Any) -> None:
    """email.message.MIMEPart parts, which Django 6.1 takes instead of MIMEBase: one with a
    Content-ID is shown inline by the HTML body, one with a filename is an attachment."""
    from django.core import mail

    if not _takes_mimepart():
        pytest.skip("this Django's attach() takes MIMEBase parts only")
    server = smtp_server()
    site(FLUXMAIL=fluxmail_settings(server))
    message = mail.EmailMultiAlternatives("Invoice", "Text.", None, ["ada@example.com"])
    message.attach_alternative('<p><img src="cid:logo@shop"></p>', "text/html")
    logo, invoice = MIMEPart(), MIMEPart()
    logo.set_content(PNG, "image", "png", cid="<logo@shop>")
    invoice.set_content(PDF, "application", "pdf", filename="invoice-42.pdf")
    message.attach(logo)
    message.attach(invoice)
    assert message.send() == 1
    parsed = _parsed(server)
    inline = [p for p in parsed.walk() if p["Content-ID"] == "<logo@shop>"]
    assert len(inline) == 1 and inline[0].get_payload(decode=True) == PNG
    assert _attachments(parsed) == {"invoice-42.pdf": ("application/pdf", PDF)}


def test_html_content_subtype_and_extra_headers(site: Any, smtp_server: Any) -> None:
    """content_subtype "html" makes the body HTML; Message-ID is honoured (the result has
    it), Reply-To from headers wins over reply_to as in Django, other headers pass through."""
    from django.core import mail

    server = smtp_server()
    site(FLUXMAIL=fluxmail_settings(server))
    message = mail.EmailMessage(
        "Hi", "<b>bold</b>", "Ada <ada@example.org>", [("Bob", "bob@example.com")],
        reply_to=["ignored@example.com"],
        headers={"Message-ID": "<order-7@example.org>", "X-Campaign": "spring", "X-Count": 3,
                 "Reply-To": "desk@example.org"},
    )  # fmt: skip
    message.content_subtype = "html"
    assert message.send() == 1
    assert message.fluxmail_result.message_id == "<order-7@example.org>"
    parsed = _parsed(server)
    assert parsed["Message-ID"] == "<order-7@example.org>"
    assert parsed["X-Campaign"] == "spring" and parsed["X-Count"] == "3"
    assert parsed["Reply-To"] == "desk@example.org" and parsed["To"] == "Bob <bob@example.com>"
    assert parsed["From"] == "Ada <ada@example.org>"
    assert parsed.get_content_type() == "text/html"
    assert server.messages[0].mail_from == "ada@example.org"


def test_bcc_only_and_messages_without_recipients(site: Any, smtp_server: Any) -> None:
    """A message with only Bcc is sent; one with no recipient at all is skipped, as Django's
    SMTP backend does, and not counted."""
    from django.core import mail

    server = smtp_server()
    site(FLUXMAIL=fluxmail_settings(server))
    hidden = mail.EmailMessage("Hidden", "x", None, bcc=["bcc@example.com"])
    nobody = mail.EmailMessage("Nobody", "x", None, [])
    assert mail.get_connection().send_messages([hidden, nobody]) == 1
    assert server.messages[0].rcpt_tos == ["bcc@example.com"]
    assert nobody.fluxmail_result is None and hidden.fluxmail_result.status == "sent"
    assert mail.get_connection().send_messages([]) == 0


@MIMEBASE_PARTS
def test_what_fluxmail_cannot_carry_is_a_message_error(site: Any, smtp_server: Any) -> None:
    """A calendar alternative, a second HTML, a multipart attachment, an owned header:
    MessageErrors with their codes, even with fail_silently, before any traffic."""
    from django.core import mail

    server = smtp_server()
    site(FLUXMAIL=fluxmail_settings(server))
    calendar = mail.EmailMultiAlternatives("Invite", "x", None, ["a@example.com"])
    calendar.attach_alternative("BEGIN:VCALENDAR", "text/calendar")
    twice = mail.EmailMultiAlternatives("Twice", "x", None, ["a@example.com"])
    twice.attach_alternative("<p>1</p>", "text/html")
    twice.attach_alternative("<p>2</p>", "text/html")
    nested = mail.EmailMessage("Nested", "x", None, ["a@example.com"])
    outer = MIMEBase("multipart", "mixed")
    outer.attach(MIMEText("inner"))
    nested.attach(outer)
    dated = mail.EmailMessage("Dated", "x", None, ["a@example.com"], headers={"Date": "x"})
    cases = [(calendar, "unsupported_alternative"), (twice, "unsupported_alternative"),
             (nested, "invalid_attachment"), (dated, "reserved_header")]  # fmt: skip
    for message, code in cases:
        with pytest.raises(MessageError) as caught:
            message.send(fail_silently=True)
        assert caught.value.code == code, message.subject
    assert server.connections == 0


def test_the_memory_backend_for_tests(site: Any) -> None:
    """FLUXMAIL={"object_type": "memory"}: Django code under test, fluxmail's test outbox."""
    from django.core import mail

    from fluxmail.testing import outbox

    site(FLUXMAIL={"object_type": "memory", "sender": "Shop <shop@example.com>"})
    outbox.clear()
    try:
        mail.send_mail("Welcome", "Hello!", None, ["ada@example.com"])
        (sent,) = outbox.find(to="ada@example.com")
        assert sent.parsed()["Subject"] == "Welcome"
    finally:
        outbox.clear()


def test_without_django_the_backend_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """fluxmail.django imports without Django; the backend class needs it."""
    monkeypatch.setattr(fluxmail.django, "_CLASSES", {})
    monkeypatch.setitem(sys.modules, "django.core.mail.backends.base", None)
    with pytest.raises(ConfigurationError) as caught:
        fluxmail.django.EmailBackend  # noqa: B018  (the access is the test)
    assert caught.value.code == "missing_extra" and "fluxmail[django]" in caught.value.message
    with pytest.raises(AttributeError):
        fluxmail.django.NoSuchThing  # noqa: B018


def test_the_backend_is_a_django_backend(site: Any) -> None:
    from django.core import mail
    from django.core.mail.backends.base import BaseEmailBackend

    path = None if has_mailers() else BACKEND  # MAILERS refuses a path: its entry names one
    backend = mail.get_connection(path, fail_silently=True)
    assert isinstance(backend, BaseEmailBackend) and backend.fail_silently
    assert type(backend) is fluxmail.django.EmailBackend
    assert type(backend).__module__ == "fluxmail.django"


def test_the_django_page_examples_run(site: Any, smtp_server: Any) -> None:
    """docs/django.md's sending functions against a real server (the get_connection() one
    before Django 6.1), and its test case."""
    from django.core import mail

    blocks = extract_blocks(ROOT / "docs" / "django.md")
    firsts = [b.code.splitlines()[0] for b in blocks]
    assert firsts[:2] == ["# settings.py, Django 6.1 and later", "# settings.py, Django 4.2 to 6.0"]
    assert firsts[3] == "# Django 4.2 to 6.0"
    server = smtp_server(tls="starttls")
    site(FLUXMAIL=fluxmail_settings(server))
    page: dict[str, Any] = {"__name__": "django_page"}
    run = [blocks[2], blocks[4]] if has_mailers() else [blocks[2], blocks[3], blocks[4]]
    for block in run:  # sending, (sending before 6.1,) tests
        exec(compile(block.code, f"{block.page}:{block.line}", "exec"), page)
    status, audit_id = page["send_invoice"](SimpleNamespace(email="ada@example.com"), PDF)
    assert status == "sent" and audit_id is None  # the audit is off in this FLUXMAIL
    assert _attachments(_parsed(server)) == {"invoice.pdf": ("application/pdf", PDF)}
    reminders = [mail.EmailMessage(f"R{i}", "x", None, ["a@example.com"]) for i in range(3)]
    page["send_reminders"](reminders)
    assert len(server.messages) == 4 and server.connections == 2
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(page["WelcomeMailTests"])
    outcome = unittest.TestResult()
    suite.run(outcome)
    assert outcome.wasSuccessful() and outcome.testsRun == 1, outcome.errors + outcome.failures
    assert len(server.messages) == 4  # the test case used the memory transport
