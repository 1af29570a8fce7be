"""``FluxMailSettings``: every ``FLUXMAIL_*`` variable, read from the environment, ``.env`` and
``*_FILE`` secrets, validated, frozen.

Precedence (highest first): keyword argument > environment > ``.env`` file > ``<NAME>_FILE``
secret file > ``FLUXMAIL_URL`` parts > provider preset > default. This module handles the first
four layers (:func:`collect_layers`); :mod:`fluxmail.config.resolve` adds the URL and the preset.

Importing this module imports pydantic-settings (which itself imports asyncio and ssl), so
``fluxmail.config.resolve`` imports it only when a configuration is resolved.
"""

from __future__ import annotations

import builtins
import difflib
import math
import os
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from fluxmail.config.secrets import read_secret_file
from fluxmail.errors import ConfigurationError, shown

__all__ = [
    "ENV_PREFIX",
    "SECRET_FIELDS",
    "FluxMailSettings",
    "build_settings",
    "collect_layers",
    "env_name",
    "known_variables",
    "merge_layers",
    "parse_bool",
    "unknown_variables",
    "where",
]

ENV_PREFIX = "FLUXMAIL_"
SECRET_FIELDS = ("password", "url", "audit_url", "audit_password")
ARG_NAMES = {"type": "object_type", "tls": "use_tls", "ssl": "use_ssl"}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_META = {"ENV_FILE"}


def parse_bool(value: object) -> object:
    """true/1/yes/on and false/0/no/off, any case; anything else is left for pydantic to refuse."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    return "invalid"  # pydantic's own parser would accept t/f/y/n; we do not


def _strict_int(value: object) -> object:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        return "invalid"
    if isinstance(value, str) and not value.strip().lstrip("+-").isdigit():
        return "invalid"
    return value


def _blank_is_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


Bool = Annotated[bool, BeforeValidator(parse_bool)]
Port = Annotated[int, BeforeValidator(_strict_int), Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Text = Annotated[str | None, BeforeValidator(_blank_is_none)]
Secret = Annotated[SecretStr | None, BeforeValidator(_blank_is_none)]
OptPath = Annotated[Path | None, BeforeValidator(_blank_is_none)]


def _doc(default: Any, text: str, *, upstream: bool = False, secret: bool = False) -> Any:
    extra: dict[str, Any] = {"upstream": upstream, "secret": secret}
    return Field(default, description=text, json_schema_extra=extra)


class FluxMailSettings(BaseSettings):
    """Every ``FLUXMAIL_*`` setting. ``FluxMailSettings()`` reads env, ``.env`` and secret files."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, case_sensitive=False, frozen=True, extra="ignore", env_file=None
    )

    type: Annotated[Literal["smtp", "console", "file", "memory"], BeforeValidator(_lower)] = _doc(
        "smtp", "Backend: `smtp`, `console`, `file` or `memory` (`object_type=`).", upstream=True
    )
    host: Text = _doc(
        None,
        "SMTP relay: `host`, `relay:domain`, `host:port` or `[ipv6]:port`. Required for smtp "
        "unless FLUXMAIL_PROVIDER or FLUXMAIL_URL gives it.",
        upstream=True,
    )
    port: Port | None = _doc(
        None, "Port 1-65535; default from the provider or the TLS mode (587/465/25).", upstream=True
    )
    tls: Bool | None = _doc(None, "STARTTLS (`use_tls=`).", upstream=True)
    ssl: Bool | None = _doc(None, "Implicit TLS from the first byte (`use_ssl=`).", upstream=True)
    username: Text = _doc(None, "SMTP login.", upstream=True)
    password: Secret = _doc(None, "SMTP password or API key.", upstream=True, secret=True)
    timeout: Seconds = _doc(
        30.0, "Seconds; the default of the connect and command timeouts.", upstream=True
    )
    max_retries: Annotated[int, BeforeValidator(_strict_int), Field(ge=0)] = _doc(
        0, "Retries after the first attempt, for transient failures only.", upstream=True
    )
    retry_delay: Annotated[float, Field(ge=0, allow_inf_nan=False)] = _doc(
        1.0, "Seconds before the first retry (exponential backoff with jitter).", upstream=True
    )
    provider: Text = _doc(None, "Provider preset from the catalog (`fluxmail providers`).")
    region: Text = _doc(None, "Provider region, e.g. `eu-west-1` for SES.")
    sender: Text = _doc(None, "Default From; may carry a display name: `Shop <shop@example.com>`.")
    url: Secret = _doc(None, "Whole configuration as one URL (see below).", secret=True)
    ca_file: OptPath = _doc(None, "PEM bundle to trust instead of certifi's (a private CA).")
    tls_verify: Bool = _doc(True, "Verify certificates and host names; false logs a warning.")
    local_hostname: Text = _doc(None, "Name sent in EHLO; default: the machine's FQDN.")
    connect_timeout: Seconds | None = _doc(
        None, "Seconds to connect and finish TLS; default FLUXMAIL_TIMEOUT."
    )
    command_timeout: Seconds | None = _doc(
        None, "Seconds to wait for each SMTP reply; default FLUXMAIL_TIMEOUT."
    )
    data_timeout: Seconds = _doc(
        600.0, "Seconds to wait for the reply to the final `.` (RFC 5321 4.5.3.2)."
    )
    retry_deadline: Seconds | None = _doc(None, "Overall seconds for all attempts of one send.")
    providers_file: OptPath = _doc(None, "YAML file adding or overriding catalog entries.")
    allow_insecure_auth: Bool = _doc(
        False, "Allow credentials without TLS to a host that is not loopback."
    )
    dry_run: Bool = _doc(False, "Validate and build messages, send nothing.")
    audit: Bool = _doc(True, "Write an audit record for every message.")
    audit_dir: OptPath = _doc(
        None, "Audit folder; default `.fluxmail/` (a temp folder when read-only)."
    )
    audit_url: Secret = _doc(None, "`postgresql://...` shared audit store.", secret=True)
    audit_password: Secret = _doc(None, "Password of the audit database.", secret=True)
    file_dir: Path = _doc(Path("outbox"), "Folder for the `.eml` files of the `file` backend.")
    rate_limit: Annotated[float | None, Field(gt=0, allow_inf_nan=False)] = _doc(
        None, "Bulk messages per second; default: the provider's published limit."
    )
    strict: Bool = _doc(
        False,
        "An unknown `FLUXMAIL_*` variable (a misspelling) is the `unknown_setting` error "
        "instead of a logged warning.",
    )

    def __init__(self, **values: Any) -> None:
        prelayered = _PRELAYERED.get()
        if prelayered is not None:
            merged, sources, env_file = dict(values), prelayered[0], prelayered[1]
        else:  # called directly: read env, .env and secret files here
            merged, sources = merge_layers([("argument", values), *collect_layers()])
            env_file = None
        try:
            super().__init__(**merged)
            return
        except ValidationError as exc:
            error = settings_error(exc, merged, sources, env_file)
        # Raised outside the except block: pydantic's error (which echoes input values, maybe
        # a secret) must not even ride along as __context__.
        raise error

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: builtins.type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Layering (and source tracking) happens in __init__ / build_settings, not here.
        return (init_settings,)


