"""The resolved, validated configuration a mailer runs on (``Config``) and how it is resolved.

``resolve_config(**kwargs)`` layers, highest first: keyword argument > environment > ``.env`` >
``*_FILE`` secret file > ``FLUXMAIL_URL`` > provider preset > default, then checks every rule of
"bad input" before any network traffic. Settings (pydantic-settings, which imports asyncio) and
the provider catalog (PyYAML) are imported only when a configuration is resolved.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from fluxmail.config.secrets import REDACTED, build_ssl_context, check_smtp, preset_username
from fluxmail.config.urls import (
    PRECEDENCE,
    EmailInstance,
    Security,
    UrlParts,
    explicit_port,
    parse_host,
    parse_url,
    resolve_domain,
    resolve_host,
    resolve_port,
    resolve_security,
)
from fluxmail.errors import ConfigurationError

if TYPE_CHECKING:
    import ssl

    from fluxmail.config.providers import Provider

__all__ = [
    "PRECEDENCE",
    "Config",
    "EmailInstance",
    "idempotency_needs_audit",
    "resolve_config",
    "resolve_sender",
]

_ADDRESS = re.compile(r"^[^@\s<>\"(),;:]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\.[A-Za-z]{2,}$")


def is_address(value: str | None) -> bool:
    """A bare addr-spec that can serve as a From address (not ``apikey``, not a token)."""
    return bool(value) and _ADDRESS.match(value or "") is not None


@dataclass(frozen=True, repr=False)
class Config:
    """Everything a mailer needs, validated; secrets are ``SecretStr`` and never shown."""

    backend: str
    host: str | None
    port: int | None
    domain: str
    security: Security
    username: str | None
    password: SecretStr | None
    ssl_context_override: ssl.SSLContext | None
    tls_verify: bool
    ca_file: Path | None
    local_hostname: str | None
    connect_timeout: float
    command_timeout: float
    data_timeout: float
    timeout: float
    max_retries: int
    retry_delay: float
    retry_deadline: float | None
    sender: str | None
    provider: Provider | None
    region: str | None
    allow_insecure_auth: bool
    dry_run: bool
    audit: bool
    audit_dir: Path | None
    audit_url: SecretStr | None
    audit_password: SecretStr | None
    file_dir: Path
    rate_limit: float | None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    _ssl_cache: dict[str, ssl.SSLContext] = field(default_factory=dict, compare=False)
    # Unknown FLUXMAIL_* names found while resolving (misspellings); the mailer logs them.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (None without TLS): override > ca_file > certifi; built once."""
        if self.security == "none":
            return None
        if self.ssl_context_override is not None:
            return self.ssl_context_override
        return self._built_context()

    def _built_context(self) -> ssl.SSLContext:
        """The context of the TLS policy (ca_file or certifi), built once."""
        cached = self._ssl_cache.get("ctx")
        if cached is None:
            context = build_ssl_context(self.ca_file, tls_verify=self.tls_verify)
            cached = self._ssl_cache.setdefault("ctx", context)
        return cached

    def describe(self) -> dict[str, dict[str, object]]:
        """Every field with its value (secrets redacted) and where it came from."""
        result: dict[str, dict[str, object]] = {}
        for f in dataclasses.fields(self):
            if f.name in _NOT_SETTINGS:
                continue
            value = self._shown(f.name, getattr(self, f.name))
            result[f.name] = {"value": value, "source": self.sources.get(f.name, "default")}
        return result

    def _shown(self, name: str, value: object) -> object:
        if isinstance(value, SecretStr):
            return REDACTED
        if name == "username" and value is not None and self.password is not None:
            # Postmark-style logins reuse the token as the username: never print it.
            return REDACTED if value == self.password.get_secret_value() else value
        if name == "ssl_context_override":
            return None if value is None else "<ssl.SSLContext given as argument>"
        if name == "provider":
            return None if value is None else getattr(value, "name", str(value))
        if isinstance(value, Path):
            return str(value)
        return value

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v['value']!r}" for k, v in self.describe().items())
        return f"Config({shown})"

    __str__ = __repr__

    def default_sender(self) -> str | None:
        """FLUXMAIL_SENDER, else the username when it is an address and the provider says the
        login is an address. A literal (``apikey``) or token username never becomes a sender."""
        if self.sender:
            return self.sender
        if self.provider is not None and (
            self.provider.username_kind != "address" or self.provider.sender_required
        ):
            return None
        return self.username if is_address(self.username) else None


