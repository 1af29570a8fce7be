"""FLUXMAIL_OAUTH_* settings: sources (with *_FILE secrets), the rules of each flow, redaction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fluxmail.config.oauth import oauth_flow, scope, token_url
from fluxmail.config.resolve import resolve_config
from fluxmail.config.settings import known_variables, unknown_variables
from fluxmail.errors import ConfigurationError
from fluxmail.redaction import REDACTED

SECRET = "Oa-Cl1ent/S3cret+x="
REFRESH = "1//0gRefresh-T0ken_y"
MICROSOFT = {
    "FLUXMAIL_OAUTH_PROVIDER": "microsoft",
    "FLUXMAIL_OAUTH_TENANT_ID": "contoso.onmicrosoft.com",
    "FLUXMAIL_OAUTH_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
}


def env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    monkeypatch.setenv("FLUXMAIL_TYPE", "memory")
    monkeypatch.setenv("FLUXMAIL_USERNAME", "box@example.com")
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each FLUXMAIL_OAUTH_* lands on Config with its source; defaults come from the flow."""
    env(monkeypatch, **MICROSOFT, FLUXMAIL_OAUTH_CLIENT_SECRET=SECRET)
    c = resolve_config()
    assert c.oauth_provider == "microsoft" and c.oauth_client_secret is not None
    assert c.oauth_client_secret.get_secret_value() == SECRET
    assert c.sources["oauth_tenant_id"] == "environment"
    assert oauth_flow(c) == "client_credentials"
    assert scope(c) == "https://outlook.office365.com/.default"
    assert token_url(c) == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    )


@pytest.mark.parametrize("via", ["file", "dotenv-file"])
def test_secrets_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, via: str) -> None:
    """FLUXMAIL_OAUTH_CLIENT_SECRET_FILE / _REFRESH_TOKEN_FILE, named in the env or in .env."""
    (tmp_path / "secret").write_text(SECRET + "\n")
    (tmp_path / "refresh").write_text(REFRESH + "\n")
    files = {
        "FLUXMAIL_OAUTH_CLIENT_SECRET_FILE": str(tmp_path / "secret"),
        "FLUXMAIL_OAUTH_REFRESH_TOKEN_FILE": str(tmp_path / "refresh"),
    }
    base = {**MICROSOFT, "FLUXMAIL_STRICT": "true"}  # strict: the _FILE names are known
    if via == "file":
        env(monkeypatch, **base, **files)
    else:
        env(monkeypatch, **base)
        Path(".env").write_text("".join(f"{k}={v}\n" for k, v in files.items()))
    c = resolve_config()
    assert c.oauth_client_secret is not None and c.oauth_refresh_token is not None
    assert c.oauth_client_secret.get_secret_value() == SECRET
    assert c.oauth_refresh_token.get_secret_value() == REFRESH
    assert c.sources["oauth_refresh_token"] == "secret file"
    assert oauth_flow(c) == "refresh_token"
    assert scope(c) == "https://outlook.office.com/SMTP.Send offline_access"


