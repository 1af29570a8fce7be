"""Property tests: fluxmail's direct serializer against the standard library's EmailMessage.

For a wide range of messages, ``email.message_from_bytes(render(m), policy=default)`` must read
back the same content-type tree, the same decoded headers and the same decoded parts as the
equivalent message built with ``EmailMessage`` under ``policy.SMTP``, and the bytes must keep the
wire invariants (CRLF only, lines <= 998 octets, no Bcc, one of each owned header).

Headers are compared with the intended values as well: where the standard library cannot
round-trip its own output (for example display names longer than one encoded word, which its
parser re-joins with spaces), the intended value is the reference.
"""

from __future__ import annotations

import email
import email.policy
from datetime import datetime, timezone
from email.headerregistry import Address as StdAddress
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import idna
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxmail.message.addresses import Address
from fluxmail.message.mime import render
from fluxmail.message.model import Attachment, Message, build_message

SETTINGS = settings(max_examples=150, deadline=None)

# Printable text from many scripts, never a control or line-breaking character.
_CHARS = st.characters(
    blacklist_categories=("Cc", "Cs", "Zl", "Zp"),
    blacklist_characters="\x85\u2028\u2029",
)
_ASCII_WORD = st.text(
    "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789.,;:!?'\"()[]<>@=_-/\\", min_size=1
)
_TRICKY = st.sampled_from(["=?utf-8?q?x?=", "=?", "?=", '"', "\\", ",", "<a@b.c>", "  ", "é"])
_TEXT = st.lists(
    st.one_of(_ASCII_WORD, _TRICKY, st.text(_CHARS, min_size=1, max_size=8)), max_size=12
)
_PHRASE = _TEXT.map(" ".join)

_LOCAL = st.from_regex(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,12}(\.[A-Za-z0-9_-]{1,8})?", fullmatch=True
)
_LABEL = st.text("abcxyz019-äöüéñпримерд例子", min_size=1, max_size=12).filter(
    lambda label: not label.startswith("-") and not label.endswith("-") and "--" not in label
)
_DOMAIN = st.lists(_LABEL, min_size=1, max_size=3).map(lambda labels: ".".join([*labels, "com"]))
# One encoded word holds 42 octets; the stdlib parser adds spaces between longer names' words.
_NAME = _PHRASE.map(str.strip).filter(lambda name: len(name.encode("utf-8")) <= 42)


@st.composite
def addresses(draw: st.DrawFn) -> Address:
    return Address(addr=f"{draw(_LOCAL)}@{draw(_DOMAIN)}", name=draw(st.one_of(st.just(""), _NAME)))


_BODY_PIECE = st.one_of(
    st.text(_CHARS, max_size=40),
    st.sampled_from(["\n", "\r\n", "\r", "\n\n", ".", "From me", " \t ", "=", "\x00", "\x0c"]),
    st.text("abcdefgh ", min_size=70, max_size=1200),  # long lines
    st.text("é€😀", min_size=1, max_size=30),
)
_BODY = st.lists(_BODY_PIECE, max_size=12).map("".join)
_MIMETYPES = st.sampled_from(["application/pdf", "image/png", "text/plain", "text/csv"])
_FILENAME = _PHRASE.map(lambda text: text.replace("/", "_").replace("\\", "_") + ".bin")
_CID = st.from_regex(r"[A-Za-z0-9.]{1,20}@[a-z]{1,10}\.example", fullmatch=True)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    """A random message built through build_message (the validated path)."""
    mode = draw(st.sampled_from(["text", "html", "both"]))
    html = draw(_BODY) if mode != "text" else None
    text = draw(_BODY) if mode != "html" else None
    images = {}
    if html is not None:
        for cid in draw(st.lists(_CID, max_size=2, unique_by=str.lower)):
            images[cid] = Attachment("img.png", draw(st.binary(max_size=600)), "image/png")
    files = [
        (draw(_FILENAME), draw(st.binary(max_size=3000)), draw(_MIMETYPES))
        for _ in range(draw(st.integers(0, 3)))
    ]
    names = draw(st.lists(st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True), unique_by=str.lower))
    headers = [(f"X-Fm-{name}", draw(_PHRASE)) for name in names[:3]]
    return build_message(
        subject=draw(_PHRASE),
        recipients=draw(st.lists(addresses(), min_size=1, max_size=3)),
        cc=draw(st.lists(addresses(), max_size=3)),
        bcc=draw(st.lists(addresses(), max_size=2)),
        reply_to=draw(st.lists(addresses(), max_size=2)),
        sender=draw(addresses()),
        body=html if html is not None else (text or ""),
        html_body=html is not None,
        plain_body=text if html is not None else None,
        attachments=files,
        inline_images=images or None,
        headers=headers,
        priority=draw(st.sampled_from([None, "high", "normal", "low"])),
        unsubscribe_url=draw(st.sampled_from([None, "https://example.com/u?id=1&x=2"])),
        in_reply_to=draw(st.sampled_from([None, "<parent@example.com>"])),
        references=draw(st.lists(st.sampled_from(["<a@x.example>", "<b.c@y.example>"]))),
        date=datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc),
    )


def _ascii_domain(domain: str) -> str:
    """The reference IDNA 2008 + UTS #46 form (what the writer must produce)."""
    return idna.encode(domain, uts46=True).decode("ascii")


def _std_address(address: Address) -> StdAddress:
    domain = address.domain
    if not domain.isascii():
        domain = _ascii_domain(domain)
    return StdAddress(display_name=address.name, username=address.local, domain=domain)


def _std_file(part: EmailMessage, item: Attachment, *, inline: bool) -> None:
    maintype, subtype = item.mimetype.split("/")
    if inline:
        part.add_related(
            item.content,
            maintype,
            subtype,
            disposition="inline",
            filename=item.filename,
            cid=f"<{item.content_id}>",
        )
    else:
        part.add_attachment(item.content, maintype, subtype, filename=item.filename)


