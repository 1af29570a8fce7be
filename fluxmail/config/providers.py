"""The provider catalog: ``providers.yaml`` loaded, validated against a schema and cached.

The catalog is read only when a provider is named (PyYAML is imported inside the loader), so
``import fluxmail`` never pays for it. ``FLUXMAIL_PROVIDERS_FILE`` adds entries or overrides fields
of existing ones; the merged entry is validated like a built-in one.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fluxmail.config.ports import PORT_MAX, PORT_MIN, is_port
from fluxmail.config.tls import SECURITY_MODES, Security
from fluxmail.errors import ConfigurationError

__all__ = [
    "SECURITY_MODES",
    "USERNAME_KINDS",
    "Provider",
    "ProviderApi",
    "catalog_path",
    "get_provider",
    "load_catalog",
    "normalize_name",
]

USERNAME_KINDS = ("address", "literal", "token", "any")
_REGION_RE = re.compile(r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$")
_KEYS: dict[str, type | tuple[type, ...]] = {
    "title": str,
    "aliases": list,
    "host": str,
    "port": int,
    "security": str,
    "ports": dict,
    "username_kind": str,
    "username_literal": str,
    "username_hint": str,
    "password_hint": str,
    "sender_required": bool,
    "username_is_password": bool,
    "sender_rule": str,
    "rate_limit_per_second": (int, float),
    "daily_limit": int,
    "regions": list,
    "default_region": str,
    "docs_url": str,
    "notes": str,
    "auth": str,
    "auth_note": str,
    "api": dict,
}
AUTH_KINDS = ("password", "xoauth2", "oauthbearer")
_REQUIRED = ("host", "port", "security", "ports", "username_kind", "docs_url")


@dataclass(frozen=True)
class ProviderApi:
    """A provider's HTTP API, next to its SMTP settings: ``FLUXMAIL_TRANSPORT=api`` uses it."""

    transport: str  # the module fluxmail/transport/api/<transport>.py
    base_url: str
    docs_url: str
    options: Mapping[str, str] = field(default_factory=dict, hash=False)  # e.g. region: eu
    # The SMTP password is the API key (SendGrid, Postmark, Resend): FLUXMAIL_PASSWORD serves.
    password_is_key: bool = False


_API_KEYS = {
    "transport": str,
    "base_url": str,
    "docs_url": str,
    "options": dict,
    "password_is_key": bool,
}


@dataclass(frozen=True)
class Provider:
    """One catalog entry: where to connect, how to log in, and what the provider allows."""

    name: str
    title: str
    aliases: tuple[str, ...]
    host: str
    port: int
    security: Security
    ports: Mapping[str, tuple[int, ...]] = field(hash=False)
    username_kind: str
    username_literal: str | None
    sender_required: bool
    rate_limit_per_second: float | None
    daily_limit: int | None
    regions: tuple[str, ...]
    default_region: str | None
    docs_url: str
    notes: str
    username_hint: str = ""
    password_hint: str = ""
    sender_rule: str = ""
    username_is_password: bool = False
    auth: str = "password"  # the login mechanism FLUXMAIL_AUTH=auto uses for this provider
    auth_note: str = ""
    api: ProviderApi | None = None

    @property
    def needs_region(self) -> bool:
        return "{region}" in self.host

    def host_for(self, region: str | None) -> str:
        """The relay host for ``region`` (or the default region); errors name FLUXMAIL_REGION."""
        if not self.needs_region:
            return self.host
        chosen = region or self.default_region
        if not chosen:
            examples = ", ".join(self.regions[:3]) or "us-east-1"
            raise ConfigurationError(
                f"provider {self.name!r} needs a region: set FLUXMAIL_REGION (or region=), "
                f"for example {examples}",
                code="region_required",
            )
        chosen = chosen.strip().lower()
        if not _REGION_RE.match(chosen) or (self.regions and chosen not in self.regions):
            allowed = ", ".join(self.regions) if self.regions else "lower-case letters, digits, -"
            raise ConfigurationError(
                f"FLUXMAIL_REGION={chosen!r} is not a region of {self.name!r}; allowed: {allowed}",
                code="invalid_region",
            )
        return self.host.replace("{region}", chosen)

    def offers(self, security: str, port: int) -> bool:
        return port in self.ports.get(security, ())

    def default_port(self, security: str) -> int | None:
        if security == self.security:
            return self.port
        offered = self.ports.get(security, ())
        return offered[0] if offered else None


