"""build_message: validation with stable error codes, attachments, the frozen Message model."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from fluxmail.errors import MessageError
from fluxmail.message.addresses import Address
from fluxmail.message.model import Attachment, Message, build_message

BASE: dict[str, Any] = {
    "subject": "Hello",
    "recipients": ["ann@example.com"],
    "body": "Hi Ann",
    "sender": "Sender <sender@example.com>",
}


def build(**overrides: Any) -> Message:
    return build_message(**{**BASE, **overrides})


BAD_INPUT = [
    ("header_injection", {"subject": "Hi\r\nBcc: victim@example.com"}),
    ("header_injection", {"subject": "Hi\nthere"}),
    ("header_injection", {"subject": "Hi\x00"}),
    ("header_injection", {"subject": "Hi\x0bthere"}),
    ("header_injection", {"subject": "Hi\x0cthere"}),
    ("header_injection", {"subject": "Hi\x1cthere"}),
    ("header_injection", {"subject": "Hi\x1dthere"}),
    ("header_injection", {"subject": "Hi\x1ethere"}),
    ("header_injection", {"subject": "Hi\x85there"}),
    ("header_injection", {"subject": "Hi\u2028there"}),
    ("header_injection", {"subject": "Hi\u2029there"}),
    ("header_injection", {"headers": {"X-Tag": "a\r\nBcc: victim@example.com"}}),
    ("header_injection", {"headers": {"X-Tag\r\nBcc": "x"}}),
    ("header_injection", {"recipients": ["ann@example.com\r\nBcc: victim@example.com"]}),
    ("header_injection", {"recipients": [("Ann\nBcc: x@example.com", "ann@example.com")]}),
    ("header_injection", {"sender": "Eve\r <eve@example.com>"}),
    ("header_injection", {"attachments": [("a\r\n.txt", b"x")]}),
    ("header_injection", {"in_reply_to": "<a@b>\r\nBcc: x@example.com"}),
    ("header_injection", {"unsubscribe_url": "https://example.com/\r\nBcc: x"}),
    ("invalid_address", {"recipients": ["not an address"]}),
    ("invalid_address", {"recipients": ["alice@example.org)<bob@example.org>"]}),
    ("invalid_address", {"cc": "Smith, Ann <ann@example.com>"}),
    ("invalid_address", {"bcc": ["ann@@example.com"]}),
    ("invalid_address", {"reply_to": "nobody"}),
    ("invalid_address", {"sender": "nope"}),
    ("invalid_address", {"sender": None}),
    ("no_recipients", {"recipients": []}),
    ("no_recipients", {"recipients": None, "cc": [], "bcc": None}),
    ("attachment_not_found", {"attachments": ["/nonexistent/file.pdf"]}),
    ("invalid_attachment", {"attachments": ["/"]}),
    ("invalid_attachment", {"attachments": ["/dev/null"]}),
    ("invalid_attachment", {"attachments": [("a.txt", "text, not bytes")]}),
    ("invalid_attachment", {"attachments": [("", b"x")]}),
    ("invalid_attachment", {"attachments": [("../etc/passwd", b"x")]}),
    ("invalid_attachment", {"attachments": [("a.txt", b"x", "not a type")]}),
    ("invalid_attachment", {"attachments": [("a.eml", b"x", "message/rfc822")]}),
    ("invalid_attachment", {"attachments": [("a.bin", b"x", "application/" + "x" * 300)]}),
    ("invalid_attachment", {"attachments": [42]}),
    ("invalid_attachment", {"inline_images": {"logo": b"\x89PNG\r\n\x1a\n"}}),
    ("invalid_attachment", {"inline_images": {"bad cid": b"x"}, "html_body": True}),
    ("reserved_header", {"headers": {"From": "x@example.com"}}),
    ("reserved_header", {"headers": {"to": "x@example.com"}}),
    ("reserved_header", {"headers": {"CC": "x@example.com"}}),
    ("reserved_header", {"headers": {"Bcc": "x@example.com"}}),
    ("reserved_header", {"headers": {"Subject": "x"}}),
    ("reserved_header", {"headers": {"Date": "x"}}),
    ("reserved_header", {"headers": {"Message-ID": "<x@y>"}}),
    ("reserved_header", {"headers": {"MIME-Version": "1.0"}}),
    ("reserved_header", {"headers": {"Content-Type": "text/html"}}),
    ("reserved_header", {"headers": {"content-transfer-encoding": "8bit"}}),
    ("reserved_header", {"headers": {"Reply-To": "x@example.com"}, "reply_to": "y@example.com"}),
    ("reserved_header", {"headers": {"In-Reply-To": "<a@b>"}, "in_reply_to": "<c@d>"}),
    ("reserved_header", {"headers": {"References": "<a@b>"}, "references": "<c@d>"}),
    (
        "reserved_header",
        {"headers": {"List-Unsubscribe": "<mailto:u@x>"}, "unsubscribe_url": "https://x.example/u"},
    ),
    ("reserved_header", {"headers": {"X-Priority": "1"}, "priority": "low"}),
    ("duplicate_header", {"headers": [("Reply-To", "a@example.com"), ("reply-to", "b@x.com")]}),
    ("invalid_header_name", {"headers": {"X Tag": "x"}}),
    ("invalid_header_name", {"headers": {"X:Tag": "x"}}),
    ("invalid_header_name", {"headers": {"": "x"}}),
    ("invalid_header_name", {"headers": {"X-Tägg": "x"}}),
    ("invalid_header_value", {"headers": {"X-Tag": b"bytes"}}),
    ("line_too_long", {"subject": "x" * 1000}),
    ("line_too_long", {"headers": {"X-Token": "a" * 1000}}),
    ("line_too_long", {"headers": {"X-Token": "short " + "a" * 998}}),
    ("invalid_unsubscribe_url", {"unsubscribe_url": "http://example.com/u"}),
    ("invalid_unsubscribe_url", {"unsubscribe_url": "mailto:u@example.com"}),
    ("invalid_unsubscribe_url", {"unsubscribe_url": "https:///nohost"}),
    ("invalid_unsubscribe_url", {"unsubscribe_url": "https://example.com/ü"}),
    ("invalid_unsubscribe_url", {"unsubscribe_url": "https://example.com/<x>"}),
    ("invalid_priority", {"priority": "urgent"}),
    ("invalid_priority", {"priority": 1}),
    ("invalid_message_id", {"in_reply_to": "no-at-sign"}),
    ("invalid_message_id", {"references": ["<ok@x>", "bad"]}),
    ("invalid_message_id", {"message_id": "<a b@c>"}),
    ("invalid_body", {"plain_body": "text without html"}),
    ("invalid_body", {"body": b"bytes"}),
    ("invalid_body", {"body": "lone surrogate \ud800"}),
    ("invalid_message", {"idempotency_key": ""}),
    ("invalid_message", {"date": "yesterday"}),
    # Wrong types: refused where they enter, never a TypeError/ValueError/AttributeError.
    ("invalid_header_value", {"headers": {"X-A": 123}}),
    ("invalid_header_value", {"headers": "X-A: b"}),
    ("invalid_header_value", {"headers": ["X-A"]}),
    ("invalid_header_value", {"headers": 5}),
    ("invalid_attachment", {"attachments": False}),
    ("invalid_attachment", {"attachments": 42}),
    ("invalid_attachment", {"attachments": ["a\x00.txt"]}),
    ("invalid_attachment", {"attachments": ["\ud800.txt"]}),
    ("invalid_attachment", {"attachments": ["x" * 5000]}),
    ("invalid_attachment", {"inline_images": ["logo.png"], "html_body": True}),
    ("invalid_message_id", {"references": 5}),
    ("invalid_message_id", {"references": b"<a@b>"}),
    ("invalid_message_id", {"in_reply_to": ["<a@b>"]}),
    ("invalid_message_id", {"message_id": 5}),
    ("invalid_message", {"html_body": "no"}),
    ("invalid_message", {"inline_css": 1}),
    ("invalid_message", {"idempotency_key": "key\x00"}),
    ("invalid_metadata", {"metadata": "ab"}),
    ("invalid_metadata", {"metadata": [("a", 1)]}),
    ("invalid_metadata", {"metadata": {1: "x"}}),
    ("invalid_metadata", {"metadata": {"score": float("nan")}}),
    ("invalid_metadata", {"metadata": {"when": datetime(2024, 1, 1)}}),
    ("invalid_metadata", {"metadata": {"raw": b"x"}}),
    ("invalid_metadata", {"metadata": {"text": "a\x00b"}}),
    ("invalid_metadata", {"metadata": {"big": 10**5000}}),
    ("invalid_metadata", {"metadata": {"nested": {"deep": [{"x": float("inf")}]}}}),
]


@pytest.mark.parametrize(("code", "overrides"), BAD_INPUT)
def test_bad_input_raises_a_stable_code(code: str, overrides: dict[str, Any]) -> None:
    """Each kind of bad input raises MessageError with its documented code."""
    with pytest.raises(MessageError) as caught:
        build(**overrides)
    assert caught.value.code == code


def test_fifo_attachment_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO is refused by stat() before it is opened (opening would block)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(MessageError) as caught:
        build(attachments=[fifo])
    assert caught.value.code == "invalid_attachment"


def test_socket_attachment_is_refused(tmp_path: Path) -> None:
    """A Unix socket is not a regular file: invalid_attachment."""
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(MessageError) as caught:
            Attachment.from_path(path)
    assert caught.value.code == "invalid_attachment"


def test_directory_attachment_is_refused(tmp_path: Path) -> None:
    """A directory is not a regular file: invalid_attachment."""
    with pytest.raises(MessageError) as caught:
        Attachment.from_path(tmp_path)
    assert caught.value.code == "invalid_attachment"


def test_attachment_forms(tmp_path: Path) -> None:
    """Paths (str and PathLike), Attachment objects and (name, bytes[, type]) tuples all work."""
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4")
    symlink = tmp_path / "link.csv"
    (tmp_path / "data.csv").write_bytes(b"a,b\n")
    symlink.symlink_to(tmp_path / "data.csv")
    message = build(
        attachments=[
            str(report),
            symlink,
            Attachment("x.bin", b"\x00\x01", "application/octet-stream"),
            ("notes.txt", b"hello"),
            ("data", b"\x00", "application/x-custom"),
            ("unknown.zzzz", bytearray(b"z")),
        ]
    )
    got = [(a.filename, a.mimetype, a.content) for a in message.attachments]
    assert got == [
        ("report.pdf", "application/pdf", b"%PDF-1.4"),
        ("link.csv", "text/csv", b"a,b\n"),
        ("x.bin", "application/octet-stream", b"\x00\x01"),
        ("notes.txt", "text/plain", b"hello"),
        ("data", "application/x-custom", b"\x00"),
        ("unknown.zzzz", "application/octet-stream", b"z"),
    ]


def test_single_attachment_needs_no_list(tmp_path: Path) -> None:
    """One path, Attachment or tuple may be passed without wrapping it in a list."""
    path = tmp_path / "a.txt"
    path.write_bytes(b"a")
    assert len(build(attachments=str(path)).attachments) == 1
    assert len(build(attachments=("b.txt", b"b")).attachments) == 1


def test_from_path_options_and_sha256(tmp_path: Path) -> None:
    """from_path takes an explicit filename, type and content id; sha256 is of the content."""
    path = tmp_path / "logo.bin"
    path.write_bytes(b"abc")
    item = Attachment.from_path(path, mimetype="image/png", filename="logo.png", content_id="<l@x>")
    assert (item.filename, item.mimetype, item.content_id) == ("logo.png", "image/png", "l@x")
    assert item.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert "abc" not in repr(item)


def test_inline_images_forms(tmp_path: Path) -> None:
    """Inline images come from paths, bytes (type sniffed) or Attachments, keyed by content id."""
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0")
    message = build(
        body="<img src='cid:logo'>",
        html_body=True,
        inline_images={
            "logo": png,
            "<photo@example.com>": path,
            "gif": Attachment("a.gif", b"GIF89a", "image/gif"),
        },
    )
    got = [(a.content_id, a.mimetype, a.filename) for a in message.inline_images]
    assert got == [
        ("logo", "image/png", "logo.png"),
        ("photo@example.com", "image/jpeg", "photo.jpg"),
        ("gif", "image/gif", "a.gif"),
    ]


def test_bodies_follow_the_upstream_meaning() -> None:
    """html_body=True makes body the HTML; plain_body adds the text alternative."""
    assert (build().text, build().html) == ("Hi Ann", None)
    html_only = build(body="<p>Hi</p>", html_body=True)
    assert (html_only.text, html_only.html) == (None, "<p>Hi</p>")
    both = build(body="<p>Hi</p>", html_body=True, plain_body="Hi")
    assert (both.text, both.html) == ("Hi", "<p>Hi</p>")


def test_inline_css_is_applied_to_html() -> None:
    """inline_css=True moves simple <style> rules into style attributes."""
    pytest.importorskip("css_inline")
    html = "<style>p { color: red }</style><p>Hi</p>"
    message = build(body=html, html_body=True, inline_css=True)
    assert message.html is not None and '<p style="color: red;">Hi</p>' in message.html
    assert "<style" not in message.html
    assert build(body=html, html_body=True).html == html


# Runs build_message in a fresh interpreter where `import css_inline` fails, as it does when the
# css extra is not installed (a meta path finder refuses it; nothing is mocked).
WITHOUT_CSS_INLINE = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "css_inline":
            raise ImportError("No module named " + repr(name))
sys.meta_path.insert(0, Refuse())
from fluxmail.errors import ConfigurationError
from fluxmail.message.model import build_message
args = dict(subject="s", recipients="a@example.com", body="<p>x</p>", sender="b@example.com")
print(build_message(**args, html_body=True).html)
try:
    build_message(**args, html_body=True, inline_css=True)
except ConfigurationError as exc:
    print(exc.code, exc)
"""


