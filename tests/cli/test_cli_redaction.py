"""Redaction by structure: a password that is a common word neither corrupts nor leaks."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from email import message_from_bytes
from pathlib import Path
from urllib.parse import quote

import pytest

from fluxmail.config.resolve import resolve_config
from fluxmail.config.secrets import REDACTED
from tests.support.cli import Ran, cli
from tests.support.servers import SMTPTestServer

Server = Callable[..., SMTPTestServer]
USER = "alice@example.com"
# Words that occur in ordinary output: setting names, sources, JSON values, domains, verbs.
COMMON = ("pass", "source", "default", "example", "true", "1", "smtp")
SEND = ("send", "--to", "bob@example.com", "--subject", "Hello", "--text", "It works")


def _structural(password: str) -> list[str]:
    """What would give the password away: its AUTH encodings and a URL's credentials."""
    plain = base64.b64encode(f"\0{USER}\0{password}".encode()).decode()
    login = base64.b64encode(password.encode()).decode()
    return [plain, login, f":{password}@", f":{quote(password, safe='')}@"]


def _env(monkeypatch: pytest.MonkeyPatch, server: SMTPTestServer, password: str) -> None:
    for name, value in {
        "HOST": "127.0.0.1", "PORT": str(server.port), "TLS": "false", "TIMEOUT": "10",
        "USERNAME": USER, "PASSWORD": password, "SENDER": f"Demo <{USER}>",
    }.items():  # fmt: skip
        monkeypatch.setenv(f"FLUXMAIL_{name}", value)


def _config_ok(text: Ran, js: Ran) -> None:
    rows = [line.split() for line in text.out.splitlines() if line.strip()]
    assert rows[0] == ["setting", "value", "source"], text.out
    table = {row[0]: row[1:] for row in rows[2:]}
    assert set(table) == set(resolve_config().describe()), text.out
    assert table["password"] == [REDACTED, "environment"] and table["tls_verify"] == [
        "true",
        "default",
    ]
    data = json.loads(js.out)["config"]
    assert set(data) == set(resolve_config().describe())
    assert data["password"] == {"value": REDACTED, "source": "environment"}
    assert data["username"]["value"] == USER and data["dry_run"] == {
        "value": False,
        "source": "default",
    }


def _check_ok(text: Ran, js: Ran) -> None:
    assert f"ok as {USER}" in text.out and "nothing was sent" in text.out, text.both
    data = json.loads(js.out)
    assert data["ok"] is True and data["authenticated"] is True and data["username"] == USER
    assert data["host"] == "127.0.0.1" and data["security"] == "none"


def _send_ok(text: Ran, js: Ran, server: SMTPTestServer) -> str:
    ids = [message_from_bytes(m.data)["Message-ID"] for m in server.messages]
    assert re.search(rf"message-id:\s+{re.escape(ids[0])}\n", text.out), text.out
    assert text.out.startswith("sent") and "sent      bob@example.com" in text.out
    data = json.loads(js.out)
    assert data["ok"] is True and data["status"] == "sent" and data["message_id"] == ids[1]
    assert ids[1].endswith("@example.com>") and data["recipients"]["bob@example.com"]["status"]
    return str(data["audit_id"])


