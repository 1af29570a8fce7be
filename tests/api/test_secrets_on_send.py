"""A password given through any input path is never written by a send: store, files or logs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from fluxmail import FluxMail

SECRET = "Zq9-distinctive-P4ss!"


def _configure(path: str, server: Any, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> FluxMail:
    base = {"use_tls": True, "ca_file": server.ca_path, "sender": "s@example.com"}
    where = f"{server.host}:{server.port}"
    if path == "argument":
        return FluxMail(host=where, username="user", password=SECRET, audit_dir=tmp, **base)
    if path == "url":
        url = f"smtp://user:{quote(SECRET)}@{where}"
        return FluxMail.from_url(url, ca_file=server.ca_path, sender="s@example.com", audit_dir=tmp)
    if path in ("failover", "failover_file"):  # a member of failover(...): its own password
        url = f"failover(smtp://user:{quote(SECRET)}@{where} memory://)"
        if path == "failover":
            return FluxMail.from_url(url, ca_file=server.ca_path, sender="s@example.com",
                                     audit_dir=tmp)  # fmt: skip
        url_file = tmp.parent / "url.txt"
        url_file.write_text(url + "\n")
        monkeypatch.setenv("FLUXMAIL_URL_FILE", str(url_file))
        return FluxMail.from_env(ca_file=server.ca_path, sender="s@example.com", audit_dir=tmp)
    monkeypatch.setenv("FLUXMAIL_HOST", where)
    monkeypatch.setenv("FLUXMAIL_USERNAME", "user")
    if path == "env":
        monkeypatch.setenv("FLUXMAIL_PASSWORD", SECRET)
    elif path == "dotenv":
        Path(".env").write_text(f"FLUXMAIL_PASSWORD={SECRET}\n")
    else:
        secret_file = tmp.parent / "password.txt"
        secret_file.write_text(SECRET + "\n")
        monkeypatch.setenv("FLUXMAIL_PASSWORD_FILE", str(secret_file))
    return FluxMail.from_env(audit_dir=tmp, **base)


@pytest.mark.parametrize(
    "path", ["argument", "env", "dotenv", "file", "url", "failover", "failover_file"]
)
def test_password_is_never_written(
    smtp_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    path: str,
) -> None:
    """Sent, dry-run and failed sends: no byte of the password in the audit folder or the logs."""
    server = smtp_server(tls="starttls", auth=("user", SECRET))
    folder = tmp_path / "audit"
    with caplog.at_level(logging.DEBUG):
        mailer = _configure(path, server, folder, monkeypatch)
        assert mailer.create("Hi", "a@example.com", "body").send().status == "sent"
        mailer.create("Dry", "a@example.com", "body").send(dry_run=True)
        assert SECRET not in repr(mailer) and SECRET not in str(mailer.describe())
        mailer.close()
    assert server.messages[0].login == "user"
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert any(p.name == "store.db" for p in files) and any(p.name == "message.eml" for p in files)
    for file in files:
        assert SECRET.encode() not in file.read_bytes(), file
        assert quote(SECRET).encode() not in file.read_bytes(), file
    assert SECRET not in caplog.text and quote(SECRET) not in caplog.text


def test_password_not_in_failure_records_or_errors(smtp_server: Any, tmp_path: Path) -> None:
    """A refused login: the error, the record and its attempts never carry the password."""
    server = smtp_server(tls="starttls", auth=("user", "other"))
    mailer = FluxMail(
        host=f"{server.host}:{server.port}", use_tls=True, ca_file=server.ca_path,
        username="user", password=SECRET, sender="s@example.com", audit_dir=tmp_path,
    )  # fmt: skip
    with pytest.raises(Exception) as info:
        mailer.create("Hi", "a@example.com", "x").send()
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    [record] = mailer.audit.list()
    assert record.status == "failed" and SECRET not in str(record.to_dict())
    for file in tmp_path.rglob("*"):
        if file.is_file():
            assert SECRET.encode() not in file.read_bytes()


def test_member_password_not_in_results_errors_or_records(smtp_server: Any, tmp_path: Path) -> None:
    """failover(...): a member refuses the login, the next delivers; neither the result's
    transport, the errors, the repr nor the audit record carries a member's password."""
    refusing = smtp_server(tls="starttls", auth=("user", "other"))
    taking = smtp_server(tls="starttls", auth=("user", SECRET))
    members = [f"smtp://user:{quote(SECRET)}@{s.host}:{s.port}" for s in (refusing, taking)]
    mailer = FluxMail.failover(*members, ca_file=taking.ca_path, sender="s@example.com",
                               audit_dir=tmp_path)  # fmt: skip
    result = mailer.create("Hi", "a@example.com", "x").send()
    assert result.transport == f"smtp://{taking.host}:{taking.port}"
    shown = [repr(mailer), str(mailer.describe()), repr(mailer.config), str(result.to_dict())]
    shown += [str(r.to_dict()) for r in mailer.audit.list()]
    assert not any(SECRET in text or quote(SECRET) in text for text in shown)
    assert result.attempts[0].error is not None and SECRET not in result.attempts[0].error
    mailer.close()
    for file in tmp_path.rglob("*"):
        if file.is_file():
            assert SECRET.encode() not in file.read_bytes()
            assert quote(SECRET).encode() not in file.read_bytes()
