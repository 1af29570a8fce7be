"""How a configuration is resolved: ``resolve_config(**kwargs) -> Config``.

Precedence, highest first: keyword argument > environment > ``.env`` > ``*_FILE`` secret file >
``FLUXMAIL_URL`` > provider preset > default. The first five are the pydantic-settings sources
of :mod:`fluxmail.config.sources`; the provider preset is applied here, after them, because it
depends on the resolved provider name (and region). Then every rule of "bad input" is checked
before any network traffic. pydantic-settings (which imports asyncio) and the provider catalog
(PyYAML) are imported only when a configuration is resolved.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fluxmail._lazy import lazy_module, lazy_pattern
from fluxmail.config.auth import check_auth, check_token_provider, has_oauth, resolve_auth
from fluxmail.config.dkim import DKIM_FIELDS, dkim_signer
from fluxmail.config.fields import field_names
from fluxmail.config.members import composite_of, resolve_members
from fluxmail.config.model import NOT_SETTINGS, Config
from fluxmail.config.oauth import OAUTH_FIELDS, check_oauth
from fluxmail.config.secrets import check_smtp, preset_username
from fluxmail.config.settings import SettingsFields, load_settings, where
from fluxmail.config.sources import is_file
from fluxmail.config.urls import (
    PRECEDENCE,
    EmailInstance,
    explicit_port,
    parse_host,
    resolve_domain,
    resolve_host,
    resolve_port,
    resolve_security,
)
from fluxmail.errors import ConfigurationError, MessageError
from fluxmail.message.addresses import parse_address

if TYPE_CHECKING:
    import ssl

    from fluxmail.config import api as api_config
    from fluxmail.config import providers as catalog
    from fluxmail.config.api import ApiChoice
    from fluxmail.config.providers import Provider
else:  # FLUXMAIL_TRANSPORT=api, FLUXMAIL_PROVIDER or a providers file: not every cold start
    api_config = lazy_module("fluxmail.config.api")
    catalog = lazy_module("fluxmail.config.providers")

__all__ = [
    "PRECEDENCE",
    "Config",
    "EmailInstance",
    "argument_names",
    "idempotency_needs_audit",
    "resolve_config",
    "resolve_sender",
]


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


def audit_off_reason(config: Config) -> str:
    """Why this configuration keeps no audit, for the errors of what needs one."""
    source = config.sources.get("audit", "default")
    if config.backend == "memory" and source == "default":
        return "the memory backend keeps no audit unless asked"
    return f"the audit is turned off ({where('audit', source)})"


def idempotency_needs_audit(config: Config) -> ConfigurationError:
    """Why this configuration cannot keep an ``idempotency_key``: no audit remembers keys."""
    why = audit_off_reason(config)
    return ConfigurationError(
        f"idempotency_key needs the audit store, which remembers the keys already sent, and {why}; "
        "without it a retried send would deliver twice. Turn the audit on (FLUXMAIL_AUDIT=true "
        "or audit=True; FLUXMAIL_AUDIT_URL=postgresql://... shares the keys of a fleet in "
        "PostgreSQL), or drop idempotency_key",
        code="idempotency_needs_audit",
    )


_ORIGIN = lazy_pattern(r"[a-z][a-z0-9_-]{0,31}")


def check_origin(value: object) -> str | None:
    """FluxMail(origin=...): a short lowercase label stored on every record (e.g. "mcp")."""
    if value is None:
        return None
    if not isinstance(value, str) or _ORIGIN().fullmatch(value) is None:
        raise ConfigurationError(
            "argument origin= must be a short lowercase identifier (a letter, then up to 31 "
            "letters, digits, '_' or '-'), e.g. 'mcp'",
            code="invalid_config",
        )
    return value


def resolve_config(**kwargs: object) -> Config:
    """Build a validated ``Config`` from kwargs, env, .env, secret files, URL and preset.

    Accepts the upstream constructor arguments (``object_type``, ``use_tls``, ``use_ssl``,
    ``ssl_context``, ...) and every setting by its field name, plus ``env_file``.
    """
    rest = dict(kwargs)
    token_provider = check_token_provider(rest.pop("token_provider", None))
    origin = check_origin(rest.pop("origin", None))
    composite = rest.pop("composite", None)
    args, host_arg, override, env_file = _split_kwargs(rest)
    s = load_settings(args, env_file)
    found = composite_of(composite, s)
    if found is not None:  # failover(...) / roundrobin(...): a Config per member
        return resolve_members(found, s, kwargs, resolve_config)
    src = dict(s.origins)
    warnings = _unknown_variables(s)
    api = _api(s, src)
    provider = api.provider if api is not None else _provider(s.provider, s.providers_file, src)
    relay = None if api is not None else provider  # an API transport uses no SMTP preset
    host_raw: Any = s.host
    if host_arg is not None:  # an EmailInstance argument: not a settings string
        host_raw, src["host"] = host_arg, "argument"
    spec = None
    if host_raw is not None:
        label = str(env_file) if env_file is not None else None
        spec = parse_host(host_raw, where("host", src["host"], label))
    url = s.url_parts
    host = resolve_host(spec, relay, s.region, src)
    domain = resolve_domain(spec, url, src)
    given_port = explicit_port(spec, s.port, src)
    security = resolve_security(s, url, relay, given_port, host, src)
    port = resolve_port(given_port, security, relay, host, s.region, src)
    username = preset_username(s.username, s.password, relay, src)
    notes: list[str] = []
    auth = resolve_auth(s, relay, token_provider, src, notes)
    if token_provider is not None:
        src["token_provider"] = "argument"
    if origin is not None:
        src["origin"] = "argument"
    config = Config(
        backend="api" if api is not None else s.type,
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
        auth=auth,
        token_provider=token_provider,
        origin=origin,
        api_provider=api.name if api is not None else None,
        api_key=api_config.api_key(s, api, src) if api is not None else s.api_key,
        api_base_url=api.base_url if api is not None else None,
        api_options=api.options if api is not None else {},
        sources=_sources(src, provider, override),
        warnings=(*warnings, *notes),
        **{name: getattr(s, name) for name in _COPIED},
    )
    _check(config)
    if config.backend != "api":  # an API transport logs in with its key or its own OAuth
        check_auth(config, has_oauth(s, token_provider))
    return config


def _api(s: SettingsFields, src: dict[str, str]) -> ApiChoice | None:
    """FLUXMAIL_TRANSPORT=api (or a ``<provider>+api://`` URL): which API, checked now."""
    if s.transport != "api":
        return None
    if s.type != "smtp":
        raise ConfigurationError(
            f"{where('transport', src.get('transport', 'default'))}=api cannot be combined with "
            f"{where('type', src.get('type', 'default'))}={s.type}; keep one of them",
            code="invalid_config",
        )
    return api_config.resolve_api(s, src)


def _unknown_variables(s: SettingsFields) -> tuple[str, ...]:
    """Misspelled FLUXMAIL_* names: an error with FLUXMAIL_STRICT=true, else warnings."""
    found = s.unknown
    if found and s.strict:
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
    "failover_cooldown",
    "retry_max_delay",
    "outbox_lease",
    "outbox_poll_interval",
    "mcp_allow_send",
    "mcp_attachment_dir",
    "mcp_max_sends",
    "mcp_max_recipients",
    "mcp_allowed_domains",
    "templates_dir",
    *OAUTH_FIELDS,
    *DKIM_FIELDS,
)
_UPSTREAM_ARGS = {"object_type": "type", "use_tls": "tls", "use_ssl": "ssl"}


