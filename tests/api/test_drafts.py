"""Drafts (SQLite): saved without contacting the server, sent later exactly as saved, once."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from fluxmail import AuditError, ConfigurationError, DeliveryError, FluxMail, RecordNotFound
from tests.support.mailing import mailer_for
from tests.support.servers import Faults, reply


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "audit"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def audit_options(request: pytest.FixtureRequest, folder: Path) -> dict[str, Any]:
    """The mailer settings of an audit store of each backend (the rules are the same)."""
    if request.param == "postgres":
        return {"audit": True, "audit_url": request.getfixturevalue("pg_database")}
    return {"audit_dir": folder}


def _draft(mailer: FluxMail, **options: Any) -> Any:
    return mailer.create(
        "Quote", "a@example.com", "<p>Hello</p>", html_body=True, plain_body="Hello",
        bcc="hidden@example.com", attachments=[("quote.txt", b"total: 12")], **options,
    )  # fmt: skip


def test_save_draft_stores_everything_and_sends_nothing(smtp_server: Any, folder: Path) -> None:
    """A draft record: the exact bytes, bodies, attachment copy and spec; no connection."""
    server = smtp_server()
    mailer = mailer_for(server, audit_dir=folder)
    draft = _draft(mailer)
    audit_id = draft.save_draft()
    record = mailer.audit.get(audit_id, include_bcc=True)
    assert record.status == "draft" and record.message_id == draft.message_id
    assert record.bcc == ("hidden@example.com",) and record.origin is None
    assert mailer.audit.get_eml(audit_id) == draft.as_bytes()
    assert record.folder is not None and (record.folder / "body.txt").exists()
    assert [a["filename"] for a in record.attachments] == ["quote.txt"]
    assert [r.id for r in mailer.audit.list(status="draft")] == [audit_id]
    assert server.connections == 0 and server.deliveries == 0
    mailer.close()


@pytest.mark.parametrize("face", ["sync", "async"])
def test_send_draft_sends_the_stored_bytes_once(smtp_server: Any, folder: Path, face: str) -> None:
    """The server receives exactly the saved .eml (same Message-ID); a second send_draft is a
    replay and the server still has one message."""
    server = smtp_server()
    mailer = mailer_for(server, audit_dir=folder)
    draft = _draft(mailer)
    audit_id = draft.save_draft()

    def send() -> Any:
        if face == "sync":
            return mailer.send_draft(audit_id)
        return asyncio.run(mailer.send_draft_async(audit_id))

    result = send()
    assert result.status == "sent" and not result.replayed
    assert result.message_id == draft.message_id and result.audit_id == audit_id
    assert [m.data for m in server.messages] == [mailer.audit.get_eml(audit_id)]
    assert sorted(server.messages[0].rcpt_tos) == ["a@example.com", "hidden@example.com"]
    assert mailer.audit.get(audit_id).status == "sent"
    again = send()
    assert again.replayed and again.status == "sent" and again.audit_id == audit_id
    assert server.deliveries == 1
    mailer.close()


def test_two_threads_send_one_draft_once(smtp_server: Any, audit_options: dict[str, Any]) -> None:
    """Concurrent send_draft calls of one id: the claim lets one through, the other replays."""
    server = smtp_server()
    mailers = [mailer_for(server, **audit_options) for _ in range(2)]
    audit_id = _draft(mailers[0]).save_draft()
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def send(mailer: FluxMail) -> None:
        barrier.wait(timeout=10)
        results.append(mailer.send_draft(audit_id))

    threads = [threading.Thread(target=send, args=(m,)) for m in mailers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 2 and server.deliveries == 1
    assert sorted(r.replayed for r in results) == [False, True]
    for m in mailers:
        m.close()


def test_a_failed_draft_send_may_be_sent_again(smtp_server: Any, folder: Path) -> None:
    """Nothing accepted (MAIL FROM refused): the record is failed and send_draft tries again,
    with the same bytes; the attempts of both sends are kept."""
    server = smtp_server(faults=Faults(mail=reply("550 5.7.1 Not now", times=1)))
    mailer = mailer_for(server, audit_dir=folder, max_retries=0)
    audit_id = _draft(mailer).save_draft()
    with pytest.raises(Exception) as info:
        mailer.send_draft(audit_id)
    assert getattr(info.value, "result", None) is not None
    assert mailer.audit.get(audit_id).status == "failed"
    result = mailer.send_draft(audit_id)
    assert result.status == "sent" and not result.replayed
    assert [m.data for m in server.messages] == [mailer.audit.get_eml(audit_id)]
    assert len(mailer.audit.get(audit_id).attempts) == 2
    mailer.close()


def test_a_failed_draft_is_not_the_outboxs(smtp_server: Any, folder: Path) -> None:
    """A draft keeps its model but is never due: outbox stats do not count it and
    `outbox retry` refuses it (send_draft is the way to send it again)."""
    server = smtp_server(faults=Faults(mail=reply("550 5.7.1 Not now", times=1)))
    mailer = mailer_for(server, audit_dir=folder, max_retries=0)
    audit_id = _draft(mailer).save_draft()
    with pytest.raises(DeliveryError):
        mailer.send_draft(audit_id)
    assert mailer.audit.get(audit_id).status == "failed"
    assert mailer.outbox.stats().failed == 0
    with pytest.raises(AuditError) as info:
        mailer.outbox.retry(audit_id)
    assert info.value.code == "outbox_not_retryable"
    mailer.close()


def test_discard_draft(smtp_server: Any, folder: Path) -> None:
    """Deleted with its snapshot folder; a sent draft cannot be discarded."""
    server = smtp_server()
    mailer = mailer_for(server, audit_dir=folder)
    audit_id = _draft(mailer).save_draft()
    snapshot = mailer.audit.get(audit_id).folder
    assert snapshot is not None and snapshot.exists()
    mailer.discard_draft(audit_id)
    assert not snapshot.exists()
    with pytest.raises(RecordNotFound):
        mailer.audit.get(audit_id)
    with pytest.raises(RecordNotFound):
        mailer.send_draft(audit_id)
    sent = _draft(mailer).save_draft()
    mailer.send_draft(sent)
    with pytest.raises(AuditError) as info:
        mailer.discard_draft(sent)
    assert info.value.code == "not_a_draft" and mailer.audit.get(sent).status == "sent"
    assert server.deliveries == 1
    mailer.close()


def test_records_that_are_not_drafts_are_refused(smtp_server: Any, folder: Path) -> None:
    """An inline send's record and an outbox row: not_a_draft, nothing sent or deleted."""
    server = smtp_server()
    mailer = mailer_for(server, audit_dir=folder)
    inline = mailer.create("Inline", "a@example.com", "x").send().audit_id
    queued = mailer.create("Queued", "a@example.com", "x").enqueue()
    for audit_id in (inline, queued):
        assert audit_id is not None
        for act in (mailer.send_draft, mailer.discard_draft):
            with pytest.raises(AuditError) as info:
                act(audit_id)
            assert info.value.code == "not_a_draft"
    assert server.deliveries == 1
    assert mailer.audit.get(queued).status == "pending"
    mailer.close()