def test_inline_css_without_the_extra_names_it() -> None:
    """Without css-inline, inline_css=True is a ConfigurationError that says what to install."""
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_CSS_INLINE],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    plain, error = done.stdout.splitlines()
    assert plain == "<p>x</p>"  # without inline_css nothing needs the extra
    assert error.startswith("missing_extra ") and "pip install 'fluxmail[css]'" in error


def test_envelope_recipients_dedup_across_to_cc_bcc() -> None:
    """To, Cc, Bcc in order; an address repeated in any case is delivered once."""
    message = build(
        recipients=["Ann <ann@example.com>", "bob@example.com"],
        cc=["ANN@example.com", "carol@example.com"],
        bcc=["Bob@Example.com", "dave@example.com", "dave@example.com"],
    )
    got = [a.addr for a in message.envelope_recipients]
    assert got == ["ann@example.com", "bob@example.com", "carol@example.com", "dave@example.com"]


def test_only_cc_or_bcc_recipients_is_enough() -> None:
    """A message with no To but a Bcc has recipients."""
    message = build(recipients=[], bcc="hidden@example.com")
    assert [a.addr for a in message.envelope_recipients] == ["hidden@example.com"]


def test_needs_smtputf8() -> None:
    """Only a non-ASCII local part anywhere makes the message need SMTPUTF8."""
    assert not build(recipients="ann@bücher.de").needs_smtputf8
    assert build(bcc="jörg@example.com").needs_smtputf8
    assert build(sender="jörg@example.com").needs_smtputf8


