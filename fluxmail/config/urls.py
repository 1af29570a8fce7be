"""Host forms and the one-URL form.

Host forms (``FLUXMAIL_HOST`` / ``host=``): ``smtp.example.com``; ``relay:domain``
(``smtp.gmail.com:gmail.com``, upstream); ``host:port`` when everything after the colon is digits;
``[::1]:2525`` (bracketed IPv6, optional port); ``EmailInstance(relay=, domain=)``.

URL form (``FLUXMAIL_URL`` / ``FluxMail.from_url``)::

    smtp://user:pass@host:587          STARTTLS (default port 587)
    smtps://user:pass@host:465         implicit TLS (default port 465)
    smtp+plain://host:25               no TLS at all (default port 25)
    sendgrid://:API_KEY@               a provider by name; the host part is its region:
    ses://USER:PASS@eu-west-1          ...
    sendgrid+api://KEY@default         an HTTP API transport (fluxmail.config.api)

User and password are percent-decoded. Query parameters set other settings by field name
(``?timeout=10&sender=...&domain=example.com``); secrets never go in the query.
Error messages never echo the URL: it holds a password.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

from fluxmail._lazy import lazy_pattern
from fluxmail.config.ports import DEFAULT_PORTS, check_port
from fluxmail.config.tls import SECURITY_MODES, Security
from fluxmail.errors import ConfigurationError
from fluxmail.message.domains import idna_domain

if TYPE_CHECKING:
    from fluxmail.config.providers import Provider

__all__ = [
    "PRECEDENCE",
    "EmailInstance",
    "HostSpec",
    "Security",
    "UrlParts",
    "explicit_port",
    "is_api_url",
    "is_loopback",
    "parse_host",
    "parse_url",
    "query_fields",
    "resolve_domain",
    "resolve_host",
    "resolve_port",
    "resolve_security",
]

PRECEDENCE = (
    "argument",
    "environment",
    ".env",
    "secret file",
    "url",
    "provider preset",
    "default",
)


SCHEMES: dict[str, Security] = {"smtp": "starttls", "smtps": "implicit", "smtp+plain": "none"}
_LABEL = lazy_pattern(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
# Fields a query parameter may set. Secrets, and what the URL's own parts say, are excluded.
_QUERY_FIELDS = frozenset(
    {
        "type",
        "provider",
        "region",
        "sender",
        "ca_file",
        "tls_verify",
        "local_hostname",
        "timeout",
        "connect_timeout",
        "command_timeout",
        "data_timeout",
        "max_retries",
        "retry_delay",
        "retry_deadline",
        "providers_file",
        "allow_insecure_auth",
        "dry_run",
        "audit",
        "audit_dir",
        "file_dir",
        "rate_limit",
        "domain",
    }
)


def query_fields() -> frozenset[str]:
    """The settings a URL's query may set (the API form, fluxmail.config.api, adds its own)."""
    return _QUERY_FIELDS


class EmailInstance(NamedTuple):
    """Upstream-compatible host: the relay and, optionally, the mail domain."""

    relay: str
    domain: str = ""


# Named tuples, not frozen dataclasses: both are immutable, and a dataclass costs every cold
# start ~0.4 ms to create (its methods are generated and compiled at import), a tuple ~0.1 ms.
class HostSpec(NamedTuple):
    """A parsed host form: the host, and the port and mail domain when the form gives them."""

    host: str
    port: int | None = None
    domain: str = ""


class UrlParts(NamedTuple):
    """Settings found in a URL (field -> raw value), plus the TLS mode its scheme implies."""

    values: dict[str, object]
    security: Security | None = None
    domain: str = ""


def _host_error(name: str, problem: str) -> ConfigurationError:
    return ConfigurationError(
        f"{name}: {problem}; use a host name, relay:domain, host:port or [ipv6]:port",
        code="invalid_host",
    )


def _check_hostname(value: str, name: str) -> str:
    """Lower-cased ASCII host name or IP address; international names become IDNA."""
    host = value.strip().rstrip(".").lower()
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        ascii_host = idna_domain(host)
    except UnicodeError:
        raise _host_error(name, f"{value!r} is not a valid host name") from None
    if not ascii_host or not all(_LABEL().match(label) for label in ascii_host.split(".")):
        raise _host_error(name, f"{value!r} is not a valid host name")
    return ascii_host


