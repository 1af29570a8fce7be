"""Transports by name: ``fluxmail/transport/<name>.py`` (or ``<name>/transport.py`` for one with
modules of its own) exports ``TRANSPORT``, a Transport subclass with ``from_config``.

Loaded by name on first use: a mailer on the memory transport never imports the SMTP stack,
and adding a transport is one new module, not an edit to a table here.
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


def make_transport(config: Config) -> Transport:
    return transport_class(config.backend).from_config(config)
