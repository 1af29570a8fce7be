"""``fluxmail send --draft`` and ``fluxmail drafts list / show / send / discard``: output,
--json shapes, exit codes, and no secret in any of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import Ran, cli, smtp_env
from tests.support.postgres import PgServer

SEND = ("send", "--to", "bob@example.com", "--bcc", "hidden@example.com", "--subject", "Quote",
        "--text", "Total: 12 EUR")  # fmt: skip
MISSING = "01M8T9QDARKSCYZ3YBWP8JGRWF"
PASSWORD = "Zq9!pw@ss-W0rd/Secr3t"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "audit"
    monkeypatch.setenv("FLUXMAIL_AUDIT_DIR", str(path))
    return path


def _save(capsys: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    ran = cli(capsys, monkeypatch, *SEND, "--draft", "--json")
    assert ran.code == 0, ran.both
    data = json.loads(ran.out)
    assert data["ok"] is True and data["status"] == "draft"
    return str(data["id"])


def test_send_draft_then_review_and_send(
    smtp_server: Any, capsys: Any, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    """send --draft stores and prints the id; list, show, send (once, then a replay)."""
    server = smtp_server()
    smtp_env(monkeypatch, server.port)
    ran = cli(capsys, monkeypatch, *SEND, "--draft")
    assert ran.code == 0 and "draft" in ran.out and "fluxmail drafts send" in ran.out
    audit_id = _save(capsys, monkeypatch)
    assert server.connections == 0
    listed = cli(capsys, monkeypatch, "drafts", "list", "--json")
    records = json.loads(listed.out)["records"]
    assert listed.code == 0 and audit_id in [r["id"] for r in records] and len(records) == 2
    assert all(r["bcc"] is None for r in records)
    table = cli(capsys, monkeypatch, "drafts", "list")
    assert table.code == 0 and audit_id in table.out and "2 record(s)" in table.out
    shown = cli(capsys, monkeypatch, "drafts", "show", audit_id)
    assert shown.code == 0 and "Total: 12 EUR" in shown.out and "hidden@" not in shown.out
    data = json.loads(cli(capsys, monkeypatch, "drafts", "show", audit_id, "--json").out)
    assert data["record"]["status"] == "draft" and data["text"].strip() == "Total: 12 EUR"
    eml = cli(capsys, monkeypatch, "drafts", "show", audit_id, "--eml")
    sent = cli(capsys, monkeypatch, "drafts", "send", audit_id, "--json")
    result = json.loads(sent.out)
    assert sent.code == 0 and result["status"] == "sent" and result["replayed"] is False
    assert set(result["recipients"]) == {"bob@example.com"}  # Bcc not shown unless asked
    assert server.messages[0].data.decode() == eml.out
    again = cli(capsys, monkeypatch, "drafts", "send", audit_id)
    assert again.code == 0 and "replayed" in again.out and server.deliveries == 1


def test_refusals_and_exit_codes(
    smtp_server: Any, capsys: Any, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    server = smtp_server()
    smtp_env(monkeypatch, server.port)
    audit_id = _save(capsys, monkeypatch)
    ran = cli(capsys, monkeypatch, "drafts", "discard", audit_id, "--json")
    assert ran.code == 0 and json.loads(ran.out) == {
        "ok": True, "id": audit_id, "status": "discarded"
    }  # fmt: skip
    for command in (("send", MISSING), ("show", MISSING), ("discard", audit_id)):
        ran = cli(capsys, monkeypatch, "drafts", *command)
        assert ran.code == 9 and "not_found" in ran.err, (command, ran.both)
    inline = json.loads(cli(capsys, monkeypatch, *SEND[:-2], "--text", "x", "--json").out)
    for verb in ("send", "discard"):
        ran = cli(capsys, monkeypatch, "drafts", verb, inline["audit_id"], "--json")
        data = json.loads(ran.out)
        assert ran.code == 8 and data["error"]["code"] == "not_a_draft", verb
    assert cli(capsys, monkeypatch, *SEND, "--draft", "--dry-run").code == 2
    assert cli(capsys, monkeypatch, "drafts", "send").code == 2
    assert server.deliveries == 1


def test_drafts_need_the_audit(
    smtp_server: Any, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = smtp_server()
    smtp_env(monkeypatch, server.port, audit="false")
    ran = cli(capsys, monkeypatch, *SEND, "--draft", "--json")
    assert ran.code == 3 and json.loads(ran.out)["error"]["code"] == "drafts_need_audit"


def test_audit_show_prints_the_origin(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    from fluxmail import FluxMail

    mailer = FluxMail("memory", audit=True, audit_dir=folder, sender="s@example.com", origin="mcp")
    audit_id = mailer.create("x", "a@example.com", "x").save_draft()
    mailer.close()
    ran = cli(capsys, monkeypatch, "audit", "show", audit_id)
    assert ran.code == 0 and any(
        line.split(":", 1)[0].strip() == "origin" and line.split(":", 1)[1].strip() == "mcp"
        for line in ran.out.splitlines()
    ), ran.out
    data = json.loads(cli(capsys, monkeypatch, "audit", "show", audit_id, "--json").out)
    assert data["record"]["origin"] == "mcp"


def _every_command(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, flags: tuple[str, ...]
) -> list[Ran]:
    runs = [cli(capsys, monkeypatch, *flags, *SEND, "--draft", *j) for j in ((), ("--json",))]
    found = [r for r in runs if r.code == 0 and r.out.startswith("{")]
    audit_id = json.loads(found[0].out)["id"] if found else MISSING
    for command in (("list",), ("show", audit_id), ("show", audit_id, "--eml"),
                    ("send", audit_id), ("send", audit_id), ("discard", MISSING)):  # fmt: skip
        for style in ((), ("--json",)):
            runs.append(cli(capsys, monkeypatch, *flags, "drafts", *command, *style))
    return runs


@pytest.mark.parametrize("debug", [False, True])
def test_smtp_password_never_printed(
    smtp_server: Any, capsys: Any, monkeypatch: pytest.MonkeyPatch, folder: Path, debug: bool
) -> None:
    """Every drafts command, with a login the server accepts: no output holds the password."""
    server = smtp_server(auth=("alice@example.com", PASSWORD), auth_require_tls=False)
    smtp_env(monkeypatch, server.port, username="alice@example.com", password=PASSWORD)
    runs = _every_command(capsys, monkeypatch, ("--debug",) if debug else ())
    assert server.deliveries == 1, [r.both for r in runs]
    for ran in runs:
        assert PASSWORD not in ran.both, ran.both


@pytest.mark.postgres
@pytest.mark.parametrize("debug", [False, True])
def test_audit_url_password_never_printed(
    smtp_server: Any,
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
    pg_server: PgServer,
    pg_database: str,
    debug: bool,
) -> None:
    """Every drafts command with the right, then a wrong, password in FLUXMAIL_AUDIT_URL."""
    server = smtp_server()
    smtp_env(monkeypatch, server.port)
    right = pg_server.password
    wrong_url = pg_database.replace(right, "SECRETPW")
    flags = ("--debug",) if debug else ()
    for url, ok in ((pg_database, True), (wrong_url, False)):
        monkeypatch.setenv("FLUXMAIL_AUDIT_URL", url)
        for ran in _every_command(capsys, monkeypatch, flags):
            assert right not in ran.both and "SECRETPW" not in ran.both, ran.both
            if not ok:
                assert ran.code == 8, ran.both
    assert server.deliveries == 1
