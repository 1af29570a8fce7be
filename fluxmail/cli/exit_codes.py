"""The exit status of the ``fluxmail`` command, chosen by the class of the error.

docs/cli.md ("Errors and exit codes") lists them; a script branches on them. The library's
errors know nothing of exit codes: this table is the CLI's.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from fluxmail.errors import (
    AuditError,
    AuthenticationFailed,
    ConfigurationError,
    DeliveryError,
    FluxMailException,
    MessageError,
    OutcomeUnknown,
    RecordNotFound,
    Refused,
    TLSFailure,
)

__all__ = ["BY_CLASS", "EXIT_CODES", "INTERRUPTED", "exit_code"]

EXIT_CODES: Mapping[str, int] = MappingProxyType(
    {
        "error": 1,
        "usage": 2,
        "configuration": 3,
        "message": 4,
        "temporary": 5,
        "permanent": 6,
        "unknown_outcome": 7,
        "audit": 8,
        "not_found": 9,
    }
)
INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C

# Most specific class first: the first one an error is an instance of decides.
BY_CLASS: tuple[tuple[type[FluxMailException], int], ...] = (
    (RecordNotFound, EXIT_CODES["not_found"]),
    (AuditError, EXIT_CODES["audit"]),
    (ConfigurationError, EXIT_CODES["configuration"]),
    (MessageError, EXIT_CODES["message"]),
    (OutcomeUnknown, EXIT_CODES["unknown_outcome"]),
    (TLSFailure, EXIT_CODES["permanent"]),
    (AuthenticationFailed, EXIT_CODES["permanent"]),
    (Refused, EXIT_CODES["permanent"]),
    (DeliveryError, EXIT_CODES["temporary"]),  # ConnectionFailed, SendTimeout, 4xx
    (FluxMailException, EXIT_CODES["error"]),
)


def exit_code(error: FluxMailException | type[FluxMailException]) -> int:
    """The exit status for an error (or an error class)."""
    cls = error if isinstance(error, type) else type(error)
    return next(code for base, code in BY_CLASS if issubclass(cls, base))
