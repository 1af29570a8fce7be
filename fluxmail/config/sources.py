"""Where settings come from: the sources of ``FluxMailSettings``, in one precedence.

Highest first (``PRECEDENCE``)::

    argument      keyword arguments (FluxMail(...), from_env(**kwargs), CLI flags)
    environment   FLUXMAIL_* variables (pydantic-settings' EnvSettingsSource)
    .env          the file of FLUXMAIL_ENV_FILE / env_file=, else ./.env (DotEnvSettingsSource)
    secret file   FLUXMAIL_<SECRET>_FILE, named in the environment or in .env (Docker secrets)
    url           the parts of FLUXMAIL_URL (when a configuration is resolved)
    provider preset, default   applied after the sources (fluxmail.config.resolve)

``settings_customise_sources`` returns these as :class:`Layer` objects; pydantic-settings merges
them (a higher layer wins per field) and each layer records what it read in a :class:`Trace`,
so every value keeps the name of its source. The CLI's redactor asks the same layers
(:func:`read_layers`) for the secrets to hide instead of reading the environment itself.
pydantic-settings (which imports asyncio) is imported inside functions only: cold start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from fluxmail._lazy import lazy_module
from fluxmail.config.secrets import read_secret_file
from fluxmail.config.urls import UrlParts, is_api_url, parse_url
from fluxmail.errors import ConfigurationError

if TYPE_CHECKING:
    from pydantic import BaseModel
    from pydantic_settings import DotEnvSettingsSource, EnvSettingsSource

    from fluxmail.config import api as api_config
    from fluxmail.config import composite as composites
else:  # read only for a FLUXMAIL_URL of that form: not every cold start
    api_config = lazy_module("fluxmail.config.api")
    composites = lazy_module("fluxmail.config.composite")

__all__ = [
    "ENV_PREFIX",
    "SECRET_FIELDS",
    "Layer",
    "Trace",
    "active_trace",
    "choose_env_file",
    "env_name",
    "is_file",
    "layers",
    "read_layers",
    "tracing",
]

ENV_PREFIX = "FLUXMAIL_"
SECRET_FIELDS = (
    "password",
    "url",
    "audit_url",
    "audit_password",
    "oauth_client_secret",
    "oauth_refresh_token",
    "api_key",
    "dkim_private_key",
    "dkim_second_private_key",
)
Read = Callable[[], Mapping[str, Any]]


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def is_file(path: Path) -> bool:
    """``Path.is_file()`` that answers False, not OSError, for a name too long or unreadable."""
    try:
        return path.is_file()
    except OSError:
        return False


class Trace:
    """What each layer read, highest first. A field's source is the first layer that has it."""

    def __init__(self, *, expand_url: bool = False) -> None:
        self.expand_url = expand_url  # FLUXMAIL_URL becomes fields only when resolving
        self.layers: list[tuple[str, dict[str, Any]]] = []
        self.url: UrlParts | None = None
        self.env_file: Path | None = None
        self.variables: dict[str, list[str]] = {}  # FLUXMAIL_* names per place, for typo checks

    def record(self, label: str, values: Mapping[str, Any]) -> None:
        self.layers.append((label, dict(values)))

    def origin(self, field: str) -> str:
        return next((label for label, values in self.layers if field in values), "default")

    def raw(self, field: str) -> Any:
        return next((values[field] for _, values in self.layers if field in values), None)

    def origins(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for label, values in self.layers:
            for field in values:
                found.setdefault(field, label)
        return found

    def __repr__(self) -> str:  # raw values may be secrets: names only
        return f"Trace({[(label, sorted(values)) for label, values in self.layers]!r})"


_ACTIVE: ContextVar[Trace | None] = ContextVar("fluxmail_settings_trace", default=None)


def active_trace() -> Trace | None:
    return _ACTIVE.get()


def tracing(trace: Trace) -> Callable[[], None]:
    """Make ``trace`` the one the next settings build records into; returns the undo."""
    token = _ACTIVE.set(trace)
    return lambda: _ACTIVE.reset(token)


class Layer:
    """One source of pydantic-settings' chain under its precedence label.

    pydantic-settings calls each source and merges the dicts (``_settings_build_values``); a
    Layer keeps the non-None values of known fields and records them in the trace.
    """

    def __init__(self, label: str, read: Read, fields: Mapping[str, Any], trace: Trace) -> None:
        self.__name__ = label  # the name pydantic-settings files this source's values under
        self._read, self._fields, self._trace = read, fields, trace

    def __call__(self) -> dict[str, Any]:
        values = {k: v for k, v in self._read().items() if k in self._fields and v is not None}
        for name in SECRET_FIELDS:
            # Wrapped at once: pydantic-settings' debug log (PYDANTIC_SETTINGS_DEBUG) prints
            # every source's values. A blank stays a str, which the field reads as unset.
            if isinstance(values.get(name), str) and values[name].strip():
                values[name] = SecretStr(values[name])
        self._trace.record(self.__name__, values)
        return values


def choose_env_file(
    given: Any, env_vars: Mapping[str, str | None], *, lenient: bool = False
) -> Path | None:
    """env_file= > FLUXMAIL_ENV_FILE > ./.env when present; a named file must exist."""
    chosen = given if given is not None else env_vars.get(env_name("env_file").lower())
    if chosen is None or str(chosen) == "":
        default = Path(".env")
        return default if is_file(default) else None
    path = Path(chosen)
    if is_file(path):
        return path
    if lenient:
        return None
    raise ConfigurationError(
        f"FLUXMAIL_ENV_FILE / env_file= names {str(path)!r}, which is not a readable file; "
        "point it at a .env file or unset it",
        code="invalid_config",
    )


class _SecretFiles:
    """``FLUXMAIL_<SECRET>_FILE``: the environment's path first, then the one in ``.env``."""

    def __init__(
        self, env: Mapping[str, str | None], dot: Mapping[str, str | None], *, lenient: bool
    ) -> None:
        self._env, self._dot = env, dot
        self._lenient = lenient  # the CLI's redactor skips an unreadable file; a build refuses it

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name in SECRET_FIELDS:
            var = f"{env_name(name)}_FILE"
            path = self._env.get(var.lower()) or self._dot.get(var.lower())
            if not path:
                continue
            try:
                found[name] = read_secret_file(var, path)
            except ConfigurationError:
                if not self._lenient:
                    raise
        return found


class _UrlParts:
    """The settings inside FLUXMAIL_URL, below every layer that could have given the URL."""

    def __init__(self, trace: Trace) -> None:
        self._trace = trace

    def __call__(self) -> dict[str, Any]:
        raw = self._trace.raw("url")
        text = raw.get_secret_value() if isinstance(raw, SecretStr) else raw
        if not self._trace.expand_url or not isinstance(text, str) or not text.strip():
            return {}
        if composites.is_composite(text):
            return {}  # failover(...) / roundrobin(...): each member is resolved on its own
        parts = api_config.parse_api_url(text) if is_api_url(text) else parse_url(text)
        # Kept for resolve: the TLS mode the scheme implies and ?domain=; never the password.
        self._trace.url = UrlParts({}, parts.security, parts.domain)
        return parts.values


def _variables(source: EnvSettingsSource) -> Read:
    """What calling ``source`` gives ``FluxMailSettings``, read straight from its variables.

    pydantic-settings' own call examines every field's type for nested models, JSON values and
    aliases, for each source: most of a ``from_env()`` once the class is built. These have none
    of them (tests/config/test_settings_fast_read.py compares the two), so a field's value is
    its ``FLUXMAIL_*`` variable's, by the lower-cased name as ``case_sensitive=False`` keeps it.
    """

    def read() -> dict[str, Any]:
        found = source.env_vars
        fields = source.settings_cls.model_fields
        return {name: found[key] for name in fields if (key := env_name(name).lower()) in found}

    return read


def _names(env_vars: Mapping[str, str | None]) -> list[str]:
    return sorted(k.upper() for k in env_vars if k.upper().startswith(ENV_PREFIX))


def layers(
    settings_cls: type[BaseModel],
    init: Read,
    env: EnvSettingsSource,
    dot: DotEnvSettingsSource,
    trace: Trace,
    *,
    lenient: bool = False,
) -> tuple[Layer, ...]:
    """The chain, highest first: argument, environment, .env, secret file, url."""
    fields = settings_cls.model_fields
    trace.env_file = Path(dot.env_file) if isinstance(dot.env_file, (str, Path)) else None
    trace.variables = {"": _names(env.env_vars)}
    if trace.env_file is not None:
        trace.variables[f" (in {trace.env_file})"] = _names(dot.env_vars)
    secret_files = _SecretFiles(env.env_vars, dot.env_vars, lenient=lenient)
    return (
        Layer("argument", init, fields, trace),
        Layer("environment", _variables(env), fields, trace),
        Layer(".env", _variables(dot), fields, trace),
        Layer("secret file", secret_files, fields, trace),
        Layer("url", _UrlParts(trace), fields, trace),
    )


def environment(
    settings_cls: type[BaseModel], environ: Mapping[str, str] | None = None
) -> EnvSettingsSource:
    """pydantic-settings' environment source; ``environ`` replaces ``os.environ`` (tests)."""
    from pydantic_settings import EnvSettingsSource

    source = EnvSettingsSource(settings_cls)  # type: ignore[arg-type]
    if environ is not None:
        # Case-insensitive settings: keys lower-cased, as EnvSettingsSource does with os.environ.
        source.env_vars = {k.lower(): v for k, v in environ.items()}
    return source


def dotenv(
    settings_cls: type[BaseModel],
    given: Any,
    env_vars: Mapping[str, str | None],
    *,
    lenient: bool = False,
) -> DotEnvSettingsSource:
    """pydantic-settings' ``.env`` source, on the file :func:`choose_env_file` picks."""
    from pydantic_settings import DotEnvSettingsSource

    path = choose_env_file(given, env_vars, lenient=lenient)
    return DotEnvSettingsSource(settings_cls, env_file=path)  # type: ignore[arg-type]


def read_layers(
    settings_cls: type[BaseModel],
    environ: Mapping[str, str] | None = None,
    env_file: Any = None,
    *,
    lenient: bool = False,
) -> Trace:
    """Every layer's own values (not only the winners), without building settings.

    The CLI learns all the secrets of a run this way (a password in .env shadowed by the
    environment is still a secret to redact); ``lenient`` skips what the build would refuse.
    """
    trace = Trace()
    env = environment(settings_cls, environ)
    dot = dotenv(settings_cls, env_file, env.env_vars, lenient=lenient)
    for layer in layers(settings_cls, dict, env, dot, trace, lenient=lenient):
        layer()
    return trace