def stdlib_equivalent(message: Message) -> bytes:
    """The same message built with the standard library's EmailMessage API."""
    std = EmailMessage(policy=email.policy.SMTP)
    std["From"] = _std_address(message.sender)
    for name, people in (("To", message.to), ("Cc", message.cc), ("Reply-To", message.reply_to)):
        if people:
            std[name] = [_std_address(person) for person in people]
    std["Subject"] = message.subject
    std["Date"] = format_datetime(message.date)
    std["Message-ID"] = message.message_id
    for name, value in _extra_headers(message):
        std[name] = value
    if message.html is None:
        std.set_content(message.text or "")
    elif message.text is None:
        std.set_content(message.html, subtype="html")
    else:
        std.set_content(message.text)
        std.add_alternative(message.html, subtype="html")
    if message.inline_images:
        html_part = std if message.text is None else list(std.iter_parts())[1]
        assert isinstance(html_part, EmailMessage)
        for item in message.inline_images:
            _std_file(html_part, item, inline=True)
    for item in message.attachments:
        _std_file(std, item, inline=False)
    return std.as_bytes()


def _extra_headers(message: Message) -> list[tuple[str, str]]:
    extra: list[tuple[str, str]] = []
    if message.in_reply_to:
        extra.append(("In-Reply-To", message.in_reply_to))
    if message.references:
        extra.append(("References", " ".join(message.references)))
    if message.priority:
        number = {"high": "1", "normal": "3", "low": "5"}[message.priority]
        extra += [("X-Priority", number), ("Importance", message.priority)]
    if message.unsubscribe_url:
        extra.append(("List-Unsubscribe", f"<{message.unsubscribe_url}>"))
        extra.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    return extra + list(message.headers)


def _parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _people(parsed: EmailMessage, name: str) -> list[tuple[str, str, str]]:
    header: Any = parsed[name]
    if header is None:
        return []
    # The stdlib parser collapses runs of spaces inside decoded display names.
    return [(" ".join(a.display_name.split()), a.username, a.domain) for a in header.addresses]


def _expected_people(people: tuple[Address, ...]) -> list[tuple[str, str, str]]:
    return [
        (
            " ".join(p.name.split()),
            p.local,
            _ascii_domain(p.domain) if not p.domain.isascii() else p.domain,
        )
        for p in people
    ]


def _leaves(parsed: EmailMessage) -> list[dict[str, Any]]:
    leaves = []
    for part in parsed.walk():
        if part.is_multipart():
            continue
        if part.get_content_disposition() is None:
            content = part.get_content().replace("\r\n", "\n")
            leaves.append({"type": part.get_content_type(), "text": content})
        else:
            leaves.append(
                {
                    "type": part.get_content_type(),
                    "bytes": part.get_payload(decode=True),
                    "disposition": part.get_content_disposition(),
                    "cid": part["Content-ID"],
                }
            )
    return leaves


def _check_wire(raw: bytes) -> None:
    assert raw.count(b"\n") == raw.count(b"\r\n") == raw.count(b"\r")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert not any(line.lower().startswith(b"bcc:") for line in head.split(b"\r\n"))
    assert raw.endswith(b"\r\n")


@SETTINGS
@given(messages())
def test_render_reads_back_like_the_stdlib_equivalent(message: Message) -> None:
    """Structure, decoded headers and decoded parts equal the stdlib-built message's."""
    raw = render(message)
    _check_wire(raw)
    mine, std = _parse(raw), _parse(stdlib_equivalent(message))
    assert [p.get_content_type() for p in mine.walk()] == [p.get_content_type() for p in std.walk()]
    assert _leaves(mine) == _leaves(std)
    for part in mine.walk():
        assert not part.defects
    # The stdlib decodes encoded-word look-alikes inside quoted filenames: compare with the input.
    files = [*message.inline_images, *message.attachments]
    filenames = [p.get_filename() for p in mine.walk() if p.get_content_disposition()]
    assert filenames == [item.filename.strip() for item in files]
    for name, people in (("From", (message.sender,)), ("To", message.to), ("Cc", message.cc)):
        assert _people(mine, name) == _expected_people(people)
    assert _people(mine, "Reply-To") == _expected_people(message.reply_to)
    assert str(mine["Subject"]) == message.subject
    for name, value in _extra_headers(message):
        assert str(mine[name]) == value, name
        assert len(mine.get_all(name) or []) == 1
    assert mine["Date"].datetime == message.date
    assert str(mine["Message-ID"]) == message.message_id
    for owned in ("From", "Subject", "Date", "Message-ID", "MIME-Version"):
        assert len(mine.get_all(owned) or []) == 1
    assert mine["Bcc"] is None


@SETTINGS
@given(messages())
def test_render_is_deterministic(message: Message) -> None:
    """The same Message always renders to the same bytes (the snapshot equals what is sent)."""
    assert render(message) == render(message)


@SETTINGS
@given(_BODY, _BODY)
def test_text_bodies_survive_any_line_endings(text: str, html: str) -> None:
    """Bodies come back equal to the input with CR, LF and CRLF normalized, plus a final EOL."""
    message = build_message(
        subject="s",
        recipients="a@example.com",
        sender="b@example.com",
        body=html,
        html_body=True,
        plain_body=text,
    )
    raw = render(message)
    _check_wire(raw)
    leaves = _leaves(_parse(raw))
    for leaf, original in zip(leaves, (text, html), strict=True):
        expected = original.replace("\r\n", "\n").replace("\r", "\n")
        if not expected.endswith("\n"):
            expected += "\n"
        assert leaf["text"] == expected
