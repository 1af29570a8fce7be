"""`fluxmail config` shows the OAuth settings and never their secrets, however they were given."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import quote

import pytest

from fluxmail.cli._redact import Secrets
from fluxmail.redaction import REDACTED
from tests.support.cli import Ran, cli

SECRET = "Zq9!oauth-S3cret/x+y="
REFRESH = "1//0gRe-fresh_T0ken/z"
PATHS = ("env", "file", "dotenv")


def _forms(value: str) -> list[str]:
    return [value, quote(value, safe=""), base64.b64encode(value.encode()).decode()]


def _configure(path: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {
        "FLUXMAIL_TYPE": "memory",
        "FLUXMAIL_USERNAME": "box@example.com",
        "FLUXMAIL_OAUTH_PROVIDER": "generic",
        "FLUXMAIL_OAUTH_TOKEN_URL": "https://auth.example.com/oauth2/token",
        "FLUXMAIL_OAUTH_CLIENT_ID": "mailer-app",
    }.items():
        monkeypatch.setenv(name, value)
    secrets = {"FLUXMAIL_OAUTH_CLIENT_SECRET": SECRET, "FLUXMAIL_OAUTH_REFRESH_TOKEN": REFRESH}
    if path == "env":
        for name, value in secrets.items():
            monkeypatch.setenv(name, value)
    elif path == "file":
        for name, value in secrets.items():
            (tmp_path / name).write_text(value + "\n")
            monkeypatch.setenv(f"{name}_FILE", str(tmp_path / name))
    else:
        Path(".env").write_text("".join(f"{k}='{v}'\n" for k, v in secrets.items()))


@pytest.mark.parametrize("path", PATHS)
def test_config_shows_oauth_settings_redacted(
    path: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Text and --json: the client id and token URL shown, the secret and refresh token not."""
    _configure(path, monkeypatch, tmp_path)
    runs: list[Ran] = [
        cli(capsys, monkeypatch, *flags, "config", *style)
        for flags in ((), ("--debug",))
        for style in ((), ("--json",))
    ]
    assert [r.code for r in runs] == [0] * 4, [r.both for r in runs]
    described = json.loads(runs[1].out)["config"]
    assert described["oauth_client_secret"]["value"] == REDACTED
    assert described["oauth_refresh_token"]["value"] == REDACTED
    assert described["oauth_client_id"]["value"] == "mailer-app"
    assert "oauth_token_url" in runs[0].out and "mailer-app" in runs[0].out
    for ran in runs:
        for form in (*_forms(SECRET), *_forms(REFRESH)):
            assert form not in ran.both


def test_incomplete_oauth_error_names_no_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A configuration error about OAuth settings (exit 3) quotes no secret."""
    monkeypatch.setenv("FLUXMAIL_TYPE", "memory")
    monkeypatch.setenv("FLUXMAIL_OAUTH_PROVIDER", "microsoft")
    monkeypatch.setenv("FLUXMAIL_OAUTH_CLIENT_SECRET", SECRET)
    for style in ((), ("--json",)):
        ran = cli(capsys, monkeypatch, "--debug", "config", *style)
        assert ran.code == 3 and SECRET not in ran.both


@pytest.mark.parametrize("path", PATHS)
def test_redactor_learns_oauth_secrets_from_the_sources(
    path: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The CLI's redactor knows the OAuth secrets from every source, before any build."""
    _configure(path, monkeypatch, tmp_path)
    found = Secrets()
    assert found.is_secret(SECRET) and found.is_secret(REFRESH)
    assert found.message(f"got {SECRET!r}") == f"got '{REDACTED}'"
