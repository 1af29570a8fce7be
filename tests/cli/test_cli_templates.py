"""``fluxmail send --template`` and ``fluxmail preview``, in-process, against real servers."""

from __future__ import annotations

import email
import email.policy
import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from fluxmail.cli.exit_codes import EXIT_CODES
from tests.support.cli import cli, smtp_env
from tests.support.servers import SMTPTestServer

pytest.importorskip("jinja2")
pytest.importorskip("css_inline")

Server = Callable[..., SMTPTestServer]


@pytest.fixture
def templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A templates folder named by FLUXMAIL_TEMPLATES_DIR."""
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "welcome.subject").write_text("Welcome, {{ name }}!")
    (folder / "welcome.txt").write_text("Hi {{ name }}, your plan is {{ plan }}.")
    (folder / "welcome.html").write_text(
        "<style>b { color: red }</style><p>Hi <b>{{ name }}</b></p>"
    )
    monkeypatch.setenv("FLUXMAIL_TEMPLATES_DIR", str(folder))
    return folder


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_send_with_a_template(
    smtp_server: Server,
    templates: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--template and repeated --var render the message the server receives."""
    server = smtp_server()
    smtp_env(monkeypatch, server.port)
    ran = cli(
        capsys, monkeypatch, "send", "--template", "welcome", "--var", "name=Ada",
        "--var", "plan=pro = best", "--to", "ada@example.com",
    )  # fmt: skip
    assert ran.code == 0, ran.err
    [msg] = server.messages
    parsed = email.message_from_bytes(msg.data, policy=email.policy.default)
    assert parsed["Subject"] == "Welcome, Ada!"
    text = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert text is not None and "your plan is pro = best." in text.get_content()
    assert html is not None and '<b style="color: red;">Ada</b>' in html.get_content()


def test_send_template_errors_before_any_traffic(
    smtp_server: Server,
    templates: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A missing variable is a message error (exit 4), a missing template too; nothing sent."""
    server = smtp_server()
    smtp_env(monkeypatch, server.port)
    missing = cli(capsys, monkeypatch, "send", "--template", "welcome", "--var", "name=A",
                  "--to", "a@example.com", "--json")  # fmt: skip
    assert missing.code == EXIT_CODES["message"]
    error = json.loads(missing.out)["error"]
    assert error["code"] == "template_variable_missing" and "'plan'" in error["message"]
    gone = cli(capsys, monkeypatch, "send", "--template", "nope", "--to", "a@example.com")
    assert gone.code == EXIT_CODES["message"] and "template_not_found" in gone.err
    assert server.connections == 0 and not server.messages


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--template", "welcome", "--subject", "Hi"), "--template gives"),
        (("--template", "welcome", "--text", "x"), "--template gives"),
        (("--subject", "Hi", "--text", "x", "--var", "a=b"), "--var"),
        (("--text", "x"), "--subject"),
        (("--template", "welcome", "--var", "novalue"), "key=value"),
        (("--template", "welcome", "--var", "a b=c"), "key=value"),
        (("--template", "welcome", "--var", "a=1", "--var", "a=2"), "twice"),
    ],
)
def test_send_usage_mistakes(
    templates: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    said: str,
) -> None:
    """Mixing --template with a subject or body, or a malformed --var: exit 2."""
    smtp_env(monkeypatch, closed_port())
    ran = cli(capsys, monkeypatch, "send", "--to", "a@example.com", *args)
    assert ran.code == EXIT_CODES["usage"], ran.both
    assert said in ran.err


def test_preview_prints_the_message_and_contacts_nothing(
    templates: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """preview with FLUXMAIL_HOST at a closed port: headers, text and HTML, exit 0, and no
    audit record written."""
    smtp_env(monkeypatch, closed_port())
    ran = cli(capsys, monkeypatch, "preview", "--template", "welcome", "--var", "name=Ada",
              "--var", "plan=<free>", "--to", "ada@example.com")  # fmt: skip
    assert ran.code == 0, ran.err
    assert "Subject: Welcome, Ada!" in ran.out
    assert "To:      ada@example.com" in ran.out and "Demo <demo@example.com>" in ran.out
    assert "--- text ---\nHi Ada, your plan is <free>." in ran.out
    assert '<b style="color: red;">Ada</b>' in ran.out
    assert not Path(".fluxmail").exists()  # no audit folder in the working directory


def test_preview_json(
    templates: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--json: one object with the headers and both bodies; placeholders without --to."""
    monkeypatch.setenv("FLUXMAIL_HOST", "127.0.0.1")
    monkeypatch.setenv("FLUXMAIL_PORT", str(closed_port()))
    monkeypatch.setenv("FLUXMAIL_TLS", "false")
    ran = cli(capsys, monkeypatch, "preview", "--template", "welcome", "--var", "name=<Ada>",
              "--var", "plan=pro", "--json")  # fmt: skip
    assert ran.code == 0, ran.err
    data = json.loads(ran.out)
    assert data["ok"] is True and data["template"] == "welcome"
    assert data["headers"] == {
        "From": "sender@example.com", "To": "recipient@example.com", "Subject": "Welcome, <Ada>!",
    }  # fmt: skip
    assert data["text"] == "Hi <Ada>, your plan is pro."
    assert '<b style="color: red;">&lt;Ada&gt;</b>' in data["html"]


def test_preview_errors(
    templates: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A syntax error is template_invalid with file and line (exit 4); a path escape too."""
    monkeypatch.setenv("FLUXMAIL_TYPE", "memory")
    (templates / "broken.subject").write_text("Hi {{ name")
    (templates / "broken.txt").write_text("x")
    ran = cli(capsys, monkeypatch, "preview", "--template", "broken", "--json")
    assert ran.code == EXIT_CODES["message"]
    error = json.loads(ran.out)["error"]
    assert error["code"] == "template_invalid" and "broken.subject line 1" in error["message"]
    escape = cli(capsys, monkeypatch, "preview", "--template", "../templates/welcome")
    assert escape.code == EXIT_CODES["message"] and "invalid_template_name" in escape.err