def argument_names() -> frozenset[str]:
    """The keyword arguments ``resolve_config`` accepts (the settings by name, the upstream
    ones, ``ssl_context``, ``env_file``, ``token_provider``, ``origin``), for callers that
    check names before resolving (the Django backend's ``MAILERS`` OPTIONS)."""
    known = set(field_names()) - {"type", "tls", "ssl"}
    extra = ("ssl_context", "env_file", "token_provider", "origin")
    return frozenset({*known, *_UPSTREAM_ARGS, *extra})


def _split_kwargs(kwargs: Mapping[str, object]) -> tuple[dict[str, object], Any, Any, Any]:
    """Settings arguments, a non-string host, the ssl_context override and env_file."""
    known = set(field_names()) - {"type", "tls", "ssl"}
    args: dict[str, object] = {}
    host: Any = None
    override: Any = None
    env_file: Any = None
    for name, value in kwargs.items():
        if value is None:
            continue  # None means "not given", as in the upstream signature
        if name == "ssl_context":
            override = _check_context(value)
        elif name == "env_file":
            env_file = _check_env_file(value)
        elif name == "host" and not isinstance(value, str):
            host = value  # EmailInstance(relay, domain): parse_host checks its shape
        elif name in _UPSTREAM_ARGS or name in known:
            args[_UPSTREAM_ARGS.get(name, name)] = getattr(value, "value", value)
        else:
            allowed = ", ".join(sorted(argument_names()))
            raise ConfigurationError(
                f"unknown argument {name!r}; allowed: {allowed}", code="invalid_config"
            )
    return args, host, override, env_file


