"""DKIM signatures over the bytes drafts produce, checked by dkimpy's verifier (RFC 6376)."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from fluxmail import FluxMail
from fluxmail.errors import ConfigurationError, MessageError
from fluxmail.message.dkim import header_list, sign
from fluxmail.message.mime import render
from tests.support.dkim import (
    DOMAIN,
    ed_pem,
    ed_seed_b64,
    rsa_pem,
    signatures,
    tags,
    verify_all,
    zone,
)

KEYS = {"rsa": rsa_pem, "rsa-pkcs8": lambda: rsa_pem(pkcs8=True), "ed25519": ed_pem,
        "ed25519-seed": ed_seed_b64}  # fmt: skip


def mailer(key: str, **extra: Any) -> FluxMail:
    return FluxMail(object_type="memory", sender=f"Shop <shop@{DOMAIN}>", dkim_domain=DOMAIN,
                    dkim_selector="s1", dkim_private_key=key, **extra)  # fmt: skip


MESSAGES: dict[str, dict[str, Any]] = {
    "text": {"body": "Hello,\nplain text.\n"},
    "html": {"body": "<p>Hi <b>there</b></p>", "html_body": True, "plain_body": "Hi there"},
    "attachments": {
        "body": "see attached",
        "attachments": [("report.pdf", bytes(range(256)) * 40), ("notes.txt", b"a\r\nb\n")],
    },
    "non-ascii headers": {
        "subject": "Grüße aus Köln – 東京 ✓ " * 4,
        "sender": f"Zoë Ünïcode <zoe@{DOMAIN}>",
        "recipients": ["Renée Müller <renee@example.org>"],
        "body": "Ça va? ünïcödé body",
    },
    "long lines": {"body": "x" * 5000 + "\n" + "word " * 2000, "subject": "s " * 300},
}


def _create(m: FluxMail, **fields: Any) -> bytes:
    args = {"subject": "Hi", "recipients": ["to@example.org"], "body": "b", **fields}
    return m.create(**args).as_bytes()


@pytest.mark.parametrize("kind", list(MESSAGES))
@pytest.mark.parametrize("key_kind", list(KEYS))
def test_every_message_shape_verifies(kind: str, key_kind: str) -> None:
    key = KEYS[key_kind]()
    data = _create(mailer(key), **MESSAGES[kind])
    assert verify_all(data, zone({"s1": key})) == [True]
    found = tags(data)
    assert found["a"] == ("rsa-sha256" if key_kind.startswith("rsa") else "ed25519-sha256")
    assert (found["c"], found["d"], found["s"]) == ("relaxed/relaxed", DOMAIN, "s1")


def test_the_signature_is_prepended_and_nothing_else_changes() -> None:
    m = mailer(rsa_pem())
    draft = m.create("Hi", ["to@example.org"], "body")
    signed, plain = draft.as_bytes(), render(draft.message)
    assert signed.startswith(b"DKIM-Signature: ") and signed.endswith(plain)
    header = signed[: len(signed) - len(plain)]
    assert header.endswith(b"\r\n") and signatures(signed) == 1
    assert all(len(line) <= 78 for line in header.split(b"\r\n"))
    assert draft.as_bytes() is signed  # signed once per draft


def test_two_signatures_rsa_and_ed25519_both_verify() -> None:
    rsa_key, ed_key = rsa_pem(), ed_pem()
    m = mailer(rsa_key, dkim_second_selector="s2", dkim_second_private_key=ed_key)
    data = _create(m, **MESSAGES["attachments"])
    assert verify_all(data, zone({"s1": rsa_key, "s2": ed_key})) == [True, True]
    assert [tags(data, i)["a"] for i in (0, 1)] == ["rsa-sha256", "ed25519-sha256"]
    assert "dkim-signature" not in tags(data, 1)["h"]  # each signs the message, not the other
    # A verifier that knows only one key still accepts that signature.
    assert verify_all(data, zone({"s1": rsa_key})) == [True, False]


@pytest.mark.parametrize("key_kind", ["rsa", "ed25519"])
def test_a_changed_body_byte_breaks_the_signature(key_kind: str) -> None:
    key = KEYS[key_kind]()
    data = _create(mailer(key), body="pay 100 EUR to account 1234")
    assert b"100" in data
    assert verify_all(data.replace(b"100", b"900"), zone({"s1": key})) == [False]


@pytest.mark.parametrize(
    "added", [b"From: Mallory <m@evil.example>", b"Subject: urgent", b"To: x@evil.example",
              b"Date: Thu, 01 Jan 2026 00:00:00 +0000", b"Message-ID: <x@evil.example>"]
)  # fmt: skip
def test_an_added_oversigned_header_breaks_the_signature(added: bytes) -> None:
    key = rsa_pem()
    data = _create(mailer(key))
    records = zone({"s1": key})
    assert verify_all(b"X-Ok: an unsigned header\r\n" + data, records) == [True]
    head, _, body = data.partition(b"\r\n\r\n")
    for tampered in (
        head + b"\r\n" + added + b"\r\n\r\n" + body,  # below the originals
        data.replace(b"\r\nFrom:", b"\r\n" + added + b"\r\nFrom:", 1),  # above them
    ):
        assert verify_all(tampered, records) == [False], added


def test_the_header_list_follows_rfc_6376() -> None:
    key = rsa_pem()
    m = mailer(key)
    data = _create(m, cc=["c@example.org"], bcc=["hidden@example.org"], reply_to="r@example.com",
                   in_reply_to="<a@b.example>", references=["<a@b.example>"],
                   unsubscribe_url="https://example.com/u?id=1")  # fmt: skip
    h = tags(data)["h"].split(":")
    for name in ("from", "subject", "to", "date", "message-id"):
        assert h.count(name) == 2, name  # over-signed: one more than present
    for name in ("cc", "reply-to", "mime-version", "content-type", "in-reply-to", "references",
                 "list-unsubscribe", "list-unsubscribe-post"):  # fmt: skip
        assert h.count(name) == 1, name
    assert "bcc" not in h and b"hidden@" not in data
    assert verify_all(data, zone({"s1": key})) == [True]
    assert header_list(["From", "To", "To"]).count(b"to") == 3


def test_a_from_outside_the_domain_is_refused_before_sending() -> None:
    m = mailer(ed_pem())
    with pytest.raises(MessageError) as info:
        m.create("Hi", ["to@example.org"], "b", sender="x@other.example").send()
    assert info.value.code == "dkim_unaligned"
    assert "FLUXMAIL_DKIM_ALLOW_UNALIGNED" in info.value.message
    # A subdomain aligns (relaxed); a look-alike suffix does not.
    key = ed_pem()
    ok = _create(mailer(key), sender=f"news@mail.{DOMAIN}")
    assert verify_all(ok, zone({"s1": key})) == [True]
    with pytest.raises(MessageError):
        _create(mailer(key), sender=f"x@bad{DOMAIN}")


def test_allow_unaligned_signs_any_from() -> None:
    key = ed_pem()
    data = _create(mailer(key, dkim_allow_unaligned=True), sender="x@other.example")
    assert tags(data)["d"] == DOMAIN and verify_all(data, zone({"s1": key})) == [True]


def test_unaligned_bulk_items_fail_alone() -> None:
    key = ed_pem()
    m = mailer(key)
    items = [{"subject": "a", "recipients": "a@example.org", "body": "x"},
             {"subject": "b", "recipients": "b@example.org", "body": "x",
              "sender": "o@x.example"}]  # fmt: skip
    outcomes = sorted(m.send_many(items), key=lambda o: o.index)
    assert [o.ok for o in outcomes] == [True, False]
    assert outcomes[1].error is not None and outcomes[1].error.code == "dkim_unaligned"


def test_without_dkimpy_the_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dkim", None)  # `import dkim` now raises ImportError
    with pytest.raises(ConfigurationError) as info:
        mailer(rsa_pem())
    assert info.value.code == "missing_extra" and "fluxmail[dkim]" in info.value.message
    with pytest.raises(ConfigurationError):
        sign(b"From: a@example.com\r\n\r\nx", ())
    FluxMail(object_type="memory", sender="a@example.com").create("s", "t@example.org", "b")


def test_a_draft_is_rendered_once_when_threads_race_for_its_bytes() -> None:
    """The signature carries a timestamp, so two renders differ: a draft shared by threads
    renders once, under its own lock, and every thread gets the same signed bytes."""
    import threading

    key = rsa_pem()
    m = mailer(key)
    renders = []
    original = m._render

    def counted(message: Any) -> bytes:
        renders.append(1)
        return original(message)

    m._render = counted  # type: ignore[method-assign]
    draft = m.create(subject="Hi", recipients=["to@example.org"], body="b")
    start = threading.Barrier(8)
    seen: list[bytes] = []

    def read() -> None:
        start.wait()
        seen.append(draft.as_bytes())

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(renders) == 1 and len(set(seen)) == 1 and len(seen) == 8
    assert verify_all(seen[0], zone({"s1": key})) == [True]