def test_message_is_frozen_and_metadata_read_only() -> None:
    """Message fields cannot be reassigned and metadata cannot be mutated."""
    source = {"campaign": "spring"}
    message = build(metadata=source)
    source["campaign"] = "changed"
    assert message.metadata["campaign"] == "spring"
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.subject = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        message.metadata["x"] = 1  # type: ignore[index]
    assert hash(message) == hash(message)


def test_content_hash_ignores_message_id_and_date() -> None:
    """Same content, different Message-ID and Date: same hash; any content change: new hash."""
    first = build(message_id="<a@example.com>", date=datetime(2024, 1, 1, tzinfo=timezone.utc))
    second = build(message_id="<b@example.com>", date=datetime(2025, 1, 1, tzinfo=timezone.utc))
    assert first.content_hash() == second.content_hash()
    assert build(subject="Other").content_hash() != first.content_hash()
    assert build(bcc="x@example.com").content_hash() != first.content_hash()
    assert (
        build(attachments=[("a", b"1")]).content_hash()
        != build(attachments=[("a", b"2")]).content_hash()
    )


def test_message_id_and_date() -> None:
    """Message-ID defaults to the sender's IDNA domain; naive dates are taken as UTC."""
    message = build(sender="me@bücher.de")
    assert message.message_id.startswith("<") and message.message_id.endswith("@xn--bcher-kva.de>")
    assert build().message_id != build().message_id
    assert build(message_id="abc@example.com").message_id == "<abc@example.com>"
    naive = build(date=datetime(2024, 1, 2, 3, 4, 5)).date
    assert naive.utcoffset() == timedelta(0)
    now = datetime.now(timezone.utc)
    assert abs(build().date - now) < timedelta(minutes=1)


