"""The port rule: which numbers are ports, and the default port of each TLS mode."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from fluxmail.config.tls import Security
from fluxmail.errors import ConfigurationError

__all__ = ["DEFAULT_PORTS", "PORT_MAX", "PORT_MIN", "check_port", "is_port"]

# TCP ports (RFC 793): 0 means "any" to bind() and is never a server's port.
PORT_MIN, PORT_MAX = 1, 65535
# RFC 6409 (submission, STARTTLS), RFC 8314 section 3.3 (implicit TLS), RFC 5321 (relay).
DEFAULT_PORTS: Mapping[Security, int] = MappingProxyType(
    {"starttls": 587, "implicit": 465, "none": 25}
)


def is_port(value: object) -> bool:
    """An int (not a bool) from 1 to 65535."""
    return isinstance(value, int) and not isinstance(value, bool) and PORT_MIN <= value <= PORT_MAX


def check_port(value: int | str, name: str) -> int:
    """``value`` as a port, or ``invalid_port`` naming the setting ``name``."""
    port = int(value)
    if not is_port(port):
        raise ConfigurationError(
            f"{name}: port {port} is out of range; use an integer from {PORT_MIN} to {PORT_MAX}",
            code="invalid_port",
        )
    return port
