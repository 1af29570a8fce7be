"""The OAuth 2.0 settings (``FLUXMAIL_OAUTH_*``): which flow they ask for, and their rules.

Three providers, four flows (docs/oauth.md)::

    microsoft  client credentials (tenant, client id, secret), or a delegated refresh token
    google     a service-account key with domain-wide delegation (+ subject), or a refresh token
    generic    FLUXMAIL_OAUTH_TOKEN_URL + client credentials or a refresh token

Every rule is checked when the configuration is resolved, before any network traffic; the
token sources (``fluxmail.transport.oauth``) read the defaults from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from fluxmail._lazy import lazy_pattern
from fluxmail.config.sources import is_file
from fluxmail.config.urls import is_loopback
from fluxmail.errors import ConfigurationError

if TYPE_CHECKING:
    from fluxmail.config.model import Config

__all__ = [
    "GOOGLE_SCOPE",
    "GOOGLE_TOKEN_URL",
    "MICROSOFT_DELEGATED_SCOPE",
    "MICROSOFT_SCOPE",
    "MICROSOFT_TOKEN_URL",
    "OAUTH_FIELDS",
    "Flow",
    "check_oauth",
    "oauth_flow",
    "scope",
    "token_url",
]

Flow = Literal["client_credentials", "refresh_token", "service_account"]

# https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow
MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
# https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth
MICROSOFT_SCOPE = "https://outlook.office365.com/.default"
MICROSOFT_DELEGATED_SCOPE = "https://outlook.office.com/SMTP.Send offline_access"
# https://developers.google.com/identity/protocols/oauth2/service-account
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
GOOGLE_SCOPE = "https://mail.google.com/"

OAUTH_FIELDS = (
    "oauth_provider",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_refresh_token",
    "oauth_tenant_id",
    "oauth_scope",
    "oauth_token_url",
    "oauth_service_account_file",
    "oauth_subject",
)
# A GUID, a domain, or Microsoft's common / organizations / consumers: it goes into a URL path.
_TENANT = lazy_pattern(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
# What each flow reads; anything else set is a contradiction, not silently ignored.
_USED: dict[tuple[str, Flow], tuple[str, ...]] = {
    ("microsoft", "client_credentials"): ("tenant_id", "client_id", "client_secret"),
    ("microsoft", "refresh_token"): ("tenant_id", "client_id", "client_secret", "refresh_token"),
    ("google", "service_account"): ("service_account_file", "subject"),
    ("google", "refresh_token"): ("client_id", "client_secret", "refresh_token"),
    ("generic", "client_credentials"): ("client_id", "client_secret"),
    ("generic", "refresh_token"): ("client_id", "client_secret", "refresh_token"),
}
# What each flow cannot do without (the client secret is optional for a public client).
_NEEDED: dict[tuple[str, Flow], tuple[str, ...]] = {
    ("microsoft", "client_credentials"): ("tenant_id", "client_id", "client_secret"),
    ("microsoft", "refresh_token"): ("tenant_id", "client_id"),
    ("google", "service_account"): ("subject",),
    ("google", "refresh_token"): ("client_id", "client_secret", "refresh_token"),
    ("generic", "client_credentials"): ("client_id", "client_secret"),
    ("generic", "refresh_token"): ("client_id",),
}


def _var(name: str) -> str:
    return f"FLUXMAIL_OAUTH_{name.upper()}"


def oauth_flow(c: Config) -> Flow | None:
    """The grant the settings ask for; None when no FLUXMAIL_OAUTH_PROVIDER is set."""
    if c.oauth_provider is None:
        return None
    if c.oauth_provider == "google":  # Google has no client-credentials grant for mail
        return "service_account" if c.oauth_service_account_file else "refresh_token"
    return "refresh_token" if c.oauth_refresh_token is not None else "client_credentials"


def token_url(c: Config) -> str | None:
    """FLUXMAIL_OAUTH_TOKEN_URL, else the provider's endpoint (None: the key file's)."""
    if c.oauth_token_url:
        return c.oauth_token_url
    if c.oauth_provider == "microsoft" and c.oauth_tenant_id:
        return MICROSOFT_TOKEN_URL.format(tenant=c.oauth_tenant_id)
    if c.oauth_provider == "google" and oauth_flow(c) == "refresh_token":
        return GOOGLE_TOKEN_URL
    return None


def scope(c: Config) -> str | None:
    """FLUXMAIL_OAUTH_SCOPE, else the provider's default for the flow (None: not sent)."""
    if c.oauth_scope:
        return c.oauth_scope
    flow = oauth_flow(c)
    if c.oauth_provider == "microsoft":
        return MICROSOFT_SCOPE if flow == "client_credentials" else MICROSOFT_DELEGATED_SCOPE
    if flow == "service_account":
        return GOOGLE_SCOPE
    return None  # a refresh token keeps the scope it was granted (RFC 6749 section 6)