def test_optional_headers_are_normalized() -> None:
    """Subject and values are stripped, ids bracketed, priority lower-cased."""
    message = build(
        subject="  Hello  ",
        in_reply_to="parent@example.com",
        references="<a@example.com>  b@example.com",
        priority=" HIGH ",
        headers=[("X-Campaign", "  spring  "), ("X-Count", "3")],
    )
    assert message.subject == "Hello"
    assert message.in_reply_to == "<parent@example.com>"
    assert message.references == ("<a@example.com>", "<b@example.com>")
    assert message.priority == "high"
    assert message.headers == (("X-Campaign", "spring"), ("X-Count", "3"))


def test_headers_accept_a_mapping_or_string_pairs() -> None:
    """headers= is a mapping or (name, value) pairs (the CLI's form), all strings."""
    assert build(headers={"X-A": "1"}).headers == (("X-A", "1"),)
    assert build(headers=[("X-A", "1"), ["X-B", "2"]]).headers == (("X-A", "1"), ("X-B", "2"))
    assert build(headers={}).headers == build(headers=None).headers == ()


def test_metadata_keeps_json_values() -> None:
    """JSON values (nested too) are kept as given; the mapping is read-only."""
    data = {"user": 7, "tags": ["a", "b"], "ratio": 0.5, "ok": True, "none": None, "n": {"x": 1}}
    message = build(metadata=data)
    assert dict(message.metadata) == data
    with pytest.raises(TypeError):
        message.metadata["user"] = 8  # type: ignore[index]


