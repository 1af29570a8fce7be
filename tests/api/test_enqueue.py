"""enqueue() stores the rendered message as an outbox row and contacts no server (SQLite)."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from fluxmail import AuditError, ConfigurationError, FluxMail, MessageError
from tests.support.mailing import mailer_for


def _due(folder: Path, audit_id: str) -> tuple[float, float]:
    """The row's due_at and deadline_at, read from the store's own database."""
    with closing(sqlite3.connect(folder / "store.db")) as db:
        row = db.execute(
            "SELECT due_at, deadline_at FROM messages WHERE id = ?", (audit_id,)
        ).fetchone()
    return float(row[0]), float(row[1])


def _memory(folder: Path) -> FluxMail:
    return FluxMail("memory", audit=True, audit_dir=folder, sender="s@example.com")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "audit"


@pytest.mark.parametrize("face", ["sync", "async"])
def test_enqueue_stores_pending_and_sends_nothing(
    smtp_server: Any, folder: Path, face: str
) -> None:
    """The id of a pending record whose .eml is exactly draft.as_bytes(); no SMTP traffic."""
    server = smtp_server()
    mailer = mailer_for(server, audit_dir=folder, retry_deadline=600)
    draft = mailer.create("Receipt", "a@example.com", "x", bcc="b@example.com")
    before = time.time()
    audit_id = draft.enqueue() if face == "sync" else asyncio.run(draft.enqueue_async())
    record = mailer.audit.get(audit_id, include_bcc=True)
    assert record.status == "pending" and record.message_id == draft.message_id
    assert record.bcc == ("b@example.com",)
    assert mailer.audit.get_eml(audit_id) == draft.as_bytes()
    due, deadline = _due(folder, audit_id)
    assert before <= due <= time.time() and deadline == pytest.approx(due + 600, abs=1)
    assert record.result().status == "queued"
    assert server.connections == 0 and server.deliveries == 0
    assert mailer.outbox.stats().due == 1


def test_send_at_forms(folder: Path) -> None:
    """An aware datetime, a timedelta from now and epoch seconds; the past is due at once."""
    mailer = _memory(folder)
    now = time.time()
    at = datetime.now(timezone.utc) + timedelta(hours=2)
    cases = {
        "aware": (at, at.timestamp()),
        "delta": (timedelta(minutes=5), now + 300),
        "epoch": (now + 60, now + 60),
        "int": (int(now) + 7, int(now) + 7),
        "past": (now - 3600, now - 3600),
    }
    for name, (send_at, expected) in cases.items():
        audit_id = mailer.create(name, "a@example.com", "x").enqueue(send_at=send_at)
        assert _due(folder, audit_id)[0] == pytest.approx(expected, abs=2), name
    stats = mailer.outbox.stats()
    assert (stats.pending, stats.scheduled, stats.due) == (5, 4, 1)


BAD_SEND_AT = [
    datetime(2030, 1, 1, 12, 0),  # naive
    True,
    math.nan,
    math.inf,
    60,  # 1970: a delay meant as a timedelta
    "2030-01-01T00:00:00Z",
    object(),
]


def _shown(value: object) -> str:
    # repr(object()) carries an address: xdist's workers must collect the same test ids.
    return type(value).__name__ if type(value) is object else repr(value)


@pytest.mark.parametrize("send_at", BAD_SEND_AT, ids=_shown)
def test_bad_send_at_refused_before_any_write(folder: Path, send_at: object) -> None:
    mailer = _memory(folder)
    draft = mailer.create("Hi", "a@example.com", "x")
    with pytest.raises(ConfigurationError) as info:
        draft.enqueue(send_at=send_at)
    assert info.value.code == "invalid_send_at"
    with pytest.raises(ConfigurationError) as again:
        asyncio.run(draft.enqueue_async(send_at=send_at))
    assert again.value.code == "invalid_send_at"
    with pytest.raises(ConfigurationError):
        mailer.enqueue_many([draft], send_at=send_at)
    assert mailer.audit.list() == []


def test_idempotent_enqueue_and_conflict(folder: Path) -> None:
    """The same key twice: one row, one id; other content under it: idempotency_conflict."""
    mailer = _memory(folder)
    first = mailer.create("Order 7", "a@example.com", "x", idempotency_key="order-7").enqueue()
    again = mailer.create("Order 7", "a@example.com", "x", idempotency_key="order-7")
    assert again.enqueue() == first and asyncio.run(again.enqueue_async()) == first
    assert len(mailer.audit.list()) == 1
    other = mailer.create("Order 7!", "a@example.com", "y", idempotency_key="order-7")
    with pytest.raises(AuditError) as info:
        other.enqueue()
    assert info.value.code == "idempotency_conflict"


def test_send_after_enqueue_replays(smtp_server: Any, folder: Path) -> None:
    """send() with the key of a queued message returns it (queued), sends nothing."""
    server = smtp_server()
    mailer = mailer_for(server, audit_dir=folder)
    draft = mailer.create("Hi", "a@example.com", "x", idempotency_key="k-1")
    audit_id = draft.enqueue()
    result = mailer.create("Hi", "a@example.com", "x", idempotency_key="k-1").send()
    assert result.replayed and result.audit_id == audit_id and result.status == "queued"
    assert server.connections == 0 and len(mailer.audit.list()) == 1


@pytest.mark.parametrize("how", ["off", "memory"])
def test_audit_off_is_refused(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if how == "off":
        monkeypatch.setenv("FLUXMAIL_AUDIT", "false")
        mailer = FluxMail(host="127.0.0.1", port=1, use_tls=False, sender="s@example.com")
    else:
        mailer = FluxMail("memory", sender="s@example.com")
    draft = mailer.create("Hi", "a@example.com", "x")
    for call in (
        draft.enqueue,
        lambda: asyncio.run(draft.enqueue_async()),
        lambda: mailer.enqueue_many([draft]),
        mailer.outbox.stats,
    ):
        with pytest.raises(ConfigurationError) as info:
            call()
        assert info.value.code == "outbox_needs_audit"
    assert not Path(".fluxmail").exists()


def test_dry_run_stores_a_dry_run_record(smtp_server: Any, folder: Path) -> None:
    """FLUXMAIL_DRY_RUN: the id of a dry_run record, which no worker delivers."""
    server = smtp_server()
    mailer = mailer_for(server, audit_dir=folder, dry_run=True)
    audit_id = mailer.create("Hi", "a@example.com", "x").enqueue()
    assert mailer.audit.get(audit_id).status == "dry_run"
    assert mailer.enqueue_many([{"subject": "s", "recipients": "b@example.com", "body": "x"}])
    assert mailer.outbox.stats().pending == 0 and server.connections == 0


def test_sqlite_refuses_a_connection(folder: Path) -> None:
    mailer = _memory(folder)
    with closing(sqlite3.connect(":memory:")) as conn, pytest.raises(ConfigurationError) as info:
        mailer.create("Hi", "a@example.com", "x").enqueue(connection=conn)
    assert info.value.code == "outbox_connection_unsupported"
    assert mailer.audit.list() == []


def _items(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"subject": f"n{n}", "recipients": f"u{n}@example.com", "body": "x"}
        for n in range(start, start + count)
    ]


@pytest.mark.parametrize("face", ["sync", "async"])
def test_enqueue_many_in_batches(folder: Path, face: str) -> None:
    """Drafts and create() dicts, in order; every id a pending row."""
    mailer = _memory(folder)
    items: list[Any] = [*_items(6), mailer.create("draft", "d@example.com", "x")]
    if face == "sync":
        ids = mailer.enqueue_many(items, batch_size=3)
    else:

        async def source() -> Any:
            for item in items:
                yield item

        ids = asyncio.run(mailer.enqueue_many_async(source(), batch_size=3))
    assert len(set(ids)) == 7
    assert [mailer.audit.get(i).subject for i in ids] == [*(f"n{n}" for n in range(6)), "draft"]
    assert mailer.outbox.stats().pending == 7


BAD_ITEMS = [
    ({"subject": "s", "recipients": "not an address", "body": "x"}, "invalid_address"),
    ({"subject": "s", "body": "x"}, "invalid_message"),
    ({"subject": "s", "recipients": "a@example.com", "body": "x", "oops": 1}, "invalid_message"),
    ("a string", "invalid_message"),
]


@pytest.mark.parametrize(("bad", "code"), BAD_ITEMS, ids=lambda v: repr(v)[:30])
def test_bad_item_stops_before_its_batch(folder: Path, bad: Any, code: str) -> None:
    """The bad item's MessageError; earlier batches stay committed, its batch is not written."""
    mailer = _memory(folder)
    with pytest.raises(MessageError) as info:
        mailer.enqueue_many([*_items(4), bad, *_items(2, 10)], batch_size=3)
    assert info.value.code == code
    assert sorted(r.subject for r in mailer.audit.list()) == ["n0", "n1", "n2"]