def normalize_name(name: str) -> str:
    """Provider names compare case-insensitively, with ``_`` and spaces read as ``-``."""
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def catalog_path() -> Path:
    """The shipped catalog: inside the package (wheel), else the repository root (checkout)."""
    package = Path(__file__).resolve().parent.parent
    packaged = package / "providers.yaml"
    return packaged if packaged.is_file() else package.parent / "providers.yaml"


def _fail(entry: str, fld: str, problem: str, origin: str) -> ConfigurationError:
    return ConfigurationError(
        f"{origin}: provider {entry!r}, field {fld!r}: {problem}", code="invalid_providers_file"
    )


def _check_types(name: str, raw: Mapping[str, Any], origin: str) -> None:
    for key, value in raw.items():
        expected = _KEYS.get(key)
        if expected is None:
            allowed = ", ".join(sorted(_KEYS))
            raise _fail(name, key, f"unknown field; allowed fields: {allowed}", origin)
        bad_bool = isinstance(value, bool) and expected is not bool
        if value is not None and (bad_bool or not isinstance(value, expected)):
            kind = expected.__name__ if isinstance(expected, type) else "number"
            raise _fail(name, key, f"must be a {kind}", origin)
    for key in _REQUIRED:
        if raw.get(key) is None:
            raise _fail(name, key, "is required", origin)


def _ports(name: str, raw: Mapping[str, Any], origin: str) -> dict[str, tuple[int, ...]]:
    result: dict[str, tuple[int, ...]] = {}
    for mode, values in raw.items():
        if mode not in SECURITY_MODES:
            allowed = ", ".join(SECURITY_MODES)
            raise _fail(name, "ports", f"mode {mode!r} is not one of {allowed}", origin)
        if not isinstance(values, list) or not values:
            raise _fail(name, "ports", f"{mode} must be a non-empty list of ports", origin)
        for port in values:
            if not is_port(port):
                raise _fail(
                    name, "ports", f"{mode} port {port!r} not in {PORT_MIN}-{PORT_MAX}", origin
                )
        result[mode] = tuple(values)
    return result


def _check_values(name: str, raw: Mapping[str, Any], origin: str) -> dict[str, tuple[int, ...]]:
    """Field values beyond their types; returns the validated ports per mode."""
    _check_types(name, raw, origin)
    security = raw["security"]
    if security not in SECURITY_MODES:
        raise _fail(name, "security", f"must be one of {', '.join(SECURITY_MODES)}", origin)
    ports = _ports(name, raw["ports"], origin)
    if raw["port"] not in ports.get(security, ()):
        raise _fail(name, "port", f"{raw['port']} is not listed in ports.{security}", origin)
    kind = raw["username_kind"]
    if kind not in USERNAME_KINDS:
        raise _fail(name, "username_kind", f"must be one of {', '.join(USERNAME_KINDS)}", origin)
    if (kind == "literal") != bool(raw.get("username_literal")):
        problem = "required exactly when username_kind is literal"
        raise _fail(name, "username_literal", problem, origin)
    rate = raw.get("rate_limit_per_second")
    if rate is not None and not rate > 0:
        raise _fail(name, "rate_limit_per_second", "must be > 0", origin)
    if raw.get("daily_limit") is not None and raw["daily_limit"] <= 0:
        raise _fail(name, "daily_limit", "must be > 0", origin)
    if raw.get("auth", "password") not in AUTH_KINDS:
        raise _fail(name, "auth", f"must be one of {', '.join(AUTH_KINDS)}", origin)
    if not str(raw["docs_url"]).startswith("https://"):
        raise _fail(name, "docs_url", "must be an https:// link", origin)
    if "{region}" not in raw["host"] and (raw.get("regions") or raw.get("default_region")):
        raise _fail(name, "regions", "given but host has no {region} placeholder", origin)
    return ports


def _api(name: str, raw: Any, origin: str) -> ProviderApi | None:
    """The ``api:`` mapping: base_url and docs_url (https), transport (default: the name)."""
    if raw is None:
        return None
    for key, value in raw.items():
        if key not in _API_KEYS or not isinstance(value, _API_KEYS[key]):
            allowed = ", ".join(f"{k} ({t.__name__})" for k, t in _API_KEYS.items())
            raise _fail(name, f"api.{key}", f"unknown or mistyped; allowed: {allowed}", origin)
    for key in ("base_url", "docs_url"):
        if not str(raw.get(key, "")).startswith("https://"):
            raise _fail(name, f"api.{key}", "is required and must be an https:// link", origin)
    transport = str(raw.get("transport") or name)
    if not transport.isidentifier():
        raise _fail(name, "api.transport", "must be a module name such as sendgrid", origin)
    options = {str(k): str(v) for k, v in (raw.get("options") or {}).items()}
    base = str(raw["base_url"]).rstrip("/")
    password_is_key = bool(raw.get("password_is_key", False))
    return ProviderApi(
        transport, base, str(raw["docs_url"]), MappingProxyType(options), password_is_key
    )


