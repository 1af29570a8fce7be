"""The SMTP login mechanism: ``FLUXMAIL_AUTH`` resolved, and the rules that go with it.

``auto`` becomes ``xoauth2`` when OAuth settings (``FLUXMAIL_OAUTH_*``) or ``token_provider=``
are given; else the provider's default (Microsoft's catalog entries say ``xoauth2``) unless a
password is set, in which case the password is used with a warning; else ``password``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fluxmail.config.urls import is_loopback
from fluxmail.errors import ConfigurationError

if TYPE_CHECKING:
    from fluxmail.config.model import Config
    from fluxmail.config.providers import Provider
    from fluxmail.config.settings import SettingsFields

__all__ = [
    "AUTH_MECHANISMS",
    "OAUTH_MECHANISMS",
    "check_auth",
    "check_token_provider",
    "has_oauth",
    "resolve_auth",
]

AUTH_MECHANISMS = ("password", "xoauth2", "oauthbearer")
OAUTH_MECHANISMS = ("xoauth2", "oauthbearer")


def check_token_provider(value: object) -> Callable[[], Any] | None:
    if value is not None and not callable(value):
        raise ConfigurationError(
            "argument token_provider= must be a callable (sync or async) returning the access "
            "token as a str or a (token, expires_at) pair",
            code="invalid_config",
        )
    return value


def has_oauth(s: SettingsFields, token_provider: object) -> bool:
    """OAuth is configured: a token provider, or any FLUXMAIL_OAUTH_* setting."""
    fields = type(s).model_fields
    return token_provider is not None or any(
        getattr(s, name, None) is not None for name in fields if name.startswith("oauth_")
    )


def resolve_auth(
    s: SettingsFields,
    provider: Provider | None,
    token_provider: object,
    src: dict[str, str],
    warnings: list[str],
) -> str:
    """The mechanism ``auto`` stands for (see the module docstring); ``src`` gets its source."""
    chosen: str = s.auth
    if chosen != "auto":
        return chosen
    if has_oauth(s, token_provider):
        return "xoauth2"
    preset = provider.auth if provider is not None else "password"
    if preset == "password":
        return "password"
    if s.password is None:
        src["auth"] = "provider preset"
        return preset
    assert provider is not None
    warnings.append(
        f"{provider.title} defaults to OAuth 2.0 ({preset}) and no OAuth settings are given: "
        "logging in with the password (basic authentication). "
        + (provider.auth_note or "")
        + " Set FLUXMAIL_AUTH=password to keep the password login, or configure OAuth "
        "(FLUXMAIL_OAUTH_*, docs/oauth.md)"
    )
    return "password"


def check_auth(c: Config, oauth_configured: bool) -> None:
    """An OAuth mechanism needs a token source and the mailbox name (``user=`` in SASL)."""
    if c.auth not in OAUTH_MECHANISMS:
        return
    preset = c.sources.get("auth") == "provider preset"
    label = "the provider preset" if preset else "FLUXMAIL_AUTH"
    if not oauth_configured and (c.username is not None or not preset):
        raise ConfigurationError(
            f"{label} asks for an OAuth 2.0 login ({c.auth}) but no token source is configured: "
            "pass token_provider= or set FLUXMAIL_OAUTH_PROVIDER (microsoft, google, generic) "
            "and its settings (docs/oauth.md); or set FLUXMAIL_AUTH=password and FLUXMAIL_PASSWORD",
            code="oauth_not_configured",
        )
    if oauth_configured and c.username is None:
        raise ConfigurationError(
            f"an OAuth 2.0 login ({c.auth}) names the mailbox it logs in as: set "
            "FLUXMAIL_USERNAME (or username=) to the mailbox address",
            code="credentials_incomplete",
        )
    insecure = c.security == "none" and not c.allow_insecure_auth and not is_loopback(c.host)
    if oauth_configured and insecure:
        raise ConfigurationError(
            f"refusing to send an OAuth access token without TLS to {c.host}: use STARTTLS "
            "(FLUXMAIL_TLS=true) or implicit TLS (FLUXMAIL_SSL=true)",
            code="insecure_auth",
        )
