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
    name = ALIASES.get(name, name)
    modules = (f"fluxmail.transport.{name}", f"fluxmail.transport.{name}.transport")
    found = next((t for m in modules if (t := _exported(m, name)) is not None), None)
    if found is None:
        raise ConfigurationError(f"there is no transport called {name!r}", code="invalid_config")
    return found


def api_transport_class(provider: str) -> _Factory:
    """The HTTP API transport of ``provider`` (``fluxmail/transport/api/<provider>.py``)."""
    found = _exported(f"fluxmail.transport.api.{provider}", provider)
    if found is None:
        raise ConfigurationError(
            f"there is no HTTP API transport for {provider!r}", code="invalid_config"
        )
    return found


def _exported(module: str, name: str) -> _Factory | None:
    """``module``'s TRANSPORT; None when there is no such module (a missing dependency of
    one that exists is raised: it is not the same as "no such transport")."""
    if not name.isidentifier():
        return None
    try:
        return getattr(importlib.import_module(module), "TRANSPORT", None)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module.startswith(exc.name):
            raise
        return None


def make_transport(config: Config) -> Transport:
    if config.backend == "api" and config.api_provider is not None:
        return api_transport_class(config.api_provider).from_config(config)
    return transport_class(config.backend).from_config(config)
