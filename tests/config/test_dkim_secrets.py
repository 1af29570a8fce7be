"""A DKIM private key never appears in CLI output, reprs, errors, logs or the audit folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from fluxmail import FluxMail
from fluxmail.errors import ConfigurationError
from tests.support.cli import cli
from tests.support.dkim import DOMAIN, ed_pem, ed_seed_b64, pem_body, rsa_pem
from tests.support.servers import SMTPTestServer


def _fragments(key: str) -> list[str]:
    """Pieces any leak would show: each base64 line of a PEM, or the whole seed."""
    body = pem_body(key)
    return [body[i : i + 40] for i in range(0, len(body) - 40, 40)] or [key]


def _clean(text: str, keys: list[str]) -> None:
    for key in keys:
        for piece in _fragments(key):
            assert piece not in text


def _configure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, path: str) -> list[str]:
    rsa, ed = rsa_pem(pkcs8=True), ed_seed_b64()
    monkeypatch.setenv("FLUXMAIL_DKIM_DOMAIN", DOMAIN)
    monkeypatch.setenv("FLUXMAIL_DKIM_SELECTOR", "s1")
    monkeypatch.setenv("FLUXMAIL_DKIM_SECOND_SELECTOR", "s2")
    if path == "file":
        (tmp_path / "rsa.pem").write_text(rsa)
        (tmp_path / "ed.key").write_text(ed + "\n")
        monkeypatch.setenv("FLUXMAIL_DKIM_PRIVATE_KEY_FILE", str(tmp_path / "rsa.pem"))
        monkeypatch.setenv("FLUXMAIL_DKIM_SECOND_PRIVATE_KEY_FILE", str(tmp_path / "ed.key"))
    elif path == "dotenv":
        Path(".env").write_text(f'FLUXMAIL_DKIM_PRIVATE_KEY="{rsa}"\n'
                                f"FLUXMAIL_DKIM_SECOND_PRIVATE_KEY={ed}\n")  # fmt: skip
    else:
        monkeypatch.setenv("FLUXMAIL_DKIM_PRIVATE_KEY", rsa)
        monkeypatch.setenv("FLUXMAIL_DKIM_SECOND_PRIVATE_KEY", ed)
    return [rsa, ed]


@pytest.mark.parametrize("path", ["env", "file", "dotenv"])
def test_cli_never_prints_the_key(
    path: str,
    smtp_server: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    server: SMTPTestServer = smtp_server()
    keys = _configure(monkeypatch, tmp_path, path)
    env = {"HOST": "127.0.0.1", "PORT": str(server.port), "TLS": "false",
           "SENDER": f"shop@{DOMAIN}", "AUDIT_DIR": str(tmp_path / "a")}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(f"FLUXMAIL_{name}", value)
    send = ("send", "--to", "bob@example.org", "--subject", "Hi", "--text", "Hi")
    for command in (("config",), ("config", "--json"), send, ("--debug", *send)):
        ran = cli(capsys, monkeypatch, *command)
        assert ran.code == 0, ran.both
        _clean(ran.both, keys)
    assert len(server.messages) == 2
    assert all(m.data.startswith(b"DKIM-Signature:") for m in server.messages)
    # A bad key: the error names the variable, not the content.
    monkeypatch.setenv("FLUXMAIL_DKIM_PRIVATE_KEY", pem_body(keys[0])[:200])
    monkeypatch.delenv("FLUXMAIL_DKIM_PRIVATE_KEY_FILE", raising=False)
    monkeypatch.delenv("FLUXMAIL_DKIM_SECOND_SELECTOR")
    monkeypatch.delenv("FLUXMAIL_DKIM_SECOND_PRIVATE_KEY", raising=False)
    monkeypatch.delenv("FLUXMAIL_DKIM_SECOND_PRIVATE_KEY_FILE", raising=False)
    Path(".env").unlink(missing_ok=True)
    ran = cli(capsys, monkeypatch, "config")
    assert ran.code == 3 and "[invalid_dkim_key]" in ran.both, ran.both
    assert pem_body(keys[0])[:40] not in ran.both


def test_reprs_errors_logs_and_audit_files_hold_no_key(
    smtp_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server: SMTPTestServer = smtp_server()
    rsa, ed = rsa_pem(), ed_pem()
    settings = {"host": "127.0.0.1", "port": server.port, "use_tls": False,
                "sender": f"shop@{DOMAIN}", "audit_dir": tmp_path / "audit",
                "dkim_domain": DOMAIN, "dkim_selector": "s1", "dkim_private_key": rsa,
                "dkim_second_selector": "s2", "dkim_second_private_key": ed}  # fmt: skip
    with caplog.at_level(logging.DEBUG):
        mailer = FluxMail(**settings)
        result = mailer.create("Hi", ["to@example.org"], "body").send()
        mailer.close()
    assert mailer._dkim is not None
    shown = [repr(mailer), repr(mailer.config), str(mailer.config), repr(mailer._dkim),
             str(mailer.describe()), caplog.text, repr(result)]  # fmt: skip
    shown += [p.read_bytes().decode("utf-8", "replace") for p in tmp_path.rglob("*") if p.is_file()]
    for text in shown:
        _clean(text, [rsa, ed])
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(mailer._dkim.keys[0])
    # Wrong-type keys are refused without echoing them, whichever key is wrong.
    for field in ("dkim_private_key", "dkim_second_private_key"):
        wrong = {**settings, field: ed.replace("PRIVATE KEY", "RSA PRIVATE KEY")}
        with pytest.raises(ConfigurationError) as info:
            FluxMail(**wrong)
        assert info.value.code == "invalid_dkim_key"
        _clean(str(info.value) + repr(info.value), [ed])
