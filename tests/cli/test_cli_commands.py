"""``fluxmail config``, ``providers``, ``audit`` and the global options, in-process."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from fluxmail.cli.audit import parse_since
from fluxmail.cli.exit_codes import EXIT_CODES
from tests.support.cli import cli, smtp_env
from tests.support.servers import SMTPTestServer

Server = Callable[..., SMTPTestServer]
SEND = ("send", "--to", "bob@example.com", "--subject", "Hello", "--text", "It works")


def test_help_everywhere_has_examples(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command answers --help (exit 0) and shows an Examples section."""
    commands = [
        ["send"], ["check"], ["config"], ["providers"], ["dev-server"],
        ["audit", "list"], ["audit", "show"],
    ]  # fmt: skip
    for command in commands:
        ran = cli(capsys, monkeypatch, *command, "--help")
        assert ran.code == 0, command
        assert "Examples" in ran.out and f"fluxmail {' '.join(command)}" in ran.out


def test_version_and_bare_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--version prints the version; bare `fluxmail` prints the help; a bad command exits 2."""
    assert cli(capsys, monkeypatch, "--version").out.startswith("fluxmail ")
    bare = cli(capsys, monkeypatch)
    assert bare.code == 0 and "send" in bare.out
    wrong = cli(capsys, monkeypatch, "sned")
    assert wrong.code == EXIT_CODES["usage"] and wrong.err.startswith("error:")


def test_config_shows_sources_and_redacts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """config lists each value with its source (environment, .env, default); no secret."""
    Path(".env").write_text("FLUXMAIL_USERNAME=me@example.com\n")
    monkeypatch.setenv("FLUXMAIL_HOST", "smtp.example.com")
    monkeypatch.setenv("FLUXMAIL_PASSWORD", "Xyzzy-plugh-42")
    ran = cli(capsys, monkeypatch, "config")
    assert ran.code == 0, ran.both
    lines = {line.split()[0]: line.split()[1:] for line in ran.out.splitlines() if line.strip()}
    assert lines["host"] == ["smtp.example.com", "environment"]
    assert lines["username"] == ["me@example.com", ".env"]
    assert lines["port"] == ["587", "default"]
    assert "Xyzzy-plugh-42" not in ran.out
    data = json.loads(cli(capsys, monkeypatch, "config", "--json").out)
    assert data["config"]["host"] == {"value": "smtp.example.com", "source": "environment"}


def test_config_error_exit_3_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both TLS modes: exit 3, one line; with --json the error is one JSON object."""
    monkeypatch.setenv("FLUXMAIL_HOST", "smtp.example.com")
    monkeypatch.setenv("FLUXMAIL_TLS", "true")
    monkeypatch.setenv("FLUXMAIL_SSL", "true")
    ran = cli(capsys, monkeypatch, "config")
    assert ran.code == EXIT_CODES["configuration"]
    assert len(ran.err.strip().splitlines()) == 1
    data = json.loads(cli(capsys, monkeypatch, "config", "--json").out)
    assert data["ok"] is False and data["error"]["code"] == "invalid_config"


