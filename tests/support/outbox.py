"""Outbox helpers for worker tests: enqueue straight through the store, read rows back."""

from __future__ import annotations

import time
from typing import Any

from fluxmail import FluxMail
from fluxmail.audit.log import outbound_record
from fluxmail.audit.outbox import Queued
from fluxmail.message.stored import message_to_spec


def enqueue(
    mailer: FluxMail,
    count: int = 1,
    *,
    delay: float = 0.0,
    deadline: float = 86400.0,
    recipients: list[str] | None = None,
    prefix: str = "m",
    **fields: Any,
) -> list[str]:
    """``count`` messages queued as ``pending`` (due in ``delay`` seconds); their ids."""
    items = []
    now = time.time()
    for n in range(count):
        draft = mailer.create(
            f"{prefix}{n}", recipients or [f"u{n}@example.org"], f"body {n}", **fields
        )
        record = outbound_record(mailer.engine.config, draft.message, draft.as_bytes(), "pending")
        items.append(
            Queued(
                record=record,
                spec=message_to_spec(draft.message),
                due_at=now + delay,
                deadline_at=now + deadline,
            )
        )
    return mailer.engine.audit.store().outbox().enqueue_many(items)


def statuses(mailer: FluxMail, ids: list[str]) -> dict[str, str]:
    store = mailer.engine.audit.store()
    return {i: store.get(i).status for i in ids}
