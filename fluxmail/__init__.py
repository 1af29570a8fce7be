"""fluxmail: a twelve-factor mailer SDK.

``FluxMail.from_env()`` builds a validated mailer from ``FLUXMAIL_*`` variables;
``mailer.create(...).send()`` records and delivers a message. Bulk helpers load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fluxmail.errors import (
    AuditError,
    AuthenticationFailed,
    ConfigurationError,
    ConnectionFailed,
    DeliveryError,
    FluxMailException,
    MessageError,
    OutcomeUnknown,
    RecordNotFound,
    Refused,
    SendTimeout,
    TLSFailure,
)

if TYPE_CHECKING:
    from fluxmail.bulk import BulkOutcome, BulkRun, BulkSender, BulkSummary
    from fluxmail.config.urls import EmailInstance
    from fluxmail.draft import Draft
    from fluxmail.mailer import EmailObject, FluxMail
    from fluxmail.results import Attempt, RecipientStatus, SendResult, ServerReply

__version__ = "1.0.0"
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
    "RecordNotFound",
    "Refused",
    "SendResult",
    "SendTimeout",
    "ServerReply",
    "TLSFailure",
    "__version__",
]

_LAZY = {
    "FluxMail": "mailer",
    "EmailObject": "mailer",
    "EmailInstance": "config.urls",
    "BulkOutcome": "bulk",
    "BulkRun": "bulk",
    "BulkSender": "bulk",
    "BulkSummary": "bulk",
    "Draft": "draft",
    "Attempt": "results",
    "RecipientStatus": "results",
    "SendResult": "results",
    "ServerReply": "results",
}


def __getattr__(name: str) -> Any:
    # Loaded on first use (PEP 562): `import fluxmail` stays light, and a Lambda cold start
    # pays only for what the handler uses. The layers below never import this package's names.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fluxmail' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"fluxmail.{module}"), name)
