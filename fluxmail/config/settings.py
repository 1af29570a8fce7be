"""``FluxMailSettings``: every ``FLUXMAIL_*`` setting, validated, frozen, and where it came from.

The fields are declared once, in :mod:`fluxmail.config.fields` (plain pydantic: docs, types, rules).
``FluxMailSettings`` adds pydantic-settings on top: ``settings_customise_sources`` returns the
layers of :mod:`fluxmail.config.sources` (argument > environment > ``.env`` > ``*_FILE``
secret file > ``FLUXMAIL_URL``), and every instance knows the source of each value
(:attr:`SettingsFields.origins`). pydantic-settings imports asyncio, so the class is built on
first use (:func:`settings_class`) and ``import fluxmail`` stays light.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError

from fluxmail.config.fields import (
    Documented,
    SettingsFields,
    known_variables,
    parse_bool,
    unknown_lines,
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
    """``FluxMailSettings``, built once: the declared fields on pydantic-settings' BaseSettings.

    Built from ``SettingsFields``' own body, not as its subclass: pydantic collects a model's
    validators only from its own namespace and from pydantic bases, and a second (pydantic)
    model for the declaration alone was the second one every cold start built."""
    from pydantic_settings import BaseSettings, SettingsConfigDict

    def __init__(self: Any, **values: Any) -> None:
        _build(self, lambda: BaseSettings.__init__(self, **values))

    def settings_customise_sources(
        cls: Any,
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

    body = {
        k: v.default if isinstance(v, Documented) else v
        for k, v in vars(SettingsFields).items()
        if k not in ("__dict__", "__weakref__")
    }
    body |= {
        "__module__": __name__,
        "__qualname__": "FluxMailSettings",
        "__annotations__": dict(SettingsFields.__annotations__),
        "model_config": SettingsConfigDict(
            env_prefix=ENV_PREFIX,
            case_sensitive=False,
            frozen=True,
            extra="ignore",
            env_file=None,
            defer_build=False,
        ),
        "__init__": __init__,
        "settings_customise_sources": classmethod(settings_customise_sources),
    }
    built: builtins.type[SettingsFields] = builtins.type("FluxMailSettings", (BaseSettings,), body)
    return built


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
    return unknown_lines(trace.variables)


_ALLOWED = {
    "port": ("invalid_port", f"an integer from {PORT_MIN} to {PORT_MAX}"),
    "max_retries": ("invalid_config", "an integer >= 0"),
    "retry_delay": ("invalid_timeout", "a finite number of seconds >= 0"),
    "rate_limit": ("invalid_config", "a finite number of messages per second > 0"),
    "type": ("invalid_config", "one of smtp, console, file, memory"),
    "transport": ("invalid_config", "one of smtp, api"),
    "oauth_provider": ("invalid_config", "one of microsoft, google, generic"),
    "auth": ("invalid_config", "one of auto, password, xoauth2, oauthbearer"),
    "outbox_lease": ("invalid_timeout", "a finite number of seconds from 5 to 86400"),
    "outbox_poll_interval": ("invalid_timeout", "a finite number of seconds > 0, at most 3600"),
    "mcp_max_sends": ("invalid_config", "an integer >= 0"),
    "mcp_max_recipients": ("invalid_config", "an integer >= 1"),
}


def _allowed(field: str) -> tuple[str, str]:
    if field in _ALLOWED:
        return _ALLOWED[field]
    annotation = str(settings_class().model_fields[field].annotation)
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
        if field not in settings_class().model_fields:
            lines.append(f"{field}: {err['msg']}")
            continue
        field_code, allowed = _allowed(field)
        code = field_code if index == 0 else code
        origin = trace.origin(field)
        label = where(field, "argument" if origin == "default" else origin, trace.env_file)
        value = "" if field in SECRET_FIELDS else f"={shown(trace.raw(field))}"
        lines.append(f"{label}{value} is not valid; use {allowed}")
    return ConfigurationError("; ".join(lines), code=code)