@pytest.mark.parametrize("password", COMMON)
def test_common_word_password_neither_corrupts_nor_leaks(
    password: str,
    smtp_server: Server,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """config, check, send, audit and providers print intact output; no encoding of the secret."""
    server = smtp_server(auth=(USER, password), auth_require_tls=False)
    _env(monkeypatch, server, password)
    run = lambda *args: cli(capsys, monkeypatch, *args)  # noqa: E731
    runs = [run("config"), run("config", "--json"), run("check"), run("check", "--json")]
    assert [r.code for r in runs] == [0] * 4, [r.both for r in runs]
    _config_ok(*runs[0:2])
    _check_ok(*runs[2:4])
    sends = [run(*SEND), run(*SEND, "--json")]
    audit_id = _send_ok(*sends, server)
    listed, shown = run("audit", "list", "--json"), run("audit", "show", audit_id)
    assert json.loads(listed.out)["records"][0]["id"] == audit_id
    table = run("audit", "list")
    assert audit_id in table.out and "2 record(s)" in table.out and "Hello" in table.out
    assert re.search(r"message-id:\s+<[^>]+@example\.com>", shown.out), shown.out
    eml = run("audit", "show", audit_id, "--eml")
    sent_id = message_from_bytes(server.messages[1].data)["Message-ID"]
    assert message_from_bytes(eml.out.encode())["Message-ID"] == sent_id, eml.out
    providers = run("providers", "sendgrid")
    assert "FLUXMAIL_PASSWORD_FILE=/run/secrets/smtp_password" in providers.out
    assert "password:" in providers.out and "smtp.sendgrid.net" in providers.out
    catalog = json.loads(run("providers", "--json").out)["providers"]
    assert {"password_hint", "default_region", "sender_required"} <= set(catalog[0])
    for ran in [*runs, *sends, listed, table, shown, eml, providers]:
        assert "***" not in ran.both.replace(REDACTED, ""), ran.both
        for leak in _structural(password):
            assert leak not in ran.both, (leak, ran.both)


@pytest.mark.parametrize("password", COMMON)
def test_url_credentials_are_redacted_whole(
    password: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """FLUXMAIL_URL holds the password: it is redacted as a field, nothing else changes."""
    url = f"smtp+plain://{quote(USER)}:{quote(password, safe='')}@127.0.0.1:2525"
    monkeypatch.setenv("FLUXMAIL_URL", url)
    text, js = cli(capsys, monkeypatch, "config"), cli(capsys, monkeypatch, "config", "--json")
    assert text.code == 0 and js.code == 0, text.both
    data = json.loads(js.out)["config"]
    assert data["password"] == {"value": REDACTED, "source": "url"}
    assert data["host"] == {"value": "127.0.0.1", "source": "url"}
    assert set(data) == set(resolve_config().describe())
    assert "setting" in text.out and "source" in text.out and "default" in text.out
    for leak in _structural(password):
        assert leak not in text.both + js.both


@pytest.mark.parametrize("password", COMMON)
def test_messages_redact_whole_values_only(password: str) -> None:
    """An echoed value that IS the secret, and a URL's password, are redacted; words are not."""
    from fluxmail.cli._redact import Secrets

    secrets = Secrets({"FLUXMAIL_PASSWORD": password, "FLUXMAIL_USERNAME": USER})
    plain = f"the {password} source is default for example smtp://host:25 (true, 1)"
    assert secrets.message(plain) == plain
    echoed = f"FLUXMAIL_PROVIDER={password!r} is not a known provider"
    assert secrets.message(echoed) == f"FLUXMAIL_PROVIDER='{REDACTED}' is not a known provider"
    url = f"cannot reach smtp://{quote(USER)}:{quote(password, safe='')}@example.com:25 now"
    assert (
        secrets.message(url) == f"cannot reach smtp://{quote(USER)}:{REDACTED}@example.com:25 now"
    )
    assert secrets.is_secret(base64.b64encode(f"\0{USER}\0{password}".encode()).decode())


def test_url_secret_derives_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret URL contributes its decoded password and the AUTH encodings of it."""
    from fluxmail.cli._redact import Secrets

    secrets = Secrets({"FLUXMAIL_URL": "smtps://bob%40example.com:p%2Fw@smtp.example.com"})
    assert secrets.is_secret("p/w") and secrets.is_secret("p%2Fw")
    assert secrets.is_secret(base64.b64encode(b"\0bob@example.com\0p/w").decode())
    assert not secrets.is_secret("smtp.example.com")


# --- the CLI learns its secrets from the config layer's sources ------------------------------

ONLY_HERE = "Zq9-known-only-from-one-source"


def _secret_in_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(ONLY_HERE + "\n")
    monkeypatch.setenv("FLUXMAIL_PASSWORD_FILE", str(tmp_path / "pw"))


def _secret_in_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"FLUXMAIL_PASSWORD={ONLY_HERE}\n")


@pytest.mark.parametrize("place", [_secret_in_file, _secret_in_dotenv], ids=["file", "dotenv"])
@pytest.mark.parametrize("json_flag", [(), ("--json",)], ids=["text", "json"])
def test_cli_redacts_a_secret_known_only_from_file_or_dotenv(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    place: Callable[[pytest.MonkeyPatch, Path], None],
    json_flag: tuple[str, ...],
) -> None:
    """An error that echoes a secret found only in a *_FILE or only in .env is redacted:
    the redactor asks the config layer's sources, as the build does, before any build."""
    monkeypatch.chdir(tmp_path)
    place(monkeypatch, tmp_path)
    monkeypatch.setenv("FLUXMAIL_HOST", "mail.example.com")
    monkeypatch.setenv("FLUXMAIL_USERNAME", USER)
    ran = cli(capsys, monkeypatch, "config", "--provider", ONLY_HERE, *json_flag)
    assert ran.code != 0
    assert ONLY_HERE not in ran.both and ONLY_HERE.lower() not in ran.both
    assert REDACTED in ran.both, ran.both


def test_redactor_reads_the_same_sources_as_the_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Secrets() knows the .env and *_FILE secrets that resolve_config() would read."""
    from fluxmail.cli._redact import Secrets

    monkeypatch.chdir(tmp_path)
    _secret_in_dotenv(monkeypatch, tmp_path)
    (tmp_path / "audit").write_text("audit-secret-from-file\n")
    monkeypatch.setenv("FLUXMAIL_AUDIT_PASSWORD_FILE", str(tmp_path / "audit"))
    config = resolve_config(object_type="memory")
    assert config.password is not None and config.audit_password is not None
    secrets = Secrets()
    assert secrets.is_secret(config.password.get_secret_value())
    assert secrets.is_secret(config.audit_password.get_secret_value())