@pytest.mark.parametrize(
    ("items", "options"),
    [("abc", {}), ({"subject": "s"}, {}), ([], {"batch_size": 0}), ([], {"batch_size": True})],
)
def test_enqueue_many_bad_call(folder: Path, items: Any, options: dict[str, Any]) -> None:
    mailer = _memory(folder)
    with pytest.raises(ConfigurationError):
        mailer.enqueue_many(items, **options)


def test_outbox_admin_cancel_and_retry(folder: Path) -> None:
    """cancel: pending -> cancelled; retry: cancelled -> pending, due now, a fresh deadline."""
    mailer = FluxMail(
        "memory", audit=True, audit_dir=folder, sender="s@example.com", retry_deadline=900
    )
    audit_id = mailer.create("Hi", "a@example.com", "x").enqueue(send_at=timedelta(hours=1))
    assert mailer.outbox.stats().scheduled == 1
    mailer.outbox.cancel(audit_id)
    assert mailer.audit.get(audit_id).status == "cancelled"
    assert mailer.outbox.stats().cancelled == 1
    with pytest.raises(AuditError) as info:
        mailer.outbox.cancel(audit_id)
    assert info.value.code == "outbox_not_cancellable"
    mailer.outbox.retry(audit_id)
    assert mailer.audit.get(audit_id).status == "pending"
    due, deadline = _due(folder, audit_id)
    assert due <= time.time() and deadline == pytest.approx(time.time() + 900, abs=5)
    with pytest.raises(AuditError) as again:
        mailer.outbox.retry(audit_id)
    assert again.value.code == "outbox_not_retryable"
    with pytest.raises(AuditError) as missing:
        mailer.outbox.retry("01M8T9QDARKSCYZ3YBWP8JGRWF")
    assert missing.value.code == "not_found"
    with pytest.raises(ConfigurationError):
        mailer.outbox.retry(audit_id, force="yes")  # type: ignore[arg-type]


def test_inline_send_is_not_retryable(smtp_server: Any, folder: Path) -> None:
    """A record sent inline has no stored model: retry refuses it."""
    server = smtp_server(faults=None)
    mailer = mailer_for(server, audit_dir=folder)
    result = mailer.create("Hi", "a@example.com", "x").send()
    with pytest.raises(AuditError) as info:
        mailer.outbox.retry(result.audit_id or "")
    assert info.value.code == "outbox_not_retryable"
