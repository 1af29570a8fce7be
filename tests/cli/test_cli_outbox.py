"""``fluxmail outbox stats / retry / cancel``: output, --json shapes, exit codes, no secrets."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fluxmail import FluxMail
from tests.support.cli import cli
from tests.support.postgres import PgServer

STATS_KEYS = {
    "pending", "due", "scheduled", "retrying", "sending", "failed", "unknown", "cancelled",
    "oldest_due_age",
}  # fmt: skip


def _queue(**audit: Any) -> tuple[FluxMail, str, str]:
    """A mailer on the store, one message due now and one due in an hour."""
    mailer = FluxMail("memory", audit=True, sender="s@example.com", **audit)
    due = mailer.create("due", "a@example.com", "x").enqueue()
    later = mailer.create("later", "a@example.com", "x").enqueue(send_at=timedelta(hours=1))
    return mailer, due, later


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "audit"
    monkeypatch.setenv("FLUXMAIL_AUDIT_DIR", str(path))
    return path


def test_stats(capsys: Any, monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    _queue(audit_dir=folder)
    ran = cli(capsys, monkeypatch, "outbox", "stats")
    assert ran.code == 0, ran.err
    lines = dict(line.split(":", 1) for line in ran.out.splitlines())
    assert lines["pending"].strip() == "2" and lines["  scheduled"].strip() == "1"
    assert lines["  due now"].strip() == "1" and lines["oldest due"].strip().endswith("s")
    ran = cli(capsys, monkeypatch, "outbox", "stats", "--json")
    data = json.loads(ran.out)
    assert ran.code == 0 and data["ok"] is True and set(data["stats"]) == STATS_KEYS
    assert (data["stats"]["pending"], data["stats"]["due"]) == (2, 1)
    assert isinstance(data["stats"]["oldest_due_age"], float)


def test_empty_store_has_no_oldest(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    ran = cli(capsys, monkeypatch, "outbox", "stats", "--audit-dir", str(folder), "--json")
    data = json.loads(ran.out)["stats"]
    assert ran.code == 0 and data["pending"] == 0 and data["oldest_due_age"] is None


def test_cancel_then_retry(capsys: Any, monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    mailer, due, _ = _queue(audit_dir=folder)
    ran = cli(capsys, monkeypatch, "outbox", "cancel", due)
    assert ran.code == 0 and f"{due}: cancelled" in ran.out
    assert mailer.audit.get(due).status == "cancelled"
    ran = cli(capsys, monkeypatch, "outbox", "cancel", due, "--json")
    data = json.loads(ran.out)
    assert ran.code == 8 and data["ok"] is False
    assert data["error"]["code"] == "outbox_not_cancellable"
    ran = cli(capsys, monkeypatch, "outbox", "retry", due, "--json")
    assert ran.code == 0 and json.loads(ran.out) == {"ok": True, "id": due, "status": "pending"}
    ran = cli(capsys, monkeypatch, "outbox", "retry", due)
    assert ran.code == 8 and "outbox_not_retryable" in ran.err


def test_unknown_id_and_usage(capsys: Any, monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    _queue(audit_dir=folder)
    missing = "01M8T9QDARKSCYZ3YBWP8JGRWF"
    for command in (("retry", missing), ("cancel", missing), ("retry", missing, "--force")):
        ran = cli(capsys, monkeypatch, "outbox", *command)
        assert ran.code == 9 and "not_found" in ran.err, command
    assert cli(capsys, monkeypatch, "outbox", "retry").code == 2
    assert cli(capsys, monkeypatch, "outbox", "stats", "--bogus").code == 2
    assert cli(capsys, monkeypatch, "outbox").code == 0  # the help


COMMANDS = [
    ("stats",),
    ("stats", "--json"),
    ("retry", "ID"),
    ("retry", "ID", "--force", "--json"),
    ("cancel", "ID"),
    ("cancel", "ID", "--json"),
]


@pytest.mark.postgres
@pytest.mark.parametrize("debug", [False, True])
def test_audit_url_password_never_shown(
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
    pg_server: PgServer,
    pg_database: str,
    debug: bool,
) -> None:
    """Every outbox command, with the right and a wrong password in FLUXMAIL_AUDIT_URL."""
    _, due, _ = _queue(audit_url=pg_database)
    right = pg_server.password
    wrong_url = pg_database.replace(right, "SECRETPW")
    assert right in pg_database and "SECRETPW" in wrong_url
    flags = ("--debug",) if debug else ()
    for url, ok in ((pg_database, True), (wrong_url, False)):
        monkeypatch.setenv("FLUXMAIL_AUDIT_URL", url)
        for command in COMMANDS:
            args = [due if a == "ID" else a for a in command]
            ran = cli(capsys, monkeypatch, *flags, "outbox", *args)
            assert right not in ran.both and "SECRETPW" not in ran.both, (command, ran.both)
            if not ok:
                assert ran.code == 8, (command, ran.both)
            elif command[0] == "stats":
                assert ran.code == 0, ran.both