def check_oauth(c: Config) -> None:
    """The OAuth settings are complete and consistent (raises ConfigurationError)."""
    flow = oauth_flow(c)
    if flow is None:
        given = [_var(n[6:]) for n in OAUTH_FIELDS if getattr(c, n) is not None]
        if given:
            raise ConfigurationError(
                f"{', '.join(given)} set but not FLUXMAIL_OAUTH_PROVIDER: set it to microsoft, "
                "google or generic (docs/oauth.md)",
                code="oauth_incomplete",
            )
        return
    provider = str(c.oauth_provider)
    label = f"FLUXMAIL_OAUTH_PROVIDER={provider} ({flow.replace('_', ' ')})"
    missing = [_var(n) for n in _NEEDED[provider, flow] if getattr(c, f"oauth_{n}") is None]
    if provider == "generic" and c.oauth_token_url is None:
        missing.insert(0, _var("token_url"))
    if missing:
        raise ConfigurationError(
            f"{label} needs {', '.join(missing)}; see docs/oauth.md", code="oauth_incomplete"
        )
    _check_unused(c, provider, flow, label)
    _check_values(c)


def _check_unused(c: Config, provider: str, flow: Flow, label: str) -> None:
    used = {*_USED[provider, flow], "provider", "scope", "token_url"}
    extra = [_var(n[6:]) for n in OAUTH_FIELDS if getattr(c, n) is not None and n[6:] not in used]
    if extra:
        raise ConfigurationError(
            f"{label} does not use {', '.join(extra)}; unset it, or choose the flow that does "
            "(docs/oauth.md)",
            code="oauth_incomplete",
        )


def _check_values(c: Config) -> None:
    if c.oauth_tenant_id is not None and not _TENANT().match(c.oauth_tenant_id):
        raise ConfigurationError(
            f"FLUXMAIL_OAUTH_TENANT_ID={c.oauth_tenant_id!r} is not a tenant id: give the "
            "directory (tenant) GUID or a domain such as contoso.onmicrosoft.com",
            code="invalid_config",
        )
    path = c.oauth_service_account_file
    if path is not None and not is_file(path):
        raise ConfigurationError(
            f"FLUXMAIL_OAUTH_SERVICE_ACCOUNT_FILE={str(path)!r} is not a readable file; give the "
            "path of the service account's JSON key",
            code="secret_file",
        )
    if c.oauth_token_url is not None:
        _check_token_url(c.oauth_token_url, c.allow_insecure_auth)


def _check_token_url(url: str, allow_insecure: bool) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
    if host is None or parts.scheme not in ("https", "http") or parts.username is not None:
        raise ConfigurationError(
            "FLUXMAIL_OAUTH_TOKEN_URL is not an https:// URL with a host (and no user part)",
            code="invalid_config",
        )
    if parts.scheme == "http" and not is_loopback(host) and not allow_insecure:
        raise ConfigurationError(
            f"refusing to send OAuth client credentials without TLS to {host}: use an https:// "
            "FLUXMAIL_OAUTH_TOKEN_URL, or set FLUXMAIL_ALLOW_INSECURE_AUTH=true if the network "
            "path is trusted",
            code="insecure_auth",
        )
