"""Drafts in a PostgreSQL audit store: the same rules as SQLite, for a fleet."""

from __future__ import annotations

from typing import Any

import pytest

from fluxmail import AuditError, FluxMail, RecordNotFound
from tests.support.mailing import mailer_for

pytestmark = pytest.mark.postgres


def _draft(mailer: FluxMail, **options: Any) -> Any:
    return mailer.create(
        "Quote", "a@example.com", "Hello", bcc="hidden@example.com",
        attachments=[("quote.txt", b"total: 12")], **options,
    )  # fmt: skip


def test_draft_saved_then_sent_once_with_its_bytes(smtp_server: Any, pg_database: str) -> None:
    server = smtp_server()
    mailer = mailer_for(server, audit=True, audit_url=pg_database, origin="mcp")
    draft = _draft(mailer)
    audit_id = draft.save_draft()
    record = mailer.audit.get(audit_id)
    assert (record.status, record.origin, record.message_id) == ("draft", "mcp", draft.message_id)
    assert mailer.audit.get_eml(audit_id) == draft.as_bytes() and server.connections == 0
    assert [r.id for r in mailer.audit.list(status="draft")] == [audit_id]
    result = mailer.send_draft(audit_id)
    assert result.status == "sent" and result.message_id == draft.message_id
    assert [m.data for m in server.messages] == [draft.as_bytes()]
    assert mailer.send_draft(audit_id).replayed and server.deliveries == 1
    assert mailer.audit.get(audit_id).status == "sent"
    mailer.close()


def test_discard_refusals_and_idempotent_save(smtp_server: Any, pg_database: str) -> None:
    server = smtp_server()
    mailer = mailer_for(server, audit=True, audit_url=pg_database)
    audit_id = _draft(mailer, idempotency_key="q-1").save_draft()
    assert _draft(mailer, idempotency_key="q-1").save_draft() == audit_id
    with pytest.raises(AuditError) as info:
        mailer.create("Other", "a@example.com", "x", idempotency_key="q-1").save_draft()
    assert info.value.code == "idempotency_conflict"
    mailer.discard_draft(audit_id)
    with pytest.raises(RecordNotFound):
        mailer.audit.get(audit_id)
    inline = mailer.create("Inline", "a@example.com", "x").send().audit_id
    assert inline is not None
    for act in (mailer.send_draft, mailer.discard_draft):
        with pytest.raises(AuditError) as info:
            act(inline)
        assert info.value.code == "not_a_draft"
    assert server.deliveries == 1
    mailer.close()


def test_origin_on_every_record_written(pg_database: str) -> None:
    """origin= reaches the PostgreSQL rows of a send, a draft and an enqueued message."""
    mailer = FluxMail(
        "memory", audit=True, audit_url=pg_database, sender="s@example.com", origin="mcp"
    )
    ids = [
        mailer.create("Sent", "a@example.com", "x").send().audit_id,
        mailer.create("Draft", "a@example.com", "x").save_draft(),
        mailer.create("Queued", "a@example.com", "x").enqueue(),
    ]
    assert [mailer.audit.get(str(i)).origin for i in ids] == ["mcp"] * 3
    mailer.close()