def parse_host(value: str | EmailInstance, name: str = "FLUXMAIL_HOST") -> HostSpec:
    """Split any documented host form into host (IPv6 without brackets), port and domain."""
    if isinstance(value, tuple):
        if not 1 <= len(value) <= 2 or not all(isinstance(part, str) for part in value):
            raise _host_error(name, "EmailInstance(relay, domain) takes one or two strings")
        inner = parse_host(str(value[0]), name)
        domain = str(value[1]) if len(value) > 1 and value[1] else inner.domain
        return HostSpec(inner.host, inner.port, domain)
    text = str(value).strip()
    if not text:
        raise _host_error(name, "the host is empty")
    if text.startswith("["):
        match = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text)
        if match is None:
            raise _host_error(name, f"{text!r} is not a bracketed IPv6 address")
        try:
            ipaddress.IPv6Address(match.group(1))
        except ValueError:
            raise _host_error(name, f"{match.group(1)!r} is not an IPv6 address") from None
        port = check_port(match.group(2), name) if match.group(2) else None
        return HostSpec(match.group(1).lower(), port)
    if text.count(":") > 1:
        try:
            return HostSpec(str(ipaddress.IPv6Address(text)))
        except ValueError:
            raise _host_error(name, f"{text!r} has several colons; bracket IPv6: [::1]") from None
    relay, sep, rest = text.partition(":")
    if sep and not rest:
        raise _host_error(name, f"{text!r} ends with ':'")
    host = _check_hostname(relay, name)
    if rest.isdigit():  # upstream reads "relay:domain"; all digits can only be a port
        return HostSpec(host, check_port(rest, name))
    return HostSpec(host, None, _check_hostname(rest, name) if rest else "")


def is_loopback(host: str | None) -> bool:
    """True for localhost and loopback addresses: traffic that never leaves the machine."""
    if not host:
        return False
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_api_url(text: str) -> bool:
    """``<provider>+api://...``: the HTTP API form, parsed by fluxmail.config.api."""
    return text.strip().partition("://")[0].lower().endswith("+api")


def _url_error(problem: str) -> ConfigurationError:
    return ConfigurationError(
        f"FLUXMAIL_URL / from_url() is malformed: {problem}. Expected "
        "smtp://user:pass@host:587, smtps://user:pass@host:465, smtp+plain://host:25 or "
        "<provider>://user:pass@[region] (percent-encode special characters in credentials)",
        code="invalid_url",
    )


def _query(text: str) -> dict[str, object]:
    values: dict[str, object] = {}
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError:
        pairs = None
    if pairs is None:  # outside the except block: urllib's message may quote the URL
        raise _url_error("the query string is not name=value pairs joined by &")
    for raw_key, value in pairs:
        key = raw_key.strip().lower().replace("-", "_")
        if key not in _QUERY_FIELDS:
            allowed = ", ".join(sorted(_QUERY_FIELDS))
            raise _url_error(f"query parameter {key!r} is not allowed (allowed: {allowed})")
        if key in values:
            raise _url_error(f"query parameter {key!r} is given twice")
        values[key] = value
    return values


def parse_url(url: str) -> UrlParts:
    """Parse the one-URL form into settings values; raises ``invalid_url`` without echoing it."""
    text = url.strip()
    scheme, sep, _ = text.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        raise _url_error("it must start with a scheme such as smtp://")
    try:
        parts = urlsplit(text)
        port, hostname = parts.port, parts.hostname
    except ValueError:
        parts = None
    if parts is None:  # outside the except block: urllib's message may quote the password
        raise _url_error("the host or port cannot be parsed (bracket IPv6; port 1-65535)")
    if parts.fragment or "#" in text:
        raise _url_error("it contains '#'; percent-encode it as %23")
    if parts.path not in ("", "/"):
        raise _url_error("it has a path; nothing may follow the host and port except ?query")
    values = _query(parts.query)
    if parts.username:
        values["username"] = unquote(parts.username)
    if parts.password:
        values["password"] = unquote(parts.password)
    if port is not None:
        values["port"] = check_port(str(port), "FLUXMAIL_URL")
    domain = str(values.pop("domain", "") or "")
    lowered = scheme.lower()
    if lowered in SCHEMES:
        if not hostname:
            raise _url_error(f"{lowered}:// needs a host")
        values["host"] = f"[{hostname}]" if ":" in hostname else hostname
        return UrlParts(values, SCHEMES[lowered], domain)
    if "provider" in values:
        raise _url_error("the scheme already names the provider; drop ?provider=")
    values["provider"] = lowered
    if hostname:
        if "region" in values:
            raise _url_error("the region is given twice (host part and ?region=)")
        values["region"] = hostname
    return UrlParts(values, None, domain)


