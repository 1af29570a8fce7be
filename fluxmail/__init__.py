"""fluxmail: a twelve-factor mailer SDK.

``FluxMail.from_env()`` builds a validated mailer from ``FLUXMAIL_*`` variables;
``mailer.create(...).send()`` records and delivers a message. Bulk helpers load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fluxmail.config import EmailInstance
from fluxmail.draft import Draft
from fluxmail.errors import (
    AuditError,
    AuthenticationFailed,
    ConfigurationError,
    ConnectionFailed,
    DeliveryError,
    FluxMailException,
    MessageError,
    OutcomeUnknown,
    Refused,
    SendTimeout,
    TLSFailure,
)
from fluxmail.mailer import EmailObject, FluxMail
from fluxmail.results import Attempt, RecipientStatus, SendResult, ServerReply

if TYPE_CHECKING:
    from fluxmail.bulk import BulkOutcome, BulkRun, BulkSender, BulkSummary

__version__ = "1.0.0.dev0"

__all__ = [
    "Attempt",
    "AuditError",
    "AuthenticationFailed",
    "BulkOutcome",
    "BulkRun",
    "BulkSender",
    "BulkSummary",
    "ConfigurationError",
    "ConnectionFailed",
    "DeliveryError",
    "Draft",
    "EmailInstance",
    "EmailObject",
    "FluxMail",
    "FluxMailException",
    "MessageError",
    "OutcomeUnknown",
    "RecipientStatus",
    "Refused",
    "SendResult",
    "SendTimeout",
    "ServerReply",
    "TLSFailure",
    "__version__",
]

_LAZY = {"BulkOutcome", "BulkRun", "BulkSender", "BulkSummary"}


def __getattr__(name: str) -> Any:
    # Bulk sending pulls in asyncio machinery and rich; load it only when asked for.
    if name in _LAZY:
        from fluxmail import bulk

        return getattr(bulk, name)
    raise AttributeError(f"module 'fluxmail' has no attribute {name!r}")