def test_empty_optional_ids_mean_none() -> None:
    """in_reply_to="" and message_id="" are "not given", as before."""
    message = build(in_reply_to="", message_id="")
    assert message.in_reply_to is None and message.message_id.startswith("<")


def test_conditional_headers_allowed_without_their_parameter() -> None:
    """Reply-To, List-Unsubscribe etc. may be custom headers when their parameter is unused."""
    message = build(headers={"List-Unsubscribe": "<mailto:u@example.com>", "Sender": "s@x.com"})
    assert message.headers == (
        ("List-Unsubscribe", "<mailto:u@example.com>"),
        ("Sender", "s@x.com"),
    )


def test_sender_accepts_address_objects() -> None:
    """A resolved Address passes through unchanged."""
    assert build(sender=Address("me@example.com", "Me")).sender == Address("me@example.com", "Me")


def test_messages_without_metadata_share_one_read_only_empty_view() -> None:
    """No per-message mapping proxy for absent or empty metadata (bulk: one GC-counted object
    less a message); given metadata is still copied, and no view can be written through."""
    import pickle

    from fluxmail.message.model import NO_METADATA

    def built(**extra: Any) -> Message:
        return build_message(
            subject="s", recipients=["b@example.com"], body="x", sender="a@example.com", **extra
        )

    for metadata in (None, {}):
        assert built(metadata=metadata).metadata is NO_METADATA
    assert pickle.loads(pickle.dumps(built())).metadata is NO_METADATA
    given = {"campaign": "spring"}
    message = built(metadata=given)
    given["campaign"] = "changed"
    assert dict(message.metadata) == {"campaign": "spring"}
    assert dict(pickle.loads(pickle.dumps(message)).metadata) == {"campaign": "spring"}
    for view in (NO_METADATA, message.metadata):
        with pytest.raises(TypeError):
            view["x"] = 1  # type: ignore[index]
    assert dict(NO_METADATA) == {}
