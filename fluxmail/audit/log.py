"""Glue between a mailer and its audit store: opened lazily, records built from drafts."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from fluxmail._lazy import lazy_module

if TYPE_CHECKING:
    from pydantic import SecretStr

    from fluxmail.audit import open as opening
    from fluxmail.audit import records
    from fluxmail.audit.contract import AuditStore
    from fluxmail.audit.records import AuditRecord, OutboundRecord
    from fluxmail.config.resolve import Config
    from fluxmail.message.model import Message
else:  # opened on first use: a mailer that never records loads no store code (cold start)
    opening = lazy_module("fluxmail.audit.open")
    records = lazy_module("fluxmail.audit.records")


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def outbound_record(config: Config, message: Message, data: bytes, status: str) -> OutboundRecord:
    """Everything the store keeps about a message; never a credential.

    Built once per message in bulk, so no generator per field and one dict for the record
    (``records.outbound_from_fields``) instead of the frozen dataclass's 18 setattr calls.
    """
    files = message.attachments + message.inline_images
    attachments = tuple([(a.filename, a.mimetype, a.content) for a in files]) if files else ()
    return records.outbound_from_fields(
        {
            "message_id": message.message_id,
            "idempotency_key": message.idempotency_key,
            # Only a key is ever compared against it; bulk runs without keys skip the hashing.
            "content_hash": message.content_hash() if message.idempotency_key else "",
            "backend": config.backend,
            "provider": config.provider.name if config.provider is not None else None,
            "host": config.host if config.backend == "smtp" else None,
            "sender": message.sender.addr,
            "to": tuple([a.addr for a in message.to]),
            "cc": tuple([a.addr for a in message.cc]) if message.cc else (),
            "bcc": tuple([a.addr for a in message.bcc]) if message.bcc else (),
            "subject": message.subject,
            "metadata": dict(message.metadata) if message.metadata else {},
            "eml": data,
            "text": message.text,
            "html": message.html,
            "attachments": attachments,
            "status": status,
            "origin": config.origin,
        }
    )


class AuditLog:
    """The mailer's audit store, opened on first use (never at import or construction)."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._store: AuditStore | None = None

    @property
    def enabled(self) -> bool:
        c = self._config
        # The memory backend serves users' unit tests: no .fluxmail/ folder unless asked for.
        if c.backend == "memory" and c.sources.get("audit") == "default":
            return False
        return c.audit

    def store(self) -> AuditStore:
        with self._lock:
            if self._store is None:
                c = self._config
                self._store = opening.open_store(
                    directory=c.audit_dir,
                    explicit=c.audit_dir is not None,
                    url=_secret(c.audit_url),
                    password=_secret(c.audit_password),
                )
            return self._store

    # The read API: mailer.audit.list / get / get_eml / prune.
    def list(
        self,
        *,
        status: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        include_bcc: bool = False,
    ) -> list[AuditRecord]:
        return self.store().list(status=status, since=since, limit=limit, include_bcc=include_bcc)

    def get(self, audit_id: str, *, include_bcc: bool = False) -> AuditRecord:
        return self.store().get(audit_id, include_bcc=include_bcc)

    def get_eml(self, audit_id: str) -> bytes:
        return self.store().get_eml(audit_id)

    def prune(self, *, older_than: timedelta | datetime) -> int:
        return self.store().prune(older_than=older_than)

    def close(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()
