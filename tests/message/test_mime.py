"""render(): the exact wire bytes, header by header and part by part."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import hashlib
from datetime import datetime, timezone
from email.message import EmailMessage
from typing import Any

import pytest

from fluxmail.errors import MessageError
from fluxmail.message.addresses import Address
from fluxmail.message.mime import make_message_id, render
from fluxmail.message.model import Attachment, Message, build_message

WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
BASE: dict[str, Any] = {
    "subject": "Hello",
    "recipients": ["Ann <ann@example.com>"],
    "body": "Hi Ann\n",
    "sender": "Sender <sender@example.com>",
    "date": WHEN,
    "message_id": "<fixed@example.com>",
}


def build(**overrides: Any) -> Message:
    return build_message(**{**BASE, **overrides})


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def header_block(raw: bytes) -> str:
    return raw.split(b"\r\n\r\n", 1)[0].decode("utf-8") + "\r\n"


def test_plain_text_message_exact_bytes() -> None:
    """A short ASCII text message is exactly these bytes (7bit, CRLF, headers in order)."""
    assert render(build()) == (
        b"From: Sender <sender@example.com>\r\n"
        b"To: Ann <ann@example.com>\r\n"
        b"Subject: Hello\r\n"
        b"Date: Mon, 06 May 2024 07:08:09 +0000\r\n"
        b"Message-ID: <fixed@example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: text/plain; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"\r\n"
        b"Hi Ann\r\n"
    )


def test_bcc_never_appears_and_cc_does() -> None:
    """Bcc recipients are envelope-only; Cc is a header."""
    raw = render(build(cc="carol@example.com", bcc="Hidden <hidden@example.com>"))
    assert b"hidden@example.com" not in raw
    assert b"bcc" not in header_block(raw).lower().encode()
    assert "Cc: carol@example.com\r\n" in header_block(raw)


def test_to_header_omitted_when_only_bcc() -> None:
    """No To header is invented when every recipient is Bcc."""
    raw = render(build(recipients=[], bcc="hidden@example.com"))
    assert "\r\nTo:" not in header_block(raw)


def test_message_id_domain_comes_from_the_sender() -> None:
    """The generated Message-ID uses the sender's IDNA domain, never localhost."""
    message = build(sender="me@bücher.de", message_id=None)
    assert str(parse(render(message))["Message-ID"]).endswith("@xn--bcher-kva.de>")


@pytest.mark.parametrize("domain", ["localhost", "LOCALHOST", "dev.localhost", ""])
def test_make_message_id_never_uses_localhost(domain: str) -> None:
    """localhost domains fall back to the reserved fluxmail.invalid (RFC 2606)."""
    assert make_message_id(domain).endswith("@fluxmail.invalid>")


def test_make_message_id_is_unique() -> None:
    """Each call gives a new id in <left@right> form."""
    ids = {make_message_id("example.com") for _ in range(200)}
    assert len(ids) == 200
    assert all(i.startswith("<") and i.endswith("@example.com>") for i in ids)


def test_date_header_present_and_exact() -> None:
    """Date is the message's date in RFC 5322 form."""
    parsed = parse(render(build()))
    assert parsed["Date"].datetime == WHEN


@pytest.mark.parametrize(
    ("priority", "x_priority", "importance"),
    [("high", "1", "high"), ("normal", "3", "normal"), ("low", "5", "low")],
)
def test_priority_headers(priority: str, x_priority: str, importance: str) -> None:
    """priority writes X-Priority 1/3/5 and Importance high/normal/low."""
    head = header_block(render(build(priority=priority)))
    assert f"X-Priority: {x_priority}\r\nImportance: {importance}\r\n" in head


def test_no_priority_headers_by_default() -> None:
    """Without priority, neither header is written."""
    head = header_block(render(build()))
    assert "X-Priority" not in head and "Importance" not in head


def test_unsubscribe_headers_rfc8058() -> None:
    """unsubscribe_url writes List-Unsubscribe <https://...> and the One-Click POST header."""
    head = header_block(render(build(unsubscribe_url="https://example.com/u?id=42")))
    assert "List-Unsubscribe: <https://example.com/u?id=42>\r\n" in head
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in head


def test_threading_headers() -> None:
    """In-Reply-To and References are written as msg-ids."""
    head = header_block(render(build(in_reply_to="p@example.com", references=["<a@x>", "b@y"])))
    assert "In-Reply-To: <p@example.com>\r\n" in head
    assert "References: <a@x> <b@y>\r\n" in head


