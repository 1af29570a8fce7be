"""An API key given any way is never written: not in errors, logs, reprs, describe(), the audit
folder, results, nor any CLI output (send, check, config; text and JSON; with --debug)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fluxmail import FluxMail
from tests.support.api_mailing import KEY, api_mailer
from tests.support.cli import cli
from tests.support.http_api import HttpApiServer, Reply

Server = Callable[..., HttpApiServer]


def _configure(
    path: str, server: HttpApiServer, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> FluxMail:
    base = {"ca_file": server.ca_path, "sender": "s@example.com", "audit_dir": tmp}
    if path == "argument":
        return api_mailer(server, "resend", audit_dir=tmp)
    if path == "url":
        return FluxMail.from_url(f"resend+api://{KEY}@default?endpoint={server.url}", **base)
    if path == "failover":
        url = f"failover(resend+api://{KEY}@default?endpoint={server.url} memory://)"
        return FluxMail.from_url(url, **base)
    monkeypatch.setenv("FLUXMAIL_TRANSPORT", "api")
    monkeypatch.setenv("FLUXMAIL_PROVIDER", "resend")
    monkeypatch.setenv("FLUXMAIL_API_BASE_URL", server.url)
    if path == "env":
        monkeypatch.setenv("FLUXMAIL_API_KEY", KEY)
    else:
        secret = tmp.parent / "key.txt"
        secret.write_text(KEY + "\n")
        monkeypatch.setenv("FLUXMAIL_API_KEY_FILE", str(secret))
    return FluxMail.from_env(**base)


def _scan_folder(folder: Path) -> None:
    for file in (p for p in folder.rglob("*") if p.is_file()):
        assert KEY.encode() not in file.read_bytes(), file


@pytest.mark.parametrize("path", ["argument", "env", "file", "url", "failover"])
def test_the_key_is_never_written_by_a_send(
    http_api: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, path: str,
) -> None:  # fmt: skip
    """Sent and refused sends: no byte of the key in the audit folder, logs, reprs, results."""
    server = http_api(default=Reply(200, body={"id": "re-1"}, times=None))
    folder = tmp_path / "audit"
    with caplog.at_level(logging.DEBUG):
        mailer = _configure(path, server, folder, monkeypatch)
        result = mailer.create("Hi", "a@example.com", "body").send()
        assert result.status == "queued"
        assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"  # it was used
        server.script(Reply(422, body={"name": "validation_error", "message": f"bad key {KEY}"}))
        with pytest.raises(Exception) as info:
            mailer.create("Refused", "a@example.com", "body").send()
        shown = [str(info.value), repr(info.value), repr(mailer), str(mailer.describe()),
                 repr(mailer.config), str(result.to_dict())]  # fmt: skip
        shown += [str(r.to_dict()) for r in mailer.audit.list()]
        mailer.close()
    assert "********" in str(info.value)  # an API that echoes the key is scrubbed
    assert not any(KEY in text for text in shown)
    assert KEY not in caplog.text
    _scan_folder(folder)


def test_the_key_is_never_printed_by_the_cli(
    http_api: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """fluxmail send / check / config, text and JSON, with and without --debug."""
    server = http_api(default=Reply(200, body={"id": "re-1", "data": []}, times=None))
    for name, value in {"TRANSPORT": "api", "PROVIDER": "resend", "API_KEY": KEY,
                        "API_BASE_URL": server.url, "CA_FILE": str(server.ca_path),
                        "SENDER": "s@example.com", "AUDIT": "false"}.items():  # fmt: skip
        monkeypatch.setenv(f"FLUXMAIL_{name}", value)
    send = ("send", "--to", "bob@example.com", "--subject", "Hi", "--text", "Hi")
    for flags in ((), ("--debug",)):
        for command in (send, ("check",), ("config",)):
            for style in ((), ("--json",)):
                ran = cli(capsys, monkeypatch, *flags, *command, *style)
                assert KEY not in ran.both, (command, style, ran.both)
                assert ran.code == 0, (command, style, ran.both)
    ran = cli(capsys, monkeypatch, "check", "--json")
    data = json.loads(ran.out)
    assert data["ok"] and data["transport"] == f"resend+api://127.0.0.1:{server.port}"
    assert server.requests[-1].path == "/domains"
    sent = cli(capsys, monkeypatch, *send)
    assert "queued" in sent.out and "provider id: re-1" in " ".join(sent.out.split())
    sent = json.loads(cli(capsys, monkeypatch, *send, "--json").out)
    assert sent["status"] == "queued" and sent["provider_message_id"] == "re-1"


def test_a_refused_key_in_check_is_reported_without_the_key(
    http_api: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = http_api(default=Reply(403, body={"errors": [{"message": f"key {KEY} revoked"}]}))
    settings = {"TRANSPORT": "api", "PROVIDER": "sendgrid", "API_KEY": KEY,
                "API_BASE_URL": server.url, "CA_FILE": str(server.ca_path)}  # fmt: skip
    for name, value in settings.items():
        monkeypatch.setenv(f"FLUXMAIL_{name}", value)
    ran = cli(capsys, monkeypatch, "check", "--json")
    assert ran.code == 6 and KEY not in ran.both
    data: dict[str, Any] = json.loads(ran.out)
    assert data["ok"] is False and data["error"]["code"] == "auth_failed"