def test_idempotent_save(folder: Path) -> None:
    """The same key and content saves once (same id); other content under it is a conflict."""
    mailer = FluxMail("memory", audit=True, audit_dir=folder, sender="s@example.com")
    first = _draft(mailer, idempotency_key="quote-7").save_draft()
    assert _draft(mailer, idempotency_key="quote-7").save_draft() == first
    assert len(mailer.audit.list(status="draft")) == 1
    other = mailer.create("Other", "a@example.com", "x", idempotency_key="quote-7")
    with pytest.raises(AuditError) as info:
        other.save_draft()
    assert info.value.code == "idempotency_conflict"
    mailer.close()


def test_an_inline_send_with_the_key_takes_the_draft_over(folder: Path) -> None:
    """send() with a draft's key sends inline on that record: it is no longer a draft."""
    mailer = FluxMail("memory", audit=True, audit_dir=folder, sender="s@example.com")
    audit_id = _draft(mailer, idempotency_key="k").save_draft()
    assert _draft(mailer, idempotency_key="k").send().audit_id == audit_id
    for act in (mailer.discard_draft, mailer.send_draft):
        with pytest.raises(AuditError) as info:
            act(audit_id)
        assert info.value.code == "not_a_draft"
    assert mailer.audit.get(audit_id).status == "sent"
    mailer.close()


def test_drafts_need_the_audit(tmp_path: Path) -> None:
    mailer = FluxMail("memory", sender="s@example.com")
    for act in (
        lambda: mailer.create("x", "a@example.com", "x").save_draft(),
        lambda: mailer.send_draft("01ABC"),
        lambda: mailer.discard_draft("01ABC"),
    ):
        with pytest.raises(ConfigurationError) as info:
            act()
        assert info.value.code == "drafts_need_audit"


def test_dry_run_leaves_the_draft_alone(smtp_server: Any, folder: Path) -> None:
    """FLUXMAIL_DRY_RUN: send_draft sends nothing and the record stays a draft."""
    server = smtp_server()
    saving = mailer_for(server, audit_dir=folder)
    audit_id = _draft(saving).save_draft()
    dry = mailer_for(server, audit_dir=folder, dry_run=True)
    result = dry.send_draft(audit_id)
    assert result.status == "dry_run" and result.audit_id == audit_id
    assert saving.audit.get(audit_id).status == "draft" and server.connections == 0
    saving.close()
    dry.close()


def test_origin_is_stored_on_every_record_the_mailer_writes(folder: Path) -> None:
    """origin= marks sends, drafts, enqueued rows and bulk sends; absent, it is None."""
    mailer = FluxMail("memory", audit=True, audit_dir=folder, sender="s@example.com", origin="mcp")
    ids: list[str | None] = [
        mailer.create("Sent", "a@example.com", "x").send().audit_id,
        mailer.create("Draft", "a@example.com", "x").save_draft(),
        mailer.create("Queued", "a@example.com", "x").enqueue(),
    ]
    bulk = [{"subject": "Bulk", "recipients": "b@example.com", "body": "x"}]
    ids += [o.result.audit_id for o in mailer.send_many(bulk) if o.result is not None]
    assert [mailer.audit.get(i).origin for i in ids if i] == ["mcp"] * 4
    assert mailer.audit.get(str(ids[1])).to_dict()["origin"] == "mcp"
    plain = FluxMail("memory", audit=True, audit_dir=folder, sender="s@example.com")
    assert plain.audit.get(plain.create("x", "a@example.com", "x").save_draft()).origin is None
    mailer.close()
    plain.close()


@pytest.mark.parametrize("bad", ["MCP", "", "1mcp", "a" * 33, "has space", 7])
def test_origin_must_be_a_short_identifier(bad: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        FluxMail("memory", origin=bad)
    assert info.value.code == "invalid_config"