def test_non_ascii_subject_and_names_are_rfc2047() -> None:
    """Non-ASCII subject, display names and custom values are encoded words; headers stay ASCII."""
    message = build(
        subject="Grüße aus Köln ☕",
        recipients=[("Jürgen Groß", "j@example.com")],
        headers={"X-Note": "naïve"},
    )
    raw = render(message)
    assert header_block(raw).isascii()
    parsed = parse(raw)
    assert str(parsed["Subject"]) == "Grüße aus Köln ☕"
    assert parsed["To"].addresses[0].display_name == "Jürgen Groß"
    assert str(parsed["X-Note"]) == "naïve"


def test_encoded_word_lookalikes_are_protected() -> None:
    """A subject that looks like an encoded word reads back literally."""
    assert str(parse(render(build(subject="=?utf-8?q?hi?=")))["Subject"]) == "=?utf-8?q?hi?="


def test_long_headers_fold_under_78_and_unfold_exactly() -> None:
    """Long subjects, address lists and custom values fold at spaces and unfold to the input."""
    subject = "word " * 40 + "end"
    people = [(f"Person {i}", f"p{i}@example.com") for i in range(12)]
    value = "token-" * 10 + "  two  spaces  kept " * 8
    raw = render(build(subject=subject, recipients=people, headers={"X-Long": value}))
    lines = header_block(raw).split("\r\n")
    assert max(len(line) for line in lines) <= 78
    parsed = parse(raw)
    assert str(parsed["Subject"]) == subject
    assert [a.addr_spec for a in parsed["To"].addresses] == [p[1] for p in people]
    assert str(parsed["X-Long"]) == value.strip()


def test_long_non_ascii_subject_folds() -> None:
    """A long non-ASCII subject becomes several encoded words, each line <= 78."""
    subject = "Ünïcödé sübject " * 20
    raw = render(build(subject=subject))
    assert max(len(line) for line in header_block(raw).split("\r\n")) <= 78
    assert str(parse(raw)["Subject"]) == subject.strip()


def test_unbreakable_1000_char_token_is_line_too_long() -> None:
    """A 1000-character header word cannot be folded under 998 octets: line_too_long."""
    with pytest.raises(MessageError) as caught:
        build(headers={"X-Token": "a" * 1000})
    assert caught.value.code == "line_too_long"


def test_990_char_token_still_fits() -> None:
    """A long but foldable token gets its own continuation line under 998 octets."""
    raw = render(build(headers={"X-Token": "start " + "a" * 990}))
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert str(parse(raw)["X-Token"]) == "start " + "a" * 990


@pytest.mark.parametrize(
    ("body", "cte"),
    [
        ("plain ascii\nshort lines\n", "7bit"),
        ("x" * 200, "quoted-printable"),
        ("Grüße, mostly ASCII text here", "quoted-printable"),
        ("Привет мир, это полностью кириллица", "base64"),
        ("nul \x00 inside", "quoted-printable"),
    ],
)
def test_transfer_encoding_choice(body: str, cte: str) -> None:
    """7bit for short ASCII lines, quoted-printable when mostly ASCII, base64 otherwise."""
    parsed = parse(render(build(body=body)))
    assert parsed["Content-Transfer-Encoding"] == cte
    expected = body if body.endswith("\n") else body + "\n"
    assert parsed.get_content().replace("\r\n", "\n") == expected


@pytest.mark.parametrize("ending", ["\n", "\r", "\r\n"])
def test_body_line_endings_become_crlf(ending: str) -> None:
    """LF, CR and CRLF in bodies all become CRLF; no bare CR or LF reaches the wire."""
    raw = render(build(body=ending.join(["one", "two", "three"])))
    assert raw.endswith(b"\r\n\r\none\r\ntwo\r\nthree\r\n")
    assert raw.count(b"\n") == raw.count(b"\r\n") == raw.count(b"\r")


def _tree(raw: bytes) -> list[str]:
    return [part.get_content_type() for part in parse(raw).walk()]


