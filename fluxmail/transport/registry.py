"""Transports by name: ``fluxmail/transport/<name>.py`` (or ``<name>/transport.py`` for one with
modules of its own) exports ``TRANSPORT``, a Transport subclass with ``from_config``.

Loaded by name on first use: a mailer on the memory transport never imports the SMTP stack,
and adding a transport is one new module, not an edit to a table here. The HTTP API transports
are one module a provider: backend ``api`` loads ``fluxmail/transport/api/<api_provider>.py``.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from fluxmail.config.resolve import Config
from fluxmail.errors import ConfigurationError
from fluxmail.transport.base import Transport


class _Factory(Protocol):
    def from_config(self, config: Config) -> Transport: ...


# Names served by another transport's module (name -> module name).
ALIASES = {"roundrobin": "failover"}


def transport_class(name: str) -> _Factory:
    """The transport called ``name``; a ConfigurationError if there is none."""
    if not name.isidentifier():
        raise ConfigurationError(f"there is no transport called {name!r}", code="invalid_config")
    name = ALIASES.get(name, name)
    for module in (f"fluxmail.transport.{name}", f"fluxmail.transport.{name}.transport"):
        try:
            found = getattr(importlib.import_module(module), "TRANSPORT", None)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise  # a dependency of the transport is missing, not the transport itself
            continue
        if found is not None:
            return found  # type: ignore[no-any-return]
    raise ConfigurationError(f"there is no transport called {name!r}", code="invalid_config")


def api_transport_class(provider: str) -> _Factory:
    """The HTTP API transport of ``provider`` (``fluxmail/transport/api/<provider>.py``)."""
    module = f"fluxmail.transport.api.{provider}"
    try:
        found = (
            getattr(importlib.import_module(module), "TRANSPORT", None)
            if provider.isidentifier()
            else None
        )
    except ModuleNotFoundError as exc:
        if exc.name is None or not module.startswith(exc.name):
            raise  # a dependency of the transport is missing, not the transport itself
        found = None
    if found is None:
        raise ConfigurationError(
            f"there is no HTTP API transport for {provider!r}", code="invalid_config"
        )
    return found  # type: ignore[no-any-return]


def make_transport(config: Config) -> Transport:
    if config.backend == "api" and config.api_provider is not None:
        return api_transport_class(config.api_provider).from_config(config)
    return transport_class(config.backend).from_config(config)