_PRELAYERED: ContextVar[tuple[Mapping[str, str], str | None] | None] = ContextVar(
    "fluxmail_prelayered", default=None
)


def merge_layers(
    layers: Iterable[tuple[str, Mapping[str, object]]],
) -> tuple[dict[str, object], dict[str, str]]:
    """Highest layer first; returns the winning value and its source label for every field."""
    merged: dict[str, object] = {}
    sources: dict[str, str] = {}
    for label, values in layers:
        for key, value in values.items():
            if key not in merged and value is not None:
                merged[key] = value
                sources[key] = label
    return merged, sources


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def where(field: str, source: str, env_file: str | None = None) -> str:
    """Name the thing the user must change: the argument, the variable or the file variable."""
    if source == "argument":
        return f"argument {ARG_NAMES.get(field, field)}"
    if source == ".env":
        return f"{env_name(field)} (in {env_file or '.env'})"
    if source == "secret file":
        return f"{env_name(field)}_FILE"
    if source == "url":
        return f"FLUXMAIL_URL ({field})"
    return env_name(field)


def _fields() -> Mapping[str, FieldInfo]:
    return FluxMailSettings.model_fields


def _prefixed(items: Iterable[tuple[str, str | None]]) -> dict[str, str]:
    return {k.upper(): v for k, v in items if v is not None and k.upper().startswith(ENV_PREFIX)}


def _to_fields(variables: Mapping[str, str]) -> dict[str, object]:
    names = _fields()
    result: dict[str, object] = {}
    for var, value in variables.items():
        name = var[len(ENV_PREFIX) :]
        if name not in _META and name.lower() in names:
            result[name.lower()] = value
    return result


def _env_file_path(env_file: str | Path | None, env: Mapping[str, str]) -> Path | None:
    chosen = env_file if env_file is not None else env.get("FLUXMAIL_ENV_FILE")
    if chosen is None or str(chosen) == "":
        default = Path(".env")
        return default if default.is_file() else None
    path = Path(chosen)
    if not is_file(path):
        raise ConfigurationError(
            f"FLUXMAIL_ENV_FILE / env_file= names {str(path)!r}, which is not a readable file; "
            "point it at a .env file or unset it",
            code="invalid_config",
        )
    return path


