"""HTTP API transports in the configuration: the ``<provider>+api://`` URL form and the checks.

URL form (Symfony Mailer's DSN shape; ``default`` means the provider's own endpoint)::

    sendgrid+api://KEY@default
    postmark+api://TOKEN@default?message_stream=outbound
    resend+api://KEY@default
    mailgun+api://KEY@example.com?region=eu        the host part is the sending domain
    cloudflare+api://TOKEN@ACCOUNT_ID              the host part is the account id
    ses+api://default?region=eu-west-1             keys optional (the AWS chain); else
    ses+api://ACCESS_KEY_ID:SECRET@default           the id becomes the username
    gmail+api://user@example.com                   the mailbox; tokens from FLUXMAIL_OAUTH_*

``?endpoint=https://host:port`` (or ``FLUXMAIL_API_BASE_URL``) replaces the scheme, host and
port of the API; the documented paths follow. Plain ``http://`` only to a loopback host: the
key crosses the network in every request. The same is ``FLUXMAIL_TRANSPORT=api`` with
``FLUXMAIL_PROVIDER=sendgrid`` and ``FLUXMAIL_API_KEY``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import SecretStr

from fluxmail.config.providers import Provider, get_provider, normalize_name
from fluxmail.config.urls import UrlParts, is_api_url, is_loopback, query_fields
from fluxmail.errors import ConfigurationError

__all__ = [
    "API_OPTION_FIELDS",
    "API_TRANSPORTS",
    "ApiChoice",
    "api_key",
    "check_base_url",
    "is_api_url",
    "parse_api_url",
    "resolve_api",
]

# The providers fluxmail has an HTTP API transport for (fluxmail/transport/api/<name>.py).
API_TRANSPORTS = ("cloudflare", "gmail", "mailgun", "postmark", "resend", "sendgrid", "ses")
# Settings that become ``Config.api_options`` (option name -> settings field).
API_OPTION_FIELDS = {
    "region": "region",
    "message_stream": "api_message_stream",
    "domain": "api_domain",
    "account_id": "api_account_id",
    "user": "api_user",
}
# What the URL's host part means, when it is not ``default``.
_HOST_PART = {"mailgun": "api_domain", "cloudflare": "api_account_id", "ses": "region"}
# Query parameters only the API form takes (parameter -> settings field).
_API_QUERY = {
    "endpoint": "api_base_url",
    "message_stream": "api_message_stream",
    "account_id": "api_account_id",
    "user": "api_user",
}


def _error(problem: str) -> ConfigurationError:
    return ConfigurationError(
        f"FLUXMAIL_URL / from_url() is malformed: {problem}. Expected <provider>+api://KEY@default "
        "(sendgrid, postmark, resend), mailgun+api://KEY@DOMAIN, cloudflare+api://TOKEN@ACCOUNT_ID,"
        " ses+api://default?region=..., gmail+api://user@example.com (percent-encode special "
        "characters in the key)",
        code="invalid_url",
    )


def _query(text: str) -> dict[str, object]:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError:
        pairs = None
    if pairs is None:  # outside the except block: urllib's message may quote the URL
        raise _error("the query string is not name=value pairs joined by &")
    allowed = (query_fields() - {"type", "provider", "domain"}) | set(_API_QUERY)
    values: dict[str, object] = {}
    for raw_key, value in pairs:
        key = raw_key.strip().lower().replace("-", "_")
        if key not in allowed:
            raise _error(
                f"query parameter {key!r} is not allowed (allowed: {', '.join(sorted(allowed))})"
            )
        field = _API_QUERY.get(key, key)
        if field in values:
            raise _error(f"query parameter {key!r} is given twice")
        values[field] = value
    return values


def parse_api_url(text: str) -> UrlParts:
    """``<provider>+api://...`` into settings values; never echoes the URL (it holds a key)."""
    text = text.strip()
    name = normalize_name(text.partition("://")[0].lower().removesuffix("+api"))
    try:
        parts = urlsplit(text)
        port, host = parts.port, parts.hostname
    except ValueError:
        parts = None
    if parts is None:
        raise _error("the host part cannot be parsed")
    if parts.fragment or "#" in text:
        raise _error("it contains '#'; percent-encode it as %23")
    if parts.path not in ("", "/"):
        raise _error("it has a path; use ?endpoint=https://host:port to change the API's address")
    if port is not None:
        raise _error("it has a port; use ?endpoint=https://host:port to change the API's address")
    values: dict[str, Any] = {"transport": "api", "provider": name, **_query(parts.query)}
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    _credentials(name, user, password, host or "", values)
    return UrlParts(values, None, "")