def test_providers_table_and_details(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """providers lists the catalog; providers NAME shows a ready environment example."""
    table = cli(capsys, monkeypatch, "providers")
    assert table.code == 0
    assert "sendgrid" in table.out and "smtp.sendgrid.net" in table.out
    details = cli(capsys, monkeypatch, "providers", "sendgrid")
    assert details.code == 0
    assert "FLUXMAIL_PROVIDER=sendgrid" in details.out
    assert "FLUXMAIL_USERNAME=apikey" in details.out
    assert "FLUXMAIL_PASSWORD_FILE=" in details.out and "FLUXMAIL_SENDER=" in details.out
    ses = json.loads(cli(capsys, monkeypatch, "providers", "ses", "--json").out)
    assert any(line.startswith("FLUXMAIL_REGION=") for line in ses["provider"]["env_example"])
    listed = json.loads(cli(capsys, monkeypatch, "providers", "--json").out)
    assert len(listed["providers"]) >= 25


def test_providers_unknown_suggests(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown provider name exits 3 and suggests the closest names."""
    ran = cli(capsys, monkeypatch, "providers", "mailgunn")
    assert ran.code == EXIT_CODES["configuration"]
    assert "mailgun" in ran.err


def test_audit_list_and_show(
    smtp_server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a send: audit list shows the record (no Bcc); show/--show-bcc/--eml/--json work."""
    server = smtp_server()
    smtp_env(monkeypatch, server.port)
    sent = cli(capsys, monkeypatch, *SEND, "--bcc", "hidden@example.com", "--json")
    audit_id = json.loads(sent.out)["audit_id"]
    listed = cli(capsys, monkeypatch, "audit", "list")
    assert listed.code == 0 and audit_id in listed.out and "hidden@example.com" not in listed.out
    records = json.loads(cli(capsys, monkeypatch, "audit", "list", "--json").out)["records"]
    assert [r["id"] for r in records] == [audit_id] and records[0]["bcc"] is None
    shown = cli(capsys, monkeypatch, "audit", "show", audit_id)
    assert shown.code == 0 and "sent      bob@example.com" in shown.out
    assert "hidden@example.com" not in shown.out
    assert f"smtp+plain://127.0.0.1:{server.port}" in shown.out  # the server that took it
    with_bcc = cli(capsys, monkeypatch, "audit", "show", audit_id, "--show-bcc", "--json")
    assert json.loads(with_bcc.out)["record"]["bcc"] == ["hidden@example.com"]
    eml = cli(capsys, monkeypatch, "audit", "show", audit_id, "--eml")
    assert "Subject: Hello" in eml.out and "hidden@example.com" not in eml.out


def test_audit_filters(
    smtp_server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--status and --since filter; --limit bounds; a bad --status or --since exits 2."""
    server = smtp_server()
    smtp_env(monkeypatch, server.port)
    assert cli(capsys, monkeypatch, *SEND).code == 0
    assert cli(capsys, monkeypatch, *SEND, "--dry-run").code == 0
    records = lambda *a: json.loads(cli(capsys, monkeypatch, "audit", "list", "--json", *a).out)  # noqa: E731
    assert len(records()["records"]) == 2
    assert [r["status"] for r in records("--status", "dry_run")["records"]] == ["dry_run"]
    assert len(records("--limit", "1")["records"]) == 1
    assert len(records("--since", "1h")["records"]) == 2
    future = (datetime.now(timezone.utc) + timedelta(days=1)).date().isoformat()
    assert records("--since", future)["records"] == []
    assert cli(capsys, monkeypatch, "audit", "list", "--status", "nope").code == 2
    assert cli(capsys, monkeypatch, "audit", "list", "--since", "yesterday").code == 2


@pytest.mark.parametrize("extra", [(), ("--eml",), ("--json",), ("--show-bcc",)])
def test_audit_show_unknown_id_exit_not_found(
    extra: tuple[str, ...],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """An unknown audit id exits 9 (not found), not 8 (the store cannot be read)."""
    where = ("--audit-dir", str(tmp_path))
    ran = cli(capsys, monkeypatch, "audit", "show", "01NOSUCHRECORD", *where, *extra)
    assert EXIT_CODES["not_found"] == 9 and ran.code == 9, ran.both
    assert "not_found" in ran.both and "no audit record with id" in ran.both


def test_audit_unreadable_store_still_exit_8(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A store that cannot be opened keeps the audit exit code, 8."""
    (tmp_path / "not-a-folder").write_text("x")
    where = ("--audit-dir", str(tmp_path / "not-a-folder"))
    ran = cli(capsys, monkeypatch, "audit", "show", "01NOSUCHRECORD", *where)
    assert ran.code == EXIT_CODES["audit"] == 8, ran.both


@pytest.mark.parametrize(
    ("text", "age"),
    [("30m", timedelta(minutes=30)), ("2h", timedelta(hours=2)), ("7d", timedelta(days=7))],
)
def test_parse_since_ages(text: str, age: timedelta) -> None:
    """--since accepts ages in minutes, hours and days."""
    delta = datetime.now(timezone.utc) - parse_since(text) - age
    assert abs(delta.total_seconds()) < 60


def test_parse_since_dates() -> None:
    """--since accepts ISO dates; a naive one is read as UTC."""
    assert parse_since("2025-01-31") == datetime(2025, 1, 31, tzinfo=timezone.utc)
    aware = parse_since("2025-01-31T10:00:00+02:00")
    assert aware == datetime(2025, 1, 31, 8, tzinfo=timezone.utc)
    assert parse_since("2025-01-31T08:00:00Z") == aware
