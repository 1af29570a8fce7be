"""The password never appears in any CLI output, whichever way it was given."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.cli import Ran, cli
from tests.support.servers import SMTPTestServer

Server = Callable[..., SMTPTestServer]
# Distinctive, with characters that URL-encoding and base64 would change.
PASSWORD = "Zq9!pw@ss-W0rd/Secr3t"
USER = "alice@example.com"
PATHS = ("env", "file", "dotenv", "url", "stdin")


def configure(
    path: str, server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> str | None:
    """Give fluxmail the password through ``path``; returns what --password-stdin should read."""
    monkeypatch.setenv("FLUXMAIL_SENDER", USER)
    monkeypatch.setenv("FLUXMAIL_TIMEOUT", "10")
    if path == "url":
        url = f"smtp+plain://{quote(USER)}:{quote(PASSWORD, safe='')}@127.0.0.1:{server.port}"
        monkeypatch.setenv("FLUXMAIL_URL", url)
        return None
    monkeypatch.setenv("FLUXMAIL_HOST", "127.0.0.1")
    monkeypatch.setenv("FLUXMAIL_PORT", str(server.port))
    monkeypatch.setenv("FLUXMAIL_TLS", "false")
    monkeypatch.setenv("FLUXMAIL_USERNAME", USER)
    if path == "env":
        monkeypatch.setenv("FLUXMAIL_PASSWORD", PASSWORD)
    elif path == "file":
        secret = tmp_path / "smtp_password"
        secret.write_text(PASSWORD + "\n")
        monkeypatch.setenv("FLUXMAIL_PASSWORD_FILE", str(secret))
    elif path == "dotenv":
        Path(".env").write_text(f"FLUXMAIL_PASSWORD='{PASSWORD}'\n")
    return PASSWORD + "\n" if path == "stdin" else None


def _run_all(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    stdin: str | None,
    debug: bool,
) -> list[Ran]:
    extra = ("--password-stdin",) if stdin is not None else ()
    flags = ("--debug",) if debug else ()
    send = ("send", "--to", "bob@example.com", "--subject", "Hi", "--text", "Hi")
    runs = []
    for command in (send, ("check",), ("config",)):
        for style in ((), ("--json",)):
            runs.append(cli(capsys, monkeypatch, *flags, *command, *extra, *style, stdin=stdin))
    return runs


@pytest.mark.parametrize("path", PATHS)
def test_password_never_printed(
    path: str,
    smtp_server: Server,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """send, check and config (text and --json) succeed and never print the password."""
    server = smtp_server(auth=(USER, PASSWORD), auth_require_tls=False)
    stdin = configure(path, server, monkeypatch, tmp_path)
    runs = _run_all(capsys, monkeypatch, stdin, debug=False)
    runs.append(cli(capsys, monkeypatch, "audit", "list", "--json"))
    audit_id = json.loads(runs[1].out)["audit_id"]
    runs.append(cli(capsys, monkeypatch, "audit", "show", audit_id, "--json", "--show-bcc"))
    runs.append(cli(capsys, monkeypatch, "audit", "show", audit_id, "--eml"))
    assert [r.code for r in runs] == [0] * len(runs), [r.both for r in runs if r.code]
    assert len(server.messages) == 2
    for ran in runs:
        assert PASSWORD not in ran.both and quote(PASSWORD, safe="") not in ran.both


@pytest.mark.parametrize("path", PATHS)
def test_password_not_in_debug_errors(
    path: str,
    smtp_server: Server,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A refused login with --debug prints a traceback, but never the password."""
    server = smtp_server(auth=(USER, "the-right-one"), auth_require_tls=False)
    stdin = configure(path, server, monkeypatch, tmp_path)
    runs = _run_all(capsys, monkeypatch, stdin, debug=True)
    send, check = runs[0], runs[2]
    assert send.code == 6 and "Traceback" in send.err, send.both
    assert check.code == 6 and "[auth_failed]" in check.err, check.both
    for ran in runs:
        assert PASSWORD not in ran.both and quote(PASSWORD, safe="") not in ran.both


def test_scrubber_blanks_a_leak(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: even an unexpected error message holding the password is scrubbed."""
    monkeypatch.setenv("FLUXMAIL_PASSWORD", PASSWORD)
    # A provider name is echoed back in the error; here it happens to be the password.
    ran = cli(capsys, monkeypatch, "--debug", "providers", PASSWORD)
    assert ran.code == 3
    assert PASSWORD not in ran.both and "***" in ran.err


@pytest.mark.parametrize("given", ["env", "file"])
def test_member_passwords_never_printed(
    given: str,
    smtp_server: Server,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """failover(a b) in FLUXMAIL_URL / FLUXMAIL_URL_FILE: check probes and reports each member,
    the first refusing the login; send fails over; no member's password is ever printed."""
    other = "Other!Secr3t/pw@x"
    refusing = smtp_server(auth=(USER, "the-right-one"), auth_require_tls=False)
    taking = smtp_server(auth=(USER, PASSWORD), auth_require_tls=False)
    members = [
        f"smtp+plain://{quote(USER)}:{quote(pw, safe='')}@127.0.0.1:{s.port}"
        for s, pw in ((refusing, other), (taking, PASSWORD))
    ]
    url = f"failover({' '.join(members)})"
    monkeypatch.setenv("FLUXMAIL_SENDER", USER)
    monkeypatch.setenv("FLUXMAIL_TIMEOUT", "10")
    if given == "env":
        monkeypatch.setenv("FLUXMAIL_URL", url)
    else:
        (tmp_path / "url").write_text(url + "\n")
        monkeypatch.setenv("FLUXMAIL_URL_FILE", str(tmp_path / "url"))
    runs = _run_all(capsys, monkeypatch, None, debug=True)
    send, send_json, check, check_json, config, config_json = runs
    assert (
        send.code == 0
        and json.loads(send_json.out)["transport"] == f"smtp+plain://127.0.0.1:{taking.port}"
    )
    assert check.code == 6 and "[auth_failed]" in check.err, check.both
    report = json.loads(check_json.out)
    assert [m["ok"] for m in report["members"]] == [False, True]
    assert [m["transport"] for m in report["members"]] == [
        f"smtp+plain://127.0.0.1:{s.port}" for s in (refusing, taking)
    ]
    assert config.code == 0 and config_json.code == 0
    for ran in runs:
        for secret in (PASSWORD, other):
            assert secret not in ran.both and quote(secret, safe="") not in ran.both, ran.both
