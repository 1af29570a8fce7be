"""``fluxmail send`` in-process against real aiosmtpd servers: output, JSON, exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from fluxmail.cli.exit_codes import EXIT_CODES
from tests.support.cli import cli, smtp_env
from tests.support.servers import Faults, SMTPTestServer, drop, reply

Server = Callable[..., SMTPTestServer]
BASE = ("send", "--to", "bob@example.com", "--subject", "Hello", "--text", "It works")


@pytest.fixture
def plain(smtp_server: Server, monkeypatch: pytest.MonkeyPatch) -> SMTPTestServer:
    """A plaintext server on loopback, with fluxmail configured for it by environment only."""
    server = smtp_server()
    smtp_env(monkeypatch, server.port)
    return server


def test_send_prints_summary_and_delivers(
    plain: SMTPTestServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain send exits 0, prints status, Message-ID, audit id and the recipient's outcome."""
    ran = cli(capsys, monkeypatch, *BASE)
    assert ran.code == 0, ran.err
    assert ran.out.startswith("sent")
    assert "message-id:" in ran.out and "audit id:" in ran.out
    assert "sent      bob@example.com" in ran.out
    [msg] = plain.messages
    assert msg.rcpt_tos == ["bob@example.com"]
    assert msg.mail_from == "demo@example.com"