def collect_layers(
    env_file: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> list[tuple[str, dict[str, object]]]:
    """The raw values of the environment, ``.env`` and ``*_FILE`` layers, highest first."""
    from dotenv import dotenv_values

    env = _prefixed((os.environ if environ is None else environ).items())
    path = _env_file_path(env_file, env)
    dot = _prefixed(dotenv_values(path).items()) if path is not None else {}
    secrets: dict[str, object] = {}
    for name in SECRET_FIELDS:
        var = f"{env_name(name)}_FILE"
        raw_path = env.get(var) or dot.get(var)
        if raw_path:
            secrets[name] = read_secret_file(var, raw_path)
    return [("environment", _to_fields(env)), (".env", _to_fields(dot)), ("secret file", secrets)]


# Read outside the model: the .env switch, and the benchmarks' scratch folder (bench/,
# docs/performance.md), so FLUXMAIL_STRICT=true never trips on the project's own tools.
_OTHER_VARIABLES = ("FLUXMAIL_ENV_FILE", "FLUXMAIL_BENCH_DIR")


def known_variables() -> frozenset[str]:
    """Every FLUXMAIL_* name fluxmail reads: the settings, the secrets' ``_FILE`` forms, ..."""
    names = {env_name(name) for name in _fields()}
    names |= {f"{env_name(name)}_FILE" for name in SECRET_FIELDS}
    return frozenset(names | set(_OTHER_VARIABLES))


def unknown_variables(
    env_file: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> list[str]:
    """One line per FLUXMAIL_* name in the environment or the ``.env`` file that fluxmail
    does not read (a misspelling is otherwise silently ignored), with the closest known name.
    Names only: values may be secrets."""
    from dotenv import dotenv_values

    env = _prefixed((os.environ if environ is None else environ).items())
    found = [_unknown(name, "") for name in sorted(env) if name not in known_variables()]
    path = _env_file_path(env_file, env)
    if path is not None:
        dot = _prefixed(dotenv_values(path).items())
        found += [_unknown(n, f" (in {path})") for n in sorted(dot) if n not in known_variables()]
    return found


def _unknown(name: str, place: str) -> str:
    stems = {known[len(ENV_PREFIX) :]: known for known in known_variables()}
    stem = name[len(ENV_PREFIX) :]
    close = difflib.get_close_matches(stem, stems, n=1, cutoff=0.6)
    base = name.removesuffix("_FILE")
    near = close and difflib.SequenceMatcher(None, stem, close[0]).ratio() >= 0.85
    if base != name and base in stems.values() and not near:
        hint = f"{base} has no _FILE form (only the secrets do); set {base} itself"
    elif close:
        hint = f"did you mean {stems[close[0]]}?"
    else:
        hint = "`fluxmail config` and docs/configuration.md list the known settings"
    return f"{name}{place} is not a fluxmail setting; {hint}"


_ALLOWED = {
    "port": ("invalid_port", "an integer from 1 to 65535"),
    "max_retries": ("invalid_config", "an integer >= 0"),
    "retry_delay": ("invalid_timeout", "a finite number of seconds >= 0"),
    "rate_limit": ("invalid_config", "a finite number of messages per second > 0"),
    "type": ("invalid_config", "one of smtp, console, file, memory"),
}


def _allowed(field: str) -> tuple[str, str]:
    if field in _ALLOWED:
        return _ALLOWED[field]
    annotation = str(_fields()[field].annotation)
    if "bool" in annotation:
        return "invalid_boolean", "true/1/yes/on or false/0/no/off (any case)"
    if "float" in annotation:
        return "invalid_timeout", "a finite number of seconds > 0"
    return "invalid_config", "a string"


def settings_error(
    exc: ValidationError,
    values: Mapping[str, object],
    sources: Mapping[str, str],
    env_file: str | None = None,
) -> ConfigurationError:
    """One readable error naming each bad setting; secret values are never echoed."""
    lines: list[str] = []
    code = "invalid_config"
    for index, err in enumerate(exc.errors(include_url=False, include_input=False)):
        field = str(err["loc"][0]) if err["loc"] else "?"
        if field not in _fields():
            lines.append(f"{field}: {err['msg']}")
            continue
        field_code, allowed = _allowed(field)
        code = field_code if index == 0 else code
        label = where(field, sources.get(field, "argument"), env_file)
        value = "" if field in SECRET_FIELDS else f"={shown(values.get(field))}"
        lines.append(f"{label}{value} is not valid; use {allowed}")
    return ConfigurationError("; ".join(lines), code=code)


def build_settings(
    values: Mapping[str, object], sources: Mapping[str, str], env_file: str | None = None
) -> FluxMailSettings:
    """Validate already-layered raw values (no environment is read here)."""
    token = _PRELAYERED.set((sources, env_file))
    try:
        return FluxMailSettings(**values)
    finally:
        _PRELAYERED.reset(token)


def is_file(path: Path) -> bool:
    """``Path.is_file()`` that answers False, not OSError, for a name too long or unreadable."""
    try:
        return path.is_file()
    except OSError:
        return False


def is_finite_positive(value: float) -> bool:
    return value > 0 and math.isfinite(value)
