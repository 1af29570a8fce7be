"""``FluxMailSettings``: every ``FLUXMAIL_*`` setting, validated, frozen, and where it came from.

The fields are declared once, on :class:`SettingsFields` (plain pydantic: docs, types, rules).
``FluxMailSettings`` adds pydantic-settings on top: ``settings_customise_sources`` returns the
layers of :mod:`fluxmail.config.sources` (argument > environment > ``.env`` > ``*_FILE``
secret file > ``FLUXMAIL_URL``), and every instance knows the source of each value
(:attr:`SettingsFields.origins`). pydantic-settings imports asyncio, so the class is built on
first use (:func:`settings_class`) and ``import fluxmail`` stays light.
"""

from __future__ import annotations

import builtins
import difflib
import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
)

from fluxmail.config.ports import PORT_MAX, PORT_MIN
from fluxmail.config.sources import (
    ENV_PREFIX,
    SECRET_FIELDS,
    Trace,
    active_trace,
    dotenv,
    env_name,
    environment,
    is_file,
    layers,
    tracing,
)
from fluxmail.config.urls import UrlParts
from fluxmail.errors import ConfigurationError, shown

if TYPE_CHECKING:
    from pydantic_settings import (
        DotEnvSettingsSource,
        EnvSettingsSource,
        PydanticBaseSettingsSource,
    )

__all__ = [
    "ENV_PREFIX",
    "SECRET_FIELDS",
    "FluxMailSettings",
    "SettingsFields",
    "env_name",
    "is_file",
    "known_variables",
    "load_settings",
    "parse_bool",
    "settings_class",
    "unknown_variables",
    "where",
]