# Where to connect: host, port and TLS mode, each recording its source in ``src``.


def resolve_host(
    spec: HostSpec | None, provider: Provider | None, region: str | None, src: dict[str, str]
) -> str | None:
    if spec is not None:
        return spec.host
    if provider is not None:
        src["host"] = "provider preset"
        return provider.host_for(region)
    return None


def resolve_domain(spec: HostSpec | None, url: UrlParts | None, src: dict[str, str]) -> str:
    if spec is not None and spec.domain:
        src["domain"] = src["host"]
        return spec.domain
    if url is not None and url.domain:
        src["domain"] = "url"
        return url.domain
    return ""


def explicit_port(spec: HostSpec | None, port: int | None, src: dict[str, str]) -> int | None:
    """A port from FLUXMAIL_PORT or from ``host:port``; the higher layer wins."""
    if spec is None or spec.port is None:
        return port
    if port is None:
        src["port"] = src["host"]
        return spec.port
    rank_port, rank_host = PRECEDENCE.index(src["port"]), PRECEDENCE.index(src["host"])
    if rank_port == rank_host and port != spec.port:
        raise ConfigurationError(
            f"the port is given twice with different values: FLUXMAIL_PORT={port} and "
            f"FLUXMAIL_HOST=...:{spec.port}; keep one",
            code="invalid_port",
        )
    if rank_host < rank_port:
        src["port"] = src["host"]
        return spec.port
    return port


def resolve_security(
    s: Any,
    url: UrlParts | None,
    provider: Provider | None,
    port: int | None,
    host: str | None,
    src: dict[str, str],
) -> Security:
    if s.tls and s.ssl:
        raise ConfigurationError(
            "STARTTLS (use_tls= / FLUXMAIL_TLS) and implicit TLS (use_ssl= / FLUXMAIL_SSL) are "
            "mutually exclusive; set only one of them to true",
            code="invalid_config",
        )
    if s.ssl:
        return _mark(src, "security", src["ssl"], "implicit")
    if s.tls:
        return _mark(src, "security", src["tls"], "starttls")
    if s.tls is False:  # explicitly no STARTTLS and no implicit TLS: plain SMTP
        return _mark(src, "security", src["tls"], "none")
    mode: Security
    if url is not None and url.security is not None:
        mode, origin = url.security, "url"
    elif provider is not None:
        mode, origin = provider.security, "provider preset"
        if port is not None and not provider.offers(mode, port):
            mode = next((m for m in SECURITY_MODES if provider.offers(m, port)), mode)
    elif port == 465:
        mode, origin = "implicit", "default"
    else:  # loopback traffic never leaves the machine: a local catcher needs no TLS
        mode, origin = ("none" if is_loopback(host) else "starttls"), "default"
    if mode == "implicit" and s.ssl is False:
        mode, origin = "starttls", src["ssl"]
    return _mark(src, "security", origin, mode)


def _mark(src: dict[str, str], key: str, origin: str, value: Security) -> Security:
    src[key] = origin
    return value


def _preset_applies(provider: Provider | None, host: str | None, region: str | None) -> bool:
    return provider is not None and host == provider.host_for(region)


def resolve_port(
    port: int | None,
    security: Security,
    provider: Provider | None,
    host: str | None,
    region: str | None,
    src: dict[str, str],
) -> int:
    if provider is not None and _preset_applies(provider, host, region):
        if port is None:
            port = provider.default_port(security)
            src["port"] = "provider preset"
        if port is None or not provider.offers(security, port):
            raise ConfigurationError(
                _not_offered(provider, security, port), code="port_not_offered"
            )
        return port
    if port is None:
        src["port"] = "default"
        return DEFAULT_PORTS[security]
    return port


def _not_offered(provider: Provider, security: str, port: int | None) -> str:
    offered = "; ".join(f"{m}: {', '.join(map(str, p))}" for m, p in provider.ports.items())
    mode = {"starttls": "STARTTLS", "implicit": "implicit TLS"}.get(security, security)
    what = f"port {port} with {mode}" if port is not None else mode
    if security == "none":
        what = "unencrypted SMTP" + (f" on port {port}" if port else "")
    return (
        f"{provider.title} does not offer {what}; it offers {offered}. Fix FLUXMAIL_PORT, "
        "FLUXMAIL_TLS (STARTTLS) or FLUXMAIL_SSL (implicit TLS), or unset them to use the preset"
    )