def resolve_sender(config: Config, explicit: str | None) -> str:
    """The message's sender: explicit > FLUXMAIL_SENDER > the address-like login > error."""
    if explicit:
        return explicit
    chosen = config.default_sender()
    if chosen:
        return chosen
    why = "no FLUXMAIL_SENDER is set"
    if config.provider is not None and config.provider.username_kind != "address":
        why += f" and the {config.provider.title} login is not an address"
    elif config.username:
        why += " and the username is not an email address"
    raise ConfigurationError(
        f"no sender: {why}; set FLUXMAIL_SENDER (e.g. 'Shop <shop@example.com>') or pass "
        "sender= to create()",
        code="sender_required",
    )


def idempotency_needs_audit(config: Config) -> ConfigurationError:
    """Why this configuration cannot keep an ``idempotency_key``: no audit remembers keys."""
    from fluxmail.config.settings import where

    source = config.sources.get("audit", "default")
    if config.backend == "memory" and source == "default":
        why = "the memory backend keeps no audit unless asked"
    else:
        why = f"the audit is turned off ({where('audit', source)})"
    return ConfigurationError(
        f"idempotency_key needs the audit store, which remembers the keys already sent, and {why}; "
        "without it a retried send would deliver twice. Turn the audit on (FLUXMAIL_AUDIT=true "
        "or audit=True; FLUXMAIL_AUDIT_URL=postgresql://... shares the keys of a fleet in "
        "PostgreSQL), or drop idempotency_key",
        code="idempotency_needs_audit",
    )


def resolve_config(**kwargs: object) -> Config:
    """Build a validated ``Config`` from kwargs, env, .env, secret files, URL and preset.

    Accepts the upstream constructor arguments (``object_type``, ``use_tls``, ``use_ssl``,
    ``ssl_context``, ...) and every setting by its field name, plus ``env_file``.
    """
    from fluxmail.config.settings import build_settings, collect_layers, merge_layers, where

    args, override, env_file = _split_kwargs(kwargs)
    merged, src = merge_layers([("argument", args), *collect_layers(env_file)])
    url = _apply_url(merged, src)
    host_raw = merged.pop("host", None)
    label = str(env_file) if env_file is not None else None
    s = build_settings(merged, src, label)
    warnings = _unknown_variables(env_file, strict=s.strict)
    provider = _provider(s.provider, s.providers_file, src)
    spec = None
    if host_raw is not None:
        name = where("host", src["host"], label)
        spec = parse_host(host_raw, name)  # type: ignore[arg-type]
    host = resolve_host(spec, provider, s.region, src)
    domain = resolve_domain(spec, url, src)
    given_port = explicit_port(spec, s.port, src)
    security = resolve_security(s, url, provider, given_port, host, src)
    port = resolve_port(given_port, security, provider, host, s.region, src)
    username = preset_username(s.username, s.password, provider, src)
    config = Config(
        backend=s.type,
        host=host,
        port=port if host is not None else None,
        domain=domain,
        security=security,
        username=username,
        password=s.password,
        ssl_context_override=override,
        connect_timeout=s.connect_timeout or s.timeout,
        command_timeout=s.command_timeout or s.timeout,
        provider=provider,
        rate_limit=s.rate_limit or (provider.rate_limit_per_second if provider else None),
        sources=_sources(src, provider, override),
        warnings=warnings,
        **{name: getattr(s, name) for name in _COPIED},
    )
    _check(config)
    return config


def _unknown_variables(env_file: Any, *, strict: bool) -> tuple[str, ...]:
    """Misspelled FLUXMAIL_* names: an error with FLUXMAIL_STRICT=true, else warnings."""
    from fluxmail.config.settings import unknown_variables

    found = unknown_variables(env_file)
    if found and strict:
        raise ConfigurationError(
            "FLUXMAIL_STRICT=true refuses variables fluxmail does not read: " + "; ".join(found),
            code="unknown_setting",
        )
    return tuple(f"{line} (ignored; FLUXMAIL_STRICT=true makes this an error)" for line in found)


# Config fields taken unchanged from the settings of the same name.
_COPIED = (
    "tls_verify",
    "ca_file",
    "local_hostname",
    "data_timeout",
    "timeout",
    "max_retries",
    "retry_delay",
    "retry_deadline",
    "sender",
    "region",
    "allow_insecure_auth",
    "dry_run",
    "audit",
    "audit_dir",
    "audit_url",
    "audit_password",
    "file_dir",
)
_UPSTREAM_ARGS = {"object_type": "type", "use_tls": "tls", "use_ssl": "ssl"}


def _split_kwargs(kwargs: Mapping[str, object]) -> tuple[dict[str, object], Any, Any]:
    from fluxmail.config.settings import FluxMailSettings

    known = set(FluxMailSettings.model_fields) - {"type", "tls", "ssl"}
    args: dict[str, object] = {}
    override: Any = None
    env_file: Any = None
    for name, value in kwargs.items():
        if value is None:
            continue  # None means "not given", as in the upstream signature
        if name == "ssl_context":
            override = _check_context(value)
        elif name == "env_file":
            env_file = _check_env_file(value)
        elif name in _UPSTREAM_ARGS or name in known:
            args[_UPSTREAM_ARGS.get(name, name)] = getattr(value, "value", value)
        else:
            allowed = ", ".join(sorted([*known, *_UPSTREAM_ARGS, "ssl_context", "env_file"]))
            raise ConfigurationError(
                f"unknown argument {name!r}; allowed: {allowed}", code="invalid_config"
            )
    return args, override, env_file