def _build(name: str, raw: Mapping[str, Any], origin: str) -> Provider:
    ports = _check_values(name, raw, origin)
    kind, rate = raw["username_kind"], raw.get("rate_limit_per_second")
    return Provider(
        name=name,
        title=raw.get("title") or name,
        aliases=tuple(normalize_name(str(a)) for a in raw.get("aliases") or ()),
        host=raw["host"],
        port=raw["port"],
        security=raw["security"],
        ports=MappingProxyType(ports),
        username_kind=kind,
        username_literal=raw.get("username_literal"),
        sender_required=raw.get("sender_required", kind != "address"),
        rate_limit_per_second=float(rate) if rate is not None else None,
        daily_limit=raw.get("daily_limit"),
        regions=tuple(str(r) for r in raw.get("regions") or ()),
        default_region=raw.get("default_region"),
        docs_url=raw["docs_url"],
        notes=(raw.get("notes") or "").strip(),
        username_hint=raw.get("username_hint") or "",
        password_hint=raw.get("password_hint") or "",
        sender_rule=raw.get("sender_rule") or "",
        username_is_password=bool(raw.get("username_is_password")),
        auth=raw.get("auth") or "password",
        auth_note=(raw.get("auth_note") or "").strip(),
        api=_api(name, raw.get("api"), origin),
    )


def _read_yaml(path: Path, origin: str) -> dict[str, dict[str, Any]]:
    import yaml  # only when a provider is named: keeps `import fluxmail` light

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(
            f"{origin}: cannot read {path}: {exc.strerror}", code="invalid_providers_file"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigurationError(
            f"{origin}: {path} is not valid YAML{where}", code="invalid_providers_file"
        ) from None
    entries = data.get("providers") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise ConfigurationError(
            f"{origin}: {path} must be a mapping with a top-level 'providers:' mapping",
            code="invalid_providers_file",
        )
    for key, value in entries.items():
        if not isinstance(value, dict):
            raise _fail(str(key), "-", "entry must be a mapping of fields", origin)
    return {normalize_name(str(k)): v for k, v in entries.items()}


@functools.lru_cache(maxsize=8)
def _load(extra: str | None, stamp: int) -> Mapping[str, Provider]:
    del stamp  # part of the cache key only: an edited override file is re-read
    raw = _read_yaml(catalog_path(), "providers.yaml")
    overrides = _read_yaml(Path(extra), "FLUXMAIL_PROVIDERS_FILE") if extra else {}
    for name, fields in overrides.items():
        raw[name] = {**raw.get(name, {}), **fields}
    providers = {}
    for name, fields in raw.items():
        origin = "FLUXMAIL_PROVIDERS_FILE" if name in overrides else "providers.yaml"
        providers[name] = _build(name, fields, origin)
    _check_aliases(providers)
    return MappingProxyType(providers)


def _check_aliases(providers: Mapping[str, Provider]) -> None:
    owner: dict[str, str] = {}
    for provider in providers.values():
        for alias in (provider.name, *provider.aliases):
            if owner.get(alias, provider.name) != provider.name:
                raise _fail(
                    provider.name, "aliases", f"{alias!r} already names {owner[alias]!r}", "catalog"
                )
            owner[alias] = provider.name


def load_catalog(extra_file: Path | None = None) -> Mapping[str, Provider]:
    """Every provider by canonical name: the shipped catalog plus ``extra_file`` overrides."""
    if extra_file is None:
        return _load(None, 0)
    path = Path(extra_file)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        raise ConfigurationError(
            f"FLUXMAIL_PROVIDERS_FILE: {path} does not exist", code="invalid_providers_file"
        ) from None
    return _load(str(path.resolve()), stamp)


def get_provider(name: str, extra_file: Path | None = None) -> Provider:
    """Look a provider up by name or alias (case-insensitive); unknown names get suggestions."""
    catalog = load_catalog(extra_file)
    wanted = normalize_name(name)
    for provider in catalog.values():
        if wanted == provider.name or wanted in provider.aliases:
            return provider
    known = sorted({n for p in catalog.values() for n in (p.name, *p.aliases)})
    close = difflib.get_close_matches(wanted, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigurationError(
        f"FLUXMAIL_PROVIDER={name!r} is not a known provider; {hint}"
        f"known providers: {', '.join(sorted(catalog))} (see `fluxmail providers`, "
        "or add one with FLUXMAIL_PROVIDERS_FILE)",
        code="unknown_provider",
    )