ARG_NAMES = {"type": "object_type", "tls": "use_tls", "ssl": "use_ssl"}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


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
Port = Annotated[int, BeforeValidator(_strict_int), Field(ge=PORT_MIN, le=PORT_MAX)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Text = Annotated[str | None, BeforeValidator(_blank_is_none)]
Secret = Annotated[SecretStr | None, BeforeValidator(_blank_is_none)]
OptPath = Annotated[Path | None, BeforeValidator(_blank_is_none)]


def _doc(default: Any, text: str, *, upstream: bool = False, secret: bool = False) -> Any:
    extra: dict[str, Any] = {"upstream": upstream, "secret": secret}
    return Field(default, description=text, json_schema_extra=extra)


class SettingsFields(BaseModel):
    """Every ``FLUXMAIL_*`` setting (``FluxMailSettings`` reads them from their sources)."""

    # Never validated itself (defer_build): FluxMailSettings builds the schema on first use.
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    type: Annotated[Literal["smtp", "console", "file", "memory"], BeforeValidator(_lower)] = _doc(
        "smtp", "Backend: `smtp`, `console`, `file` or `memory` (`object_type=`).", upstream=True
    )
    # Not blank-is-None: an empty FLUXMAIL_HOST is the invalid_host error, not "no host".
    host: str | None = _doc(
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

    _origins: dict[str, str] = PrivateAttr(default_factory=dict)
    _url: UrlParts | None = PrivateAttr(default=None)
    _unknown: tuple[str, ...] = PrivateAttr(default=())

    @property
    def origins(self) -> Mapping[str, str]:
        """field -> the source that gave it (``PRECEDENCE`` labels); absent fields: default."""
        return dict(self._origins)

    @property
    def url_parts(self) -> UrlParts | None:
        """The TLS mode and domain FLUXMAIL_URL implies (its fields are already applied)."""
        return self._url

    @property
    def unknown(self) -> tuple[str, ...]:
        """One line per FLUXMAIL_* name read from the environment or .env that is no setting."""
        return self._unknown

    def _keep(self, trace: Trace) -> None:
        self._origins = trace.origins()
        self._url = trace.url
        self._unknown = tuple(_unknown_lines(trace.variables))


if TYPE_CHECKING:
    FluxMailSettings = SettingsFields  # the real class is built on first use: settings_class()


def _build(settings: SettingsFields, init: Callable[[], None]) -> None:
    """Run pydantic-settings' ``__init__`` recording the sources; refuse bad values readably."""
    trace = active_trace() or Trace()
    undo = tracing(trace)
    error: ConfigurationError | None = None
    try:
        init()
    except ValidationError as exc:
        error = settings_error(exc, trace)
    finally:
        undo()
    if error is not None:
        # Raised outside the except block: pydantic's error (which echoes input values, maybe
        # a secret) must not even ride along as __context__.
        raise error
    settings._keep(trace)


@functools.cache
def settings_class() -> builtins.type[SettingsFields]:
    """``FluxMailSettings``, built once: the fields above on pydantic-settings' BaseSettings."""
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class FluxMailSettings(SettingsFields, BaseSettings):
        __doc__ = SettingsFields.__doc__
        model_config = SettingsConfigDict(
            env_prefix=ENV_PREFIX,
            case_sensitive=False,
            frozen=True,
            extra="ignore",
            env_file=None,
            defer_build=False,
        )

        def __init__(self, **values: Any) -> None:
            _build(self, lambda: super(FluxMailSettings, self).__init__(**values))

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: builtins.type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            env = cast("EnvSettingsSource", env_settings)
            chosen = dotenv(
                settings_cls, cast("DotEnvSettingsSource", dotenv_settings).env_file, env.env_vars
            )
            chain = layers(settings_cls, init_settings, env, chosen, active_trace() or Trace())
            # Plain callables: pydantic-settings calls each source and merges the returned dicts.
            return cast("tuple[PydanticBaseSettingsSource, ...]", chain)

    return FluxMailSettings


def __getattr__(name: str) -> Any:
    # ``from fluxmail.config.settings import FluxMailSettings`` builds the class on first use.
    if name == "FluxMailSettings":
        return settings_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_settings(args: Mapping[str, object], env_file: Any = None) -> SettingsFields:
    """Settings from ``args`` and every source, the URL's parts applied (as resolve needs)."""
    undo = tracing(Trace(expand_url=True))
    try:
        extra = {} if env_file is None else {"_env_file": env_file}
        build: Any = settings_class()
        settings: SettingsFields = build(**args, **extra)
        return settings
    finally:
        undo()


def where(field: str, source: str, env_file: str | Path | None = None) -> str:
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


# Read outside the model: the .env switch, and the benchmarks' scratch folder (bench/,
# docs/performance.md), so FLUXMAIL_STRICT=true never trips on the project's own tools.
_OTHER_VARIABLES = ("FLUXMAIL_ENV_FILE", "FLUXMAIL_BENCH_DIR")


def known_variables() -> frozenset[str]:
    """Every FLUXMAIL_* name fluxmail reads: the settings, the secrets' ``_FILE`` forms, ..."""
    names = {env_name(name) for name in SettingsFields.model_fields}
    names |= {f"{env_name(name)}_FILE" for name in SECRET_FIELDS}
    return frozenset(names | set(_OTHER_VARIABLES))


def unknown_variables(
    env_file: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> list[str]:
    """One line per FLUXMAIL_* name in the environment or the ``.env`` file that fluxmail
    does not read (a misspelling is otherwise silently ignored), with the closest known name.
    Names only: values may be secrets."""
    cls = settings_class()
    env = environment(cls, environ)
    dot = dotenv(cls, env_file, env.env_vars)
    trace = Trace()
    layers(cls, dict, env, dot, trace)  # the same sources a build reads; nothing is read yet
    return _unknown_lines(trace.variables)


def _unknown_lines(variables: Mapping[str, list[str]]) -> list[str]:
    known = known_variables()
    return [
        _unknown(n, place) for place, names in variables.items() for n in names if n not in known
    ]


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
    "port": ("invalid_port", f"an integer from {PORT_MIN} to {PORT_MAX}"),
    "max_retries": ("invalid_config", "an integer >= 0"),
    "retry_delay": ("invalid_timeout", "a finite number of seconds >= 0"),
    "rate_limit": ("invalid_config", "a finite number of messages per second > 0"),
    "type": ("invalid_config", "one of smtp, console, file, memory"),
}


def _allowed(field: str) -> tuple[str, str]:
    if field in _ALLOWED:
        return _ALLOWED[field]
    annotation = str(SettingsFields.model_fields[field].annotation)
    if "bool" in annotation:
        return "invalid_boolean", "true/1/yes/on or false/0/no/off (any case)"
    if "float" in annotation:
        return "invalid_timeout", "a finite number of seconds > 0"
    return "invalid_config", "a string"


def settings_error(exc: ValidationError, trace: Trace) -> ConfigurationError:
    """One readable error naming each bad setting; secret values are never echoed."""
    lines: list[str] = []
    code = "invalid_config"
    for index, err in enumerate(exc.errors(include_url=False, include_input=False)):
        field = str(err["loc"][0]) if err["loc"] else "?"
        if field not in SettingsFields.model_fields:
            lines.append(f"{field}: {err['msg']}")
            continue
        field_code, allowed = _allowed(field)
        code = field_code if index == 0 else code
        origin = trace.origin(field)
        label = where(field, "argument" if origin == "default" else origin, trace.env_file)
        value = "" if field in SECRET_FIELDS else f"={shown(trace.raw(field))}"
        lines.append(f"{label}{value} is not valid; use {allowed}")
    return ConfigurationError("; ".join(lines), code=code)