def _check_context(value: object) -> ssl.SSLContext:
    import ssl

    if not isinstance(value, ssl.SSLContext):
        raise ConfigurationError(
            "argument ssl_context= must be an ssl.SSLContext", code="invalid_config"
        )
    return value


def _check_env_file(value: object) -> object:
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigurationError(
            f"argument env_file= must be a path (str or os.PathLike), not {type(value).__name__}",
            code="invalid_config",
        )
    return value


def _provider(name: str | None, extra: Path | None, src: Mapping[str, str]) -> Provider | None:
    if extra is not None and not is_file(extra):
        raise ConfigurationError(
            f"FLUXMAIL_PROVIDERS_FILE={str(extra)!r} is not a file; give the path of a YAML file",
            code="invalid_providers_file",
        )
    if extra is not None:
        catalog.load_catalog(extra)  # validated whenever set, not only once a provider is chosen
    if not name:
        return None
    try:
        return catalog.get_provider(name, extra)
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
    if c.ca_file is not None and not is_file(c.ca_file):
        raise ConfigurationError(
            f"FLUXMAIL_CA_FILE={str(c.ca_file)!r} is not a file; give a PEM bundle path",
            code="invalid_config",
        )
    if c.templates_dir is not None and not _is_dir(c.templates_dir):
        raise ConfigurationError(
            f"FLUXMAIL_TEMPLATES_DIR={str(c.templates_dir)!r} is not a folder; give the folder "
            "of the message templates",
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
    if c.sender is not None:
        _check_sender(c.sender)
    check_oauth(c)
    if c.backend == "smtp":
        check_smtp(c)
    dkim_signer(c)  # the keys loaded now: a bad one is refused before any traffic


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long or unreadable
        return False


def _check_sender(sender: str) -> None:
    """FLUXMAIL_SENDER by the strict parser every message's From goes through."""
    try:
        parse_address(sender, field="FLUXMAIL_SENDER")
        why = None
    except MessageError as exc:
        why = exc.message
    if why is not None:  # raised outside the except block: one error, not a chain
        raise ConfigurationError(
            f"FLUXMAIL_SENDER={sender!r} is not one email address ({why}); use "
            "'addr@example.com' or 'Name <addr@example.com>'",
            code="invalid_config",
        )


_FIELD_SOURCES = {
    "backend": "type",
    "ssl_context_override": "ssl_context",
    "api_provider": "provider",
}


def _sources(src: Mapping[str, str], provider: Provider | None, override: object) -> dict[str, str]:
    result: dict[str, str] = {}
    for f in dataclasses.fields(Config):
        key = _FIELD_SOURCES.get(f.name, f.name)
        result[f.name] = src.get(key, "default")
    if "transport" in src:  # FLUXMAIL_TRANSPORT=api or a <provider>+api:// URL chose it
        result["backend"] = src["transport"]
    if "api_base_url" in src:
        result["api_base_url"] = src["api_base_url"]
    for derived in ("connect_timeout", "command_timeout"):
        if derived not in src:
            result[derived] = src.get("timeout", "default")
    if "rate_limit" not in src and provider is not None and provider.rate_limit_per_second:
        result["rate_limit"] = "provider preset"
    result["ssl_context_override"] = "argument" if override is not None else "default"
    for name in NOT_SETTINGS:
        result.pop(name, None)
    return result