def test_file_names_are_known_and_a_missing_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The _FILE forms are settings (no misspelling warning); an absent file is secret_file."""
    names = known_variables()
    assert {"FLUXMAIL_OAUTH_CLIENT_SECRET_FILE", "FLUXMAIL_OAUTH_REFRESH_TOKEN_FILE"} <= names
    assert "FLUXMAIL_OAUTH_CLIENT_ID_FILE" not in names
    env(monkeypatch, **MICROSOFT, FLUXMAIL_OAUTH_CLIENT_SECRET_FILE=str(tmp_path / "nope"))
    assert unknown_variables() == []
    with pytest.raises(ConfigurationError) as caught:
        resolve_config()
    assert caught.value.code == "secret_file"


GOOGLE_SA = {"FLUXMAIL_OAUTH_PROVIDER": "google", "FLUXMAIL_OAUTH_SUBJECT": "box@example.com"}


@pytest.mark.parametrize(
    ("values", "code", "names"),
    [
        (
            {"FLUXMAIL_OAUTH_PROVIDER": "microsoft", "FLUXMAIL_OAUTH_CLIENT_SECRET": SECRET},
            "oauth_incomplete",
            ["FLUXMAIL_OAUTH_TENANT_ID", "FLUXMAIL_OAUTH_CLIENT_ID"],
        ),
        (
            {"FLUXMAIL_OAUTH_CLIENT_SECRET": SECRET, "FLUXMAIL_OAUTH_CLIENT_ID": "a"},
            "oauth_incomplete",
            ["FLUXMAIL_OAUTH_PROVIDER"],
        ),
        (
            {"FLUXMAIL_OAUTH_PROVIDER": "google", "FLUXMAIL_OAUTH_CLIENT_SECRET": SECRET},
            "oauth_incomplete",
            ["FLUXMAIL_OAUTH_CLIENT_ID", "FLUXMAIL_OAUTH_REFRESH_TOKEN"],
        ),
        (
            {"FLUXMAIL_OAUTH_PROVIDER": "generic", "FLUXMAIL_OAUTH_CLIENT_ID": "a"},
            "oauth_incomplete",
            ["FLUXMAIL_OAUTH_TOKEN_URL", "FLUXMAIL_OAUTH_CLIENT_SECRET"],
        ),
        (
            {**GOOGLE_SA, "FLUXMAIL_OAUTH_SERVICE_ACCOUNT_FILE": "/no/such/key.json"},
            "secret_file",
            ["FLUXMAIL_OAUTH_SERVICE_ACCOUNT_FILE"],
        ),
        (
            {**MICROSOFT, "FLUXMAIL_OAUTH_CLIENT_SECRET": SECRET, "FLUXMAIL_OAUTH_SUBJECT": "x"},
            "oauth_incomplete",
            ["FLUXMAIL_OAUTH_SUBJECT"],
        ),
        (
            {
                **MICROSOFT,
                "FLUXMAIL_OAUTH_TENANT_ID": "a/../b",
                "FLUXMAIL_OAUTH_CLIENT_SECRET": SECRET,
            },
            "invalid_config",
            ["FLUXMAIL_OAUTH_TENANT_ID"],
        ),
        (
            {
                "FLUXMAIL_OAUTH_PROVIDER": "generic",
                "FLUXMAIL_OAUTH_TOKEN_URL": "http://auth.example.com/token",
                "FLUXMAIL_OAUTH_CLIENT_ID": "a",
                "FLUXMAIL_OAUTH_CLIENT_SECRET": SECRET,
            },
            "insecure_auth",
            ["FLUXMAIL_OAUTH_TOKEN_URL"],
        ),
        ({"FLUXMAIL_OAUTH_PROVIDER": "okta"}, "invalid_config", ["FLUXMAIL_OAUTH_PROVIDER"]),
    ],
)
def test_rules_before_any_network_traffic(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, str], code: str, names: list[str]
) -> None:
    """Each incomplete or contradictory set is refused when resolved, naming what to set."""
    env(monkeypatch, **values)
    with pytest.raises(ConfigurationError) as caught:
        resolve_config()
    assert caught.value.code == code, caught.value
    for name in names:
        assert name in str(caught.value)
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)


def test_loopback_http_token_url_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """http:// is refused off the machine only (a local identity proxy is loopback)."""
    env(
        monkeypatch,
        FLUXMAIL_OAUTH_PROVIDER="generic",
        FLUXMAIL_OAUTH_TOKEN_URL="http://127.0.0.1:8080/token",
        FLUXMAIL_OAUTH_CLIENT_ID="a",
        FLUXMAIL_OAUTH_CLIENT_SECRET=SECRET,
    )
    assert token_url(resolve_config()) == "http://127.0.0.1:8080/token"


def test_describe_and_repr_redact_the_oauth_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """describe() and repr(config) show the OAuth settings, the secret ones as the marker."""
    env(
        monkeypatch,
        **MICROSOFT,
        FLUXMAIL_OAUTH_CLIENT_SECRET=SECRET,
        FLUXMAIL_OAUTH_REFRESH_TOKEN=REFRESH,
    )
    c = resolve_config()
    described = c.describe()
    assert described["oauth_client_secret"] == {"value": REDACTED, "source": "environment"}
    assert described["oauth_refresh_token"]["value"] == REDACTED
    assert described["oauth_tenant_id"]["value"] == "contoso.onmicrosoft.com"
    for text in (json.dumps(described), repr(c), str(c)):
        assert SECRET not in text and REFRESH not in text
