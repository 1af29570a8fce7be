"""create(template=...), send_many() with templates and FLUXMAIL_TEMPLATES_DIR, end to end."""

from __future__ import annotations

import email
import email.policy
import sys
import tracemalloc
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from fluxmail import ConfigurationError, FluxMail, MessageError
from fluxmail.testing import outbox
from tests.support.mailing import mailer_for

pytest.importorskip("jinja2")
pytest.importorskip("css_inline")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    files = {
        "layout.html": (
            "<html><head><style>p.note { color: red }</style></head>"
            "<body>{% block content %}{% endblock %}</body></html>"
        ),
        "welcome.subject": "Welcome, {{ name }}!\n",
        "welcome.txt": "Hi {{ name }}\n",
        "welcome.html": (
            '{% extends "layout.html" %}'
            '{% block content %}<p class="note">Hi {{ name }}</p>{% endblock %}'
        ),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


@pytest.fixture
def mailer(folder: Path) -> Iterator[FluxMail]:
    outbox.clear()
    built = FluxMail(object_type="memory", sender="shop@example.com", templates_dir=str(folder))
    yield built
    built.close()


def parse(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def test_create_renders_a_multipart_message_with_inlined_css(mailer: FluxMail) -> None:
    """Subject, text and HTML from the files; both bodies -> multipart/alternative; the
    layout's <style> rule ends up in style="" (inlining is on for templates)."""
    draft = mailer.create(template="welcome", context={"name": "Ada"}, recipients="a@example.com")
    assert draft.message.subject == "Welcome, Ada!"
    assert draft.message.text == "Hi Ada"
    assert draft.message.html is not None
    assert '<p class="note" style="color: red;">Hi Ada</p>' in draft.message.html
    assert "<style" not in draft.message.html
    parsed = parse(draft.as_bytes())
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["Subject"] == "Welcome, Ada!"
    draft.send()
    assert len(outbox) == 1


def test_inline_css_false_keeps_the_style_block(mailer: FluxMail) -> None:
    """inline_css=False turns the default off for one message."""
    draft = mailer.create(
        template="welcome", context={"name": "Ada"}, recipients="a@example.com", inline_css=False
    )
    assert draft.message.html is not None and "<style>" in draft.message.html


def test_other_create_arguments_work_with_a_template(folder: Path, tmp_path: Path) -> None:
    """cc, bcc, attachments, headers, metadata and idempotency_key apply as without one."""
    mailer = FluxMail(
        object_type="memory", sender="shop@example.com", templates_dir=str(folder),
        audit=True, audit_dir=str(tmp_path / "audit"),
    )  # fmt: skip
    try:
        draft = mailer.create(
            template="welcome", context={"name": "Ada"}, recipients=["a@example.com"],
            cc="c@example.com", bcc="b@example.com", attachments=[("r.csv", b"a,b\n")],
            headers={"X-Campaign": "spring"}, idempotency_key="welcome-ada",
            metadata={"user": 7}, reply_to="help@example.com",
        )  # fmt: skip
        first, again = draft.send(), draft.send()
        assert first.status == "sent" and again.replayed
        parsed = parse(draft.as_bytes())
        assert parsed["X-Campaign"] == "spring" and parsed["Cc"] == "c@example.com"
        assert parsed.get_content_type() == "multipart/mixed"
        assert [p.get_filename() for p in parsed.iter_attachments()] == ["r.csv"]
        assert {a.addr for a in draft.message.envelope_recipients} == {
            "a@example.com", "c@example.com", "b@example.com",
        }  # fmt: skip
    finally:
        mailer.close()


def test_crlf_from_the_context_cannot_inject_headers(mailer: FluxMail) -> None:
    """A context value that puts a line break in the subject is header_injection."""
    for value in ("Ada\r\nBcc: eve@example.com", "Ada\nX: y", "Ada\r"):
        with pytest.raises(MessageError) as caught:
            mailer.create(template="welcome", context={"name": value}, recipients="a@example.com")
        assert caught.value.code == "header_injection"
    assert len(outbox) == 0


def test_missing_variable_before_anything_is_sent(mailer: FluxMail) -> None:
    """No context: template_variable_missing naming 'name'; nothing sent."""
    with pytest.raises(MessageError) as caught:
        mailer.create(template="welcome", recipients="a@example.com")
    assert caught.value.code == "template_variable_missing"
    assert caught.value.details["variable"] == "name"
    assert len(outbox) == 0


@pytest.mark.parametrize(
    "extra",
    [
        {"subject": "Hi"},
        {"body": "x"},
        {"plain_body": "x"},
        {"html_body": True},
    ],
)
def test_a_template_replaces_subject_and_bodies(mailer: FluxMail, extra: dict[str, Any]) -> None:
    """template= with subject=/body=/plain_body=/html_body=True is refused, not merged."""
    with pytest.raises(MessageError) as caught:
        mailer.create(template="welcome", context={"name": "A"}, recipients="a@example.com",
                      **extra)  # fmt: skip
    assert caught.value.code == "invalid_message"


def test_context_without_a_template_is_refused(mailer: FluxMail) -> None:
    """context= alone is a mistake worth saying, not silently ignored."""
    with pytest.raises(MessageError) as caught:
        mailer.create("Hi", "a@example.com", "x", context={"name": "A"})
    assert caught.value.code == "invalid_message"


def test_the_upstream_positional_call_is_unchanged(mailer: FluxMail) -> None:
    """create(subject, recipients, body) and the html_body form work as before."""
    plain = mailer.create("Hello", ["a@example.com"], "Hi there")
    assert (plain.message.subject, plain.message.text, plain.message.html) == (
        "Hello", "Hi there", None,
    )  # fmt: skip
    html = mailer.create("Hello", "a@example.com", "<p>x</p>", None, None, None, None, None, True)
    assert html.message.html == "<p>x</p>" and html.message.text is None
    styled = mailer.create("S", "a@example.com", "<style>p{color:red}</style><p>x</p>",
                           html_body=True)  # fmt: skip
    assert styled.message.html == "<style>p{color:red}</style><p>x</p>"  # no inlining by default
    for partial in ({"recipients": "a@example.com", "body": "x"}, {"subject": "s", "body": "x"},
                    {"template": "welcome", "context": {"name": "A"}}):  # fmt: skip
        with pytest.raises(MessageError) as caught:
            mailer.create(**partial)
        assert caught.value.code == "invalid_message" and "missing" in str(caught.value)
    only_cc = mailer.create("s", None, "x", cc="c@example.com")  # explicit None, as upstream
    assert only_cc.message.to == () and only_cc.message.cc[0].addr == "c@example.com"


def test_templates_dir_from_the_environment(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FLUXMAIL_TEMPLATES_DIR is a setting with its source; a missing folder is refused when
    the mailer is built."""
    monkeypatch.setenv("FLUXMAIL_TEMPLATES_DIR", str(folder))
    mailer = FluxMail.from_env(object_type="memory", sender="shop@example.com")
    assert mailer.describe()["templates_dir"] == {"value": str(folder), "source": "environment"}
    draft = mailer.create(template="welcome", context={"name": "Env"}, recipients="a@example.com")
    assert draft.message.subject == "Welcome, Env!"
    monkeypatch.setenv("FLUXMAIL_TEMPLATES_DIR", str(folder / "nope"))
    with pytest.raises(ConfigurationError) as caught:
        FluxMail.from_env(object_type="memory")
    assert caught.value.code == "invalid_config" and "FLUXMAIL_TEMPLATES_DIR" in str(caught.value)


def test_no_templates_folder_configured(mailer: FluxMail) -> None:
    """template= on a mailer without a folder: template_not_found saying what to set."""
    bare = FluxMail(object_type="memory", sender="shop@example.com")
    with pytest.raises(MessageError) as caught:
        bare.create(template="welcome", recipients="a@example.com")
    assert caught.value.code == "template_not_found"


def test_missing_jinja2_is_missing_extra(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Jinja2 installed: ConfigurationError missing_extra naming fluxmail[templates]."""
    monkeypatch.setitem(sys.modules, "jinja2", None)
    monkeypatch.setitem(sys.modules, "jinja2.sandbox", None)
    mailer = FluxMail(object_type="memory", sender="shop@example.com", templates_dir=str(folder))
    with pytest.raises(ConfigurationError) as caught:
        mailer.create(template="welcome", context={"name": "A"}, recipients="a@example.com")
    assert caught.value.code == "missing_extra" and "fluxmail[templates]" in str(caught.value)


def test_the_environment_is_built_once_per_mailer(mailer: FluxMail) -> None:
    """Two creates share the renderer and its Jinja2 environment (compiled templates)."""
    mailer.create(template="welcome", context={"name": "A"}, recipients="a@example.com")
    first = mailer._templates()._environment()
    mailer.create(template="welcome", context={"name": "B"}, recipients="a@example.com")
    assert mailer._templates()._environment() is first


def _items(n: int, bad: int | None = None) -> Iterator[dict[str, Any]]:
    for i in range(n):
        context = {} if i == bad else {"name": f"user{i}"}
        yield {"template": "welcome", "context": context, "recipients": [f"u{i}@example.com"]}


def test_send_many_renders_each_item(smtp_server: Any, folder: Path) -> None:
    """Bulk items with template= and context= against a real server: each rendered once,
    delivered once; a bad item fails alone."""
    server = smtp_server()
    mailer = mailer_for(server, templates_dir=str(folder))
    outcomes = list(mailer.send_many(_items(12, bad=5), concurrency=2, progress=False))
    failed = [o for o in outcomes if not o.ok]
    assert [o.index for o in failed] == [5]
    assert failed[0].error is not None and failed[0].error.code == "template_variable_missing"
    assert server.deliveries == 11
    by_rcpt = {m.rcpt_tos[0]: parse(m.data) for m in server.messages}
    assert by_rcpt["u3@example.com"]["Subject"] == "Welcome, user3!"
    body = by_rcpt["u3@example.com"].get_body(("html",))
    assert body is not None and 'style="color: red;">Hi user3</p>' in body.get_content()
    mailer.close()


def _bulk_peak(mailer: FluxMail, n: int) -> int:
    tracemalloc.start()
    try:
        summary = mailer.send_many(_items(n), dry_run=True, progress=False).wait()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary.total == n
    return peak


def test_bulk_rendering_memory_is_flat(folder: Path) -> None:
    """A generator of 5,000 templated items: the peak does not grow with the count (loosely:
    10x the messages, well under 3x the peak)."""
    mailer = FluxMail(object_type="memory", sender="shop@example.com", templates_dir=str(folder),
                      audit=False)  # fmt: skip
    _bulk_peak(mailer, 50)  # warm: the environment, compiled templates, imports
    small, large = _bulk_peak(mailer, 500), _bulk_peak(mailer, 5000)
    mailer.close()
    assert large < 3 * small, (small, large)
