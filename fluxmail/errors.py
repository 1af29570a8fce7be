"""The fluxmail error tree.

Every error is data: a stable ``code`` (public API: codes are added, never renamed), a readable
message that names what to fix, and, for the CLI, an exit code owned by the class::

    FluxMailException                      code="error"            exit 1
    ├── ConfigurationError                 code="invalid_config"   exit 3
    ├── MessageError                       code="invalid_message"  exit 4
    ├── AuditError                         code="audit_error"      exit 8
    │   └── RecordNotFound                 code="not_found"        exit 9
    └── DeliveryError                      code="send_failed"      exit 5
        ├── ConnectionFailed               code="connection_failed"
        │   └── SendTimeout                code="timeout"
        ├── TLSFailure                     code="tls_error"        exit 6
        ├── AuthenticationFailed           code="auth_failed"      exit 6
        ├── Refused                        code="refused"          exit 6
        └── OutcomeUnknown                 code="outcome_unknown"  exit 7

Messages never contain a secret: callers pass only redacted values in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fluxmail.results import SendResult

__all__ = [
    "EXIT_CODES",
    "AuditError",
    "AuthenticationFailed",
    "ConfigurationError",
    "ConnectionFailed",
    "DeliveryError",
    "FluxMailException",
    "MessageError",
    "OutcomeUnknown",
    "RecordNotFound",
    "Refused",
    "SendTimeout",
    "TLSFailure",
]

# CLI exit codes, one per error class (docs/cli.md lists them).
EXIT_CODES: dict[str, int] = {
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


def shown(value: object) -> str:
    """A value as an error message quotes it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class FluxMailException(Exception):
    """Root of every error fluxmail raises; ``code`` is a stable string."""

    code: str = "error"
    exit_code: int = EXIT_CODES["error"]

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = details

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"

    def to_dict(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "code": self.code, "message": self.message}


class ConfigurationError(FluxMailException):
    """A setting is missing, malformed or contradicts another; names the setting to fix."""

    code = "invalid_config"
    exit_code = EXIT_CODES["configuration"]


class MessageError(FluxMailException):
    """The message cannot be built safely (bad address, header injection, missing file...)."""

    code = "invalid_message"
    exit_code = EXIT_CODES["message"]


class AuditError(FluxMailException):
    """The audit store cannot be written or read; nothing is sent without a record."""

    code = "audit_error"
    exit_code = EXIT_CODES["audit"]


class RecordNotFound(AuditError):
    """No audit record has that id; its own exit code, so a script can tell "no such record"
    from "the store cannot be read"."""

    code = "not_found"
    exit_code = EXIT_CODES["not_found"]


class DeliveryError(FluxMailException):
    """Delivery did not succeed; carries the SMTP reply, every attempt and the result."""

    code = "send_failed"
    exit_code = EXIT_CODES["temporary"]

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        smtp_code: int | None = None,
        smtp_text: str | None = None,
        enhanced_status: str | None = None,
        transient: bool = True,
        result: SendResult | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message, code=code, **details)
        self.smtp_code = smtp_code
        self.smtp_text = smtp_text
        self.enhanced_status = enhanced_status
        self.transient = transient
        self.result = result

    @property
    def attempts(self) -> tuple[Any, ...]:
        return self.result.attempts if self.result is not None else ()

    def with_result(self, result: SendResult) -> DeliveryError:
        """Attach the final result (the retry loop does this after the last attempt)."""
        self.result = result
        return self

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data.update(
            smtp_code=self.smtp_code, smtp_text=self.smtp_text, enhanced_status=self.enhanced_status
        )
        return data


class ConnectionFailed(DeliveryError):
    """Could not connect, or the connection was lost before the message was handed over."""

    code = "connection_failed"


class SendTimeout(ConnectionFailed):
    """The server did not answer in time."""

    code = "timeout"


class TLSFailure(DeliveryError):
    """TLS could not be established: certificate not trusted, wrong host, STARTTLS missing."""

    code = "tls_error"
    exit_code = EXIT_CODES["permanent"]


class AuthenticationFailed(DeliveryError):
    """The server refused the credentials (535) or requires something else to log in."""

    code = "auth_failed"
    exit_code = EXIT_CODES["permanent"]


class Refused(DeliveryError):
    """The server permanently refused the message or every recipient (5xx)."""

    code = "refused"
    exit_code = EXIT_CODES["permanent"]


class OutcomeUnknown(DeliveryError):
    """The connection was lost after the final "."; the message may have been accepted.

    Never resent automatically (RFC 1047): resending could deliver it twice.
    """

    code = "outcome_unknown"
    exit_code = EXIT_CODES["unknown_outcome"]