def _credentials(name: str, user: str, password: str, host: str, values: dict[str, Any]) -> None:
    if name == "gmail":
        if password:
            raise _error("gmail+api:// takes no password: the OAuth settings give its tokens")
        if user and host:
            values["api_user"] = f"{user}@{host}"
        return
    if name == "ses":
        if user:
            values["username"] = user  # the access key id; the secret is the key
        if password:
            values["api_key"] = password
    elif user and password:
        raise _error("give the key once, as the user part: KEY@default")
    elif user or password:
        values["api_key"] = user or password
    if host and host != "default":
        field = _HOST_PART.get(name)
        if field is None:
            raise _error(f"{name}+api:// takes 'default' as its host (use ?endpoint= for another)")
        if field in values:
            raise _error(f"{field.removeprefix('api_')} is given twice (host part and query)")
        values[field] = host


def check_base_url(url: str, label: str) -> str:
    """``https://host[:port]`` (``http://`` to loopback only); the documented paths follow."""
    try:
        parts = urlsplit(url.strip())
        host, _ = parts.hostname, parts.port
    except ValueError:
        host, parts = None, None
    if parts is None or not host or parts.scheme not in ("https", "http"):
        raise ConfigurationError(
            f"{label} must be https://host[:port] (the documented paths follow)",
            code="invalid_url",
        )
    if (
        parts.username
        or parts.password
        or parts.query
        or parts.fragment
        or parts.path not in ("", "/")
    ):
        raise ConfigurationError(
            f"{label} may hold only the scheme, host and port (no path, query or credentials): "
            "fluxmail adds each API's documented path",
            code="invalid_url",
        )
    if parts.scheme == "http" and not is_loopback(host):
        raise ConfigurationError(
            f"{label} is plain http:// to {host}, which is not loopback: the API key would cross "
            "the network in the clear; use https://",
            code="insecure_auth",
        )
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class ApiChoice:
    """The resolved API settings: which transport module, the base URL override, options."""

    provider: Provider | None
    name: str
    base_url: str | None
    options: Mapping[str, str]


def _choose(name: str | None, extra: Path | None) -> tuple[Provider | None, str]:
    if not name:
        raise ConfigurationError(
            "FLUXMAIL_TRANSPORT=api needs FLUXMAIL_PROVIDER (one of "
            f"{', '.join(API_TRANSPORTS)}), or FLUXMAIL_URL=<provider>+api://KEY@default",
            code="invalid_config",
        )
    wanted = normalize_name(name)
    try:
        provider = get_provider(name, extra)
    except ConfigurationError as exc:
        if exc.code == "unknown_provider" and wanted in API_TRANSPORTS:
            return None, wanted  # an API-only provider: no SMTP entry in the catalog
        raise
    if provider.api is None:
        raise ConfigurationError(
            f"{provider.title} has no HTTP API transport in fluxmail; providers with one: "
            f"{', '.join(API_TRANSPORTS)}. Use its SMTP relay (unset FLUXMAIL_TRANSPORT)",
            code="api_not_offered",
        )
    return provider, provider.api.transport


def resolve_api(s: Any, src: dict[str, str]) -> ApiChoice:
    """The API settings of ``s`` (FluxMailSettings); every check before any request."""
    provider, name = _choose(s.provider, s.providers_file)
    base_url = None
    if s.api_base_url is not None:
        base_url = check_base_url(s.api_base_url, _label(src.get("api_base_url")))
    options = dict(provider.api.options) if provider is not None and provider.api else {}
    for option, field in API_OPTION_FIELDS.items():
        value = getattr(s, field, None)
        if value is not None:
            options[option] = str(value)
    return ApiChoice(provider, name, base_url, options)


def api_key(s: Any, choice: ApiChoice, src: dict[str, str]) -> SecretStr | None:
    """FLUXMAIL_API_KEY; else FLUXMAIL_PASSWORD where the SMTP password is the API key
    (SendGrid, Postmark, Resend), so switching to the API is one variable."""
    if s.api_key is not None:
        return s.api_key  # type: ignore[no-any-return]
    api = choice.provider.api if choice.provider is not None else None
    if api is None or not api.password_is_key or s.password is None:
        return None
    src["api_key"] = src.get("password", "default")
    return s.password  # type: ignore[no-any-return]


def _label(source: str | None) -> str:
    return "FLUXMAIL_URL (?endpoint=)" if source == "url" else "FLUXMAIL_API_BASE_URL"
