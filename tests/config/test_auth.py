"""FLUXMAIL_AUTH and token_provider=: how `auto` resolves, the catalog's default mechanism, and
the errors raised before any network traffic."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluxmail.config.providers import get_provider, load_catalog
from fluxmail.config.resolve import resolve_config
from fluxmail.errors import ConfigurationError


def _token() -> str:
    return "tok"


def test_office365_defaults_to_xoauth2() -> None:
    """The office365 and outlook presets show auth = xoauth2 (from the preset) with no password."""
    for name in ("office365", "outlook"):
        shown = resolve_config(provider=name).describe()["auth"]
        assert shown == {"value": "xoauth2", "source": "provider preset"}
        assert "December 2026" in get_provider(name).auth_note


def test_office365_with_a_password_warns_about_basic_auth() -> None:
    """A password and no OAuth: the password login is used, with a warning about the
    retirement; FLUXMAIL_AUTH=password silences it."""
    c = resolve_config(provider="office365", username="a@contoso.example", password="pw")
    assert c.auth == "password"
    assert any("December 2026" in w and "FLUXMAIL_AUTH=password" in w for w in c.warnings)
    quiet = resolve_config(
        provider="office365", username="a@contoso.example", password="pw", auth="password"
    )
    assert quiet.auth == "password" and not quiet.warnings


def test_token_provider_makes_auto_xoauth2(monkeypatch: pytest.MonkeyPatch) -> None:
    """token_provider= turns auto into xoauth2; FLUXMAIL_AUTH=oauthbearer picks the RFC 7628 one."""
    c = resolve_config(host="smtp.example.com", username="a@example.com", token_provider=_token)
    assert c.auth == "xoauth2" and c.token_provider is _token and c.password is None
    monkeypatch.setenv("FLUXMAIL_AUTH", "OAuthBearer")
    c = resolve_config(host="smtp.example.com", username="a@example.com", token_provider=_token)
    assert c.auth == "oauthbearer" and "function" not in repr(c)


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"auth": "xoauth2", "username": "a@example.com"}, "oauth_not_configured"),
        ({"provider": "office365", "username": "a@contoso.example"}, "oauth_not_configured"),
        ({"token_provider": _token}, "credentials_incomplete"),
        ({"token_provider": "not callable", "username": "a@example.com"}, "invalid_config"),
        ({"auth": "kerberos"}, "invalid_config"),
        (
            {"token_provider": _token, "username": "a@example.com", "use_tls": False},
            "insecure_auth",
        ),
    ],
)
def test_bad_auth_settings(kwargs: dict[str, object], code: str) -> None:
    """Each mistake is a ConfigurationError with a stable code, before any network traffic."""
    if "provider" not in kwargs:
        kwargs.setdefault("host", "smtp.example.com")
    with pytest.raises(ConfigurationError) as caught:
        resolve_config(**kwargs)
    assert caught.value.code == code


def test_catalog_auth_is_validated(tmp_path: Path) -> None:
    """An override file's `auth` must be password, xoauth2 or oauthbearer."""
    extra = tmp_path / "p.yaml"
    extra.write_text("providers:\n  gmail:\n    auth: basic\n", encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        load_catalog(extra)
    assert caught.value.code == "invalid_providers_file" and "'auth'" in caught.value.message


def test_gmail_documents_app_passwords_and_oauth() -> None:
    """gmail keeps the password default and explains both logins."""
    gmail = get_provider("gmail")
    assert gmail.auth == "password"
    assert "App Password" in gmail.notes and "XOAUTH2" in gmail.notes