def test_send_attachment_html_headers(
    plain: SMTPTestServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """--attach, --html-file with --text, --header, --cc, --sender, --reply-to reach the server."""
    report = tmp_path / "report.csv"
    report.write_text("a,b\n1,2\n")
    page = tmp_path / "page.html"
    page.write_text("<p>Hi</p>")
    ran = cli(
        capsys, monkeypatch, "send", "--to", "bob@example.com", "--cc", "carol@example.com",
        "--subject", "Report", "--text", "Hi", "--html-file", str(page),
        "--attach", str(report), "--header", "X-Campaign: spring",
        "--sender", "Sales <sales@example.com>", "--reply-to", "help@example.com",
    )  # fmt: skip
    assert ran.code == 0, ran.err
    [msg] = plain.messages
    assert sorted(msg.rcpt_tos) == ["bob@example.com", "carol@example.com"]
    assert b"X-Campaign: spring" in msg.data
    assert b'filename="report.csv"' in msg.data and b"text/html" in msg.data
    assert msg.mail_from == "sales@example.com" and b"Reply-To: help@example.com" in msg.data


def test_send_json_hides_bcc_unless_asked(
    plain: SMTPTestServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--json prints one object; Bcc recipients appear in it only with --show-bcc."""
    args = (*BASE, "--bcc", "hidden@example.com", "--json")
    ran = cli(capsys, monkeypatch, *args)
    assert ran.code == 0, ran.err
    data = json.loads(ran.out)
    assert data["ok"] is True and data["status"] == "sent"
    assert list(data["recipients"]) == ["bob@example.com"]
    assert "hidden@example.com" not in ran.out
    shown = json.loads(cli(capsys, monkeypatch, *args, "--show-bcc").out)
    assert "hidden@example.com" in shown["recipients"]
    assert len(plain.messages) == 2
    assert "hidden@example.com" in plain.messages[0].rcpt_tos


def test_dry_run_sends_nothing(
    plain: SMTPTestServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--dry-run builds and records the message without any delivery."""
    ran = cli(capsys, monkeypatch, *BASE, "--dry-run", "--json")
    assert ran.code == 0, ran.err
    assert json.loads(ran.out)["status"] == "dry_run"
    assert plain.deliveries == 0


def test_idempotency_key_replays(
    plain: SMTPTestServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same --idempotency-key twice delivers once; the second run says it replayed."""
    first = cli(capsys, monkeypatch, *BASE, "--idempotency-key", "order-42")
    second = cli(capsys, monkeypatch, *BASE, "--idempotency-key", "order-42")
    assert first.code == second.code == 0
    assert "replayed" in second.out
    assert plain.deliveries == 1


@pytest.mark.parametrize(
    ("faults", "exit_name", "code"),
    [
        (Faults(rcpt=reply("550 5.1.1 No such user")), "permanent", "all_recipients_refused"),
        (Faults(mail=reply("451 4.3.0 Try later")), "temporary", None),
        (Faults(end_of_data=drop()), "unknown_outcome", "outcome_unknown"),
    ],
)
def test_delivery_failures_map_to_exit_codes(
    smtp_server: Server,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    faults: Faults,
    exit_name: str,
    code: str | None,
) -> None:
    """Refused -> 6, temporary failure -> 5, connection lost after "." -> 7; one error line."""
    server = smtp_server(faults=faults)
    smtp_env(monkeypatch, server.port)
    ran = cli(capsys, monkeypatch, *BASE)
    assert ran.code == EXIT_CODES[exit_name], ran.both
    [line] = [ln for ln in ran.err.splitlines() if ln.startswith("error:")]
    assert "Traceback" not in ran.err
    if code is not None:
        assert f"[{code}]" in line
    as_json = json.loads(cli(capsys, monkeypatch, *BASE, "--json").out)
    assert as_json["ok"] is False and as_json["error"]["code"]


@pytest.mark.parametrize(
    ("args", "exit_name"),
    [
        (("send", "--subject", "x", "--text", "y"), "usage"),  # no --to
        (("send", "--to", "b@example.com", "--subject", "x"), "usage"),  # no body
        ((*BASE, "--header", "no colon here"), "usage"),
        (("send", "--to", "not an address", "--subject", "x", "--text", "y"), "message"),
        ((*BASE, "--attach", "/nonexistent/file.pdf"), "message"),
        ((*BASE, "--header", "Subject: override"), "message"),
    ],
)
def test_bad_input_exit_codes(
    plain: SMTPTestServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    exit_name: str,
) -> None:
    """Usage mistakes exit 2, bad messages exit 4; nothing reaches the server."""
    ran = cli(capsys, monkeypatch, *args)
    assert ran.code == EXIT_CODES[exit_name], ran.both
    assert ran.err.startswith("error:") and "Traceback" not in ran.err
    assert plain.deliveries == 0


def test_configuration_error_exit_3(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad setting exits 3 with one line naming the variable; --debug adds the traceback."""
    monkeypatch.setenv("FLUXMAIL_HOST", "127.0.0.1")
    monkeypatch.setenv("FLUXMAIL_PORT", "587abc")
    ran = cli(capsys, monkeypatch, *BASE)
    assert ran.code == EXIT_CODES["configuration"]
    assert "FLUXMAIL_PORT" in ran.err and "Traceback" not in ran.err
    debug = cli(capsys, monkeypatch, "--debug", *BASE)
    assert debug.code == EXIT_CODES["configuration"]
    assert "Traceback" in debug.err


def test_unknown_provider_flag_suggests(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--provider overrides the environment; a misspelt name gets suggestions and exit 3."""
    ran = cli(capsys, monkeypatch, *BASE, "--provider", "sendgrd")
    assert ran.code == EXIT_CODES["configuration"]
    assert "sendgrid" in ran.err


def test_console_backend_via_env(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """FLUXMAIL_TYPE=console needs no server: the message is printed and the result summarized."""
    monkeypatch.setenv("FLUXMAIL_TYPE", "console")
    monkeypatch.setenv("FLUXMAIL_SENDER", "demo@example.com")
    ran = cli(capsys, monkeypatch, *BASE)
    assert ran.code == 0, ran.err
    assert "Subject: Hello" in ran.out and "sent" in ran.out


def test_console_backend_json_stays_one_object(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --json the console backend's printout goes to stderr; stdout is one JSON object."""
    monkeypatch.setenv("FLUXMAIL_TYPE", "console")
    monkeypatch.setenv("FLUXMAIL_SENDER", "demo@example.com")
    ran = cli(capsys, monkeypatch, *BASE, "--json")
    assert ran.code == 0, ran.err
    assert json.loads(ran.out)["status"] == "sent"
    assert "Subject: Hello" in ran.err