@pytest.mark.parametrize(
    ("overrides", "tree"),
    [
        ({}, ["text/plain"]),
        ({"html_body": True, "body": "<p>x</p>"}, ["text/html"]),
        (
            {"html_body": True, "body": "<p>x</p>", "plain_body": "x"},
            ["multipart/alternative", "text/plain", "text/html"],
        ),
        (
            {"html_body": True, "body": "<img src=cid:l>", "inline_images": {"l": b"GIF89a"}},
            ["multipart/related", "text/html", "image/gif"],
        ),
        (
            {
                "html_body": True,
                "body": "<img src=cid:l>",
                "plain_body": "x",
                "inline_images": {"l": b"GIF89a"},
                "attachments": [("a.pdf", b"%PDF")],
            },
            [
                "multipart/mixed",
                "multipart/alternative",
                "text/plain",
                "multipart/related",
                "text/html",
                "image/gif",
                "application/pdf",
            ],
        ),
        (
            {"attachments": [("a.pdf", b"%PDF")]},
            ["multipart/mixed", "text/plain", "application/pdf"],
        ),
    ],
)
def test_mime_structure(overrides: dict[str, Any], tree: list[str]) -> None:
    """text, html, alternative, related for inline images, mixed for attachments."""
    assert _tree(render(build(**overrides))) == tree


def test_attachment_and_inline_parts_read_back() -> None:
    """Attachments and inline images keep their bytes, filenames, disposition and Content-ID."""
    data = bytes(range(256)) * 50
    message = build(
        html_body=True,
        body="<img src='cid:logo@x'>",
        inline_images={"logo@x": b"\x89PNG\r\n\x1a\n" + data},
        attachments=[("Résumé final – 2024 with a rather long name indeed.pdf", data)],
    )
    parts = [p for p in parse(render(message)).walk() if p.get_content_disposition()]
    inline, attached = parts
    assert (inline.get_content_disposition(), inline["Content-ID"]) == ("inline", "<logo@x>")
    assert inline.get_payload(decode=True) == b"\x89PNG\r\n\x1a\n" + data
    assert attached.get_filename() == "Résumé final – 2024 with a rather long name indeed.pdf"
    assert attached.get_payload(decode=True) == data


def test_boundary_never_collides_with_content() -> None:
    """A body that contains the would-be boundary gets a different boundary."""
    message = build(attachments=[("a.txt", b"x")])
    seed = hashlib.sha1(message.message_id.encode()).hexdigest()[:20]
    body = f"--=_fm_{seed}_mix\n--=_fm_{seed}_mix--\n"
    raw = render(build(body=body, attachments=[("a.txt", b"x")]))
    parsed = parse(raw)
    assert _tree(raw) == ["multipart/mixed", "text/plain", "text/plain"]
    text = next(p for p in parsed.walk() if p.get_content_type() == "text/plain")
    assert text.get_content().replace("\r\n", "\n") == body


def test_render_is_deterministic_and_lines_bounded() -> None:
    """Rendering twice gives the same bytes; no line exceeds 998 octets."""
    message = build(body="y" * 5000, attachments=[("big.bin", bytes(100_000))])
    raw = render(message)
    assert raw == render(message)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_smtputf8_addresses_stay_utf8_in_headers() -> None:
    """A non-ASCII local part is written as UTF-8 (RFC 6532); its domain is not IDNA-encoded."""
    raw = render(build(recipients=[("Jörg", "jörg@bücher.de")]))
    head = header_block(raw)
    assert "To: =?utf-8?b?SsO2cmc=?= <jörg@bücher.de>\r\n" in head
    parsed = email.message_from_string(raw.decode("utf-8"), policy=email.policy.default)
    assert parsed["To"].addresses[0].addr_spec == "jörg@bücher.de"


def test_render_refuses_injected_headers_on_unvalidated_messages() -> None:
    """A Message changed with dataclasses.replace cannot smuggle a bare LF into the headers;
    render's own last check holds too when the model's is bypassed."""
    with pytest.raises(MessageError) as caught:
        dataclasses.replace(build(), subject="Hi\nBcc: victim@example.com")
    assert caught.value.code == "header_injection"
    message = build()
    object.__setattr__(message, "subject", "Hi\nBcc: victim@example.com")
    with pytest.raises(MessageError) as caught:
        render(message)
    assert caught.value.code == "header_injection"


def test_direct_construction_gets_a_message_id() -> None:
    """A Message built directly still gets a Message-ID from its sender's domain."""
    message = Message(sender=Address("a@example.org"), to=(Address("b@example.org"),))
    assert message.message_id.endswith("@example.org>")
    assert parse(render(message))["Message-ID"] == message.message_id


def test_inline_attachment_from_object_keeps_the_given_cid() -> None:
    """An Attachment passed as an inline image takes the mapping's content id."""
    message = build(
        html_body=True, body="<img src=cid:a>", inline_images={"a": Attachment("x.png", b"\x89PNG")}
    )
    assert message.inline_images[0].content_id == "a"
