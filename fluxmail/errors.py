"""The fluxmail error tree.

Every error is data: a stable ``code`` (public API: codes are added, never renamed) and a
readable message that names what to fix. Errors also mix in the standard library's base that
fits, so ``except TimeoutError`` works for code that never heard of fluxmail::

    FluxMailException                      code="error"
    ├── ConfigurationError  (ValueError)   code="invalid_config"
    ├── MessageError        (ValueError)   code="invalid_message"
    ├── AuditError                         code="audit_error"
    │   └── RecordNotFound                 code="not_found"
    └── DeliveryError                      code="send_failed"        transient
        ├── ConnectionFailed (ConnectionError) code="connection_failed" transient
        │   └── SendTimeout  (TimeoutError)    code="timeout"           transient
        ├── TLSFailure                     code="tls_error"          permanent*
        ├── AuthenticationFailed           code="auth_failed"        permanent*
        ├── Refused                        code="refused"            permanent
        └── OutcomeUnknown                 code="outcome_unknown"    never retried

``transient`` (may a later attempt succeed?) is the class's kind; * a 4xx reply to STARTTLS or
AUTH is transient (``fluxmail.transport.smtp.replies.transient_reply``). ``stage`` names the
SMTP step that failed. The CLI's exit codes live in ``fluxmail.cli.exit_codes``.

Messages never contain a secret: callers pass only redacted values in.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fluxmail.results import SendResult

__all__ = [
    "STAGES",
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
    "Stage",
    "TLSFailure",
]

# The SMTP steps a delivery error can name, in the order a session runs them.
Stage = Literal[
    "connect",
    "tls",
    "greeting",
    "ehlo",
    "starttls",
    "auth",
    "mail",
    "rcpt",
    "data",
    "end_of_data",
    "rset",
    "noop",
]
STAGES: tuple[Stage, ...] = get_args(Stage)

# Kept for code written before 0.5: the CLI owns its exit codes (fluxmail.cli.exit_codes).
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


def shown(value: object) -> str:
    """A value as an error message quotes it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class FluxMailException(Exception):
    """Root of every error fluxmail raises; ``code`` is a stable string."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)  # args == (message,): pickling rebuilds cls(message)
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


class ConfigurationError(FluxMailException, ValueError):
    """A setting is missing, malformed or contradicts another; names the setting to fix."""

    code = "invalid_config"


class MessageError(FluxMailException, ValueError):
    """The message cannot be built safely (bad address, header injection, missing file...)."""

    code = "invalid_message"


class AuditError(FluxMailException):
    """The audit store cannot be written or read; nothing is sent without a record."""

    code = "audit_error"


class RecordNotFound(AuditError):
    """No audit record has that id (its own CLI exit code: "no such record" is not "the
    store cannot be read")."""

    code = "not_found"


class DeliveryError(FluxMailException):
    """Delivery did not succeed; carries the SMTP reply, the failing stage and the result.

    ``transient`` comes from the class; pass it only where the kind does not decide (a reply
    code, or a fault that a later attempt cannot cure).
    """

    code = "send_failed"
    transient: bool = True

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        smtp_code: int | None = None,
        smtp_text: str | None = None,
        enhanced_status: str | None = None,
        stage: Stage | None = None,
        transient: bool | None = None,
        result: SendResult | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message, code=code, **details)
        self.smtp_code = smtp_code
        self.smtp_text = smtp_text
        self.enhanced_status = enhanced_status
        self.stage: Stage | None = stage
        if transient is not None:
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


class ConnectionFailed(DeliveryError, ConnectionError):
    """Could not connect, or the connection was lost before the message was handed over."""

    code = "connection_failed"
    transient = True


class SendTimeout(ConnectionFailed, TimeoutError):
    """The server did not answer in time."""

    code = "timeout"
    transient = True


class TLSFailure(DeliveryError):
    """TLS could not be established: certificate not trusted, wrong host, STARTTLS missing."""

    code = "tls_error"
    transient = False


class AuthenticationFailed(DeliveryError):
    """The server refused the credentials (535) or requires something else to log in."""

    code = "auth_failed"
    transient = False


class Refused(DeliveryError):
    """The server permanently refused the message or every recipient (5xx)."""

    code = "refused"
    transient = False


class OutcomeUnknown(DeliveryError):
    """The connection was lost after the final "."; the message may have been accepted.

    Never resent automatically (RFC 1047): resending could deliver it twice.
    """

    code = "outcome_unknown"
    transient = False

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.pop("transient", None)  # never retried, whatever a caller says
        super().__init__(message, **kwargs)