def _check_context(value: object) -> object:
    import ssl

    if not isinstance(value, ssl.SSLContext):
        raise ConfigurationError(
            "argument ssl_context= must be an ssl.SSLContext", code="invalid_config"
        )
    return value


def _check_env_file(value: object) -> object:
    import os

    if not isinstance(value, (str, os.PathLike)):
        raise ConfigurationError(
            f"argument env_file= must be a path (str or os.PathLike), not {type(value).__name__}",
            code="invalid_config",
        )
    return value


def _apply_url(merged: dict[str, object], src: dict[str, str]) -> UrlParts | None:
    raw = merged.get("url")
    if raw is None:
        return None
    text = raw.get_secret_value() if isinstance(raw, SecretStr) else str(raw)
    if not text.strip():
        return None
    parts = parse_url(text)
    for key, value in parts.values.items():
        if key not in merged:  # explicit variables override URL parts
            merged[key] = value
            src[key] = "url"
    return parts


def _provider(name: str | None, extra: Path | None, src: Mapping[str, str]) -> Provider | None:
    from fluxmail.config.settings import is_file

    if extra is not None and not is_file(extra):
        raise ConfigurationError(
            f"FLUXMAIL_PROVIDERS_FILE={str(extra)!r} is not a file; give the path of a YAML file",
            code="invalid_providers_file",
        )
    from fluxmail.config.providers import get_provider, load_catalog

    if extra is not None:
        load_catalog(extra)  # validated whenever set, not only once a provider is chosen
    if not name:
        return None
    try:
        return get_provider(name, extra)
    except ConfigurationError as exc:
        if exc.code == "unknown_provider" and src.get("provider") == "url":
            raise ConfigurationError(
                f"FLUXMAIL_URL / from_url(): the scheme is neither smtp, smtps, smtp+plain nor a "
                f"provider name ({exc.message})",
                code="invalid_url",
            ) from None
        raise


def _check(c: Config) -> None:
    """Cross-field rules; all before any network traffic."""
    from fluxmail.config.settings import is_file

    if c.ca_file is not None and not is_file(c.ca_file):
        raise ConfigurationError(
            f"FLUXMAIL_CA_FILE={str(c.ca_file)!r} is not a file; give a PEM bundle path",
            code="invalid_config",
        )
    if c.ca_file is not None:
        # Loaded now, with the transport's own policy, so a file holding no certificate is
        # refused here and not at the first send; the connections reuse this context.
        c._built_context()
    for name, value in (
        ("FLUXMAIL_SENDER", c.sender),
        ("FLUXMAIL_LOCAL_HOSTNAME", c.local_hostname),
    ):
        if value is not None and any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise ConfigurationError(
                f"{name} contains a control character (CR, LF, ...); remove it",
                code="invalid_config",
            )
    if c.local_hostname is not None and (" " in c.local_hostname or len(c.local_hostname) > 255):
        raise ConfigurationError(
            "FLUXMAIL_LOCAL_HOSTNAME must be a host name (no spaces)", code="invalid_host"
        )
    if c.sender is not None and not _has_address(c.sender):
        raise ConfigurationError(
            f"FLUXMAIL_SENDER={c.sender!r} has no email address; use 'addr@example.com' or "
            "'Name <addr@example.com>'",
            code="invalid_config",
        )
    if c.backend == "smtp":
        check_smtp(c)


def _has_address(value: str) -> bool:
    from email.utils import parseaddr

    return "@" in parseaddr(value)[1]


_FIELD_SOURCES = {"backend": "type", "ssl_context_override": "ssl_context"}
_NOT_SETTINGS = ("sources", "_ssl_cache", "warnings")


def _sources(src: Mapping[str, str], provider: Provider | None, override: object) -> dict[str, str]:
    result: dict[str, str] = {}
    for f in dataclasses.fields(Config):
        key = _FIELD_SOURCES.get(f.name, f.name)
        result[f.name] = src.get(key, "default")
    for derived in ("connect_timeout", "command_timeout"):
        if derived not in src:
            result[derived] = src.get("timeout", "default")
    if "rate_limit" not in src and provider is not None and provider.rate_limit_per_second:
        result["rate_limit"] = "provider preset"
    result["ssl_context_override"] = "argument" if override is not None else "default"
    for name in _NOT_SETTINGS:
        result.pop(name, None)
    return result
