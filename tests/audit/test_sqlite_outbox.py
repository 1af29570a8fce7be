"""The SQLite outbox: enqueue, leases across processes, settling, operators, pacing, schema."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fluxmail import FluxMail
from fluxmail.audit import open_store
from fluxmail.audit.log import outbound_record
from fluxmail.audit.outbox import Queued, Settlement
from fluxmail.audit.sqlite import LATEST_VERSION, MIGRATIONS, SQLiteStore
from fluxmail.errors import AuditError, ConfigurationError, RecordNotFound
from fluxmail.message.stored import message_from_spec, message_to_spec
from tests.support.audit import failed_result, make_record, sent_result, sqlite_versions

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


@pytest.fixture
def mailer(tmp_path: Path) -> FluxMail:
    return FluxMail(
        object_type="memory", sender="ann@example.com", audit=True, audit_dir=tmp_path / "m"
    )


def open_sqlite(folder: Path) -> SQLiteStore:
    store = open_store(directory=folder, explicit=True)
    assert isinstance(store, SQLiteStore)
    return store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = open_sqlite(tmp_path / "audit")
    yield opened
    opened.close()


def queued(
    mailer: FluxMail, n: int = 0, *, key: str | None = None, due: float | None = None, **kw: Any
) -> tuple[Queued, Any]:
    """A Queued item built from a real draft (and the draft, to compare with)."""
    draft = mailer.create(
        kw.pop("subject", f"Report {n}"), [f"bob{n}@example.com", "cy@example.com"],
        kw.pop("body", "Hello"), idempotency_key=key, **kw,
    )  # fmt: skip
    record = outbound_record(mailer.config, draft.message, draft.as_bytes(), "pending")
    now = time.time()
    spec = message_to_spec(draft.message)
    return Queued(record, spec, now - 1 if due is None else due, now + 86400), draft


def items(mailer: FluxMail, count: int) -> list[Queued]:
    return [queued(mailer, n)[0] for n in range(count)]


def column(store: SQLiteStore, audit_id: str, name: str) -> Any:
    conn = sqlite3.connect(store.folder / "store.db")
    try:
        return conn.execute(f"SELECT {name} FROM messages WHERE id=?", (audit_id,)).fetchone()[0]
    finally:
        conn.close()


def test_a_claim_gives_back_the_exact_bytes_and_the_model(
    store: SQLiteStore, mailer: FluxMail
) -> None:
    item, draft = queued(
        mailer, attachments=[("report.pdf", b"%PDF-1.4 fake")], html_body=True,
        body='<p>Hi <img src="cid:logo"></p>', inline_images={"logo": PNG},
    )  # fmt: skip
    outbox = store.outbox()
    assert store.outbox() is outbox
    [audit_id] = outbox.enqueue_many([item])
    assert store.get(audit_id).status == "pending"
    # The bytes wait in the database while the row is queued: no folder to race a worker on.
    assert store.materialize_pending() == 0
    assert store.get_eml(audit_id) == draft.as_bytes()
    [delivery] = outbox.claim_due("w1", limit=10, lease=60)
    assert (delivery.audit_id, delivery.eml, delivery.tries) == (audit_id, draft.as_bytes(), 0)
    assert delivery.attachments == (b"%PDF-1.4 fake", PNG)
    assert delivery.recipients is None and delivery.prior_attempts == ()
    assert message_from_spec(delivery.spec, delivery.attachments) == draft.message
    assert store.get(audit_id).status == "sending"
    assert outbox.claim_due("w2", limit=10, lease=60) == []
    outbox.settle("w1", [Settlement(audit_id, sent_result())])
    assert store.materialize_pending() == 1  # ended: its folder is written
    folder = store.get(audit_id).folder
    assert folder is not None and (folder / "message.eml").read_bytes() == draft.as_bytes()
    assert (folder / "attachments" / "report.pdf").read_bytes() == b"%PDF-1.4 fake"


def claim_all(folder: str, owner: str, barrier: Any, queue: Any) -> None:
    """Child process: claim in small batches until nothing is due; report the ids."""
    store = open_sqlite(Path(folder))
    barrier.wait(timeout=60)
    got: list[str] = []
    for _ in range(1000):  # bounded
        batch = store.outbox().claim_due(owner, limit=7, lease=60)
        if not batch:
            break
        got.extend(d.audit_id for d in batch)
    store.close()
    queue.put(got)


def test_two_processes_claim_disjoint_rows_covering_all(
    store: SQLiteStore, mailer: FluxMail
) -> None:
    ids = []
    for _ in range(5):
        ids += store.outbox().enqueue_many(items(mailer, 100))
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    children = [
        ctx.Process(target=claim_all, args=(str(store.folder), f"w{n}", barrier, queue))
        for n in range(2)
    ]
    for child in children:
        child.start()
    first, second = queue.get(timeout=120), queue.get(timeout=120)
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(ids)


def test_leases_that_run_out(store: SQLiteStore, mailer: FluxMail) -> None:
    """Unmarked rows go back to pending (the try uncounted); marked ones become unknown with
    every recipient unknown, and the worker's late settle still records the real outcome."""
    outbox = store.outbox()
    quiet, wired = outbox.enqueue_many(items(mailer, 2))
    outbox.claim_due("w1", limit=10, lease=60)
    assert outbox.mark("w1", [wired]) == frozenset()
    assert outbox.renew("w1", lease=-1) == 2  # the lease ran out
    assert outbox.expire_leases() == 2
    assert store.get(quiet).status == "pending"
    lost = store.get(wired, include_bcc=True)
    assert lost.status == "unknown"
    assert {r["status"] for r in lost.recipients.values()} == {"unknown"}
    assert set(lost.recipients) == {"bob1@example.com", "cy@example.com"}
    assert column(store, wired, "lease_owner") == "w1"
    assert outbox.mark("w1", [wired]) == {wired}  # no longer sending
    [again] = outbox.claim_due("w2", limit=10, lease=60)
    assert (again.audit_id, again.tries) == (quiet, 0)
    outbox.settle("w1", [Settlement(wired, sent_result())])
    assert store.get(wired).status == "sent"
    assert column(store, wired, "lease_owner") is None


def test_mark_refuses_rows_the_owner_does_not_hold(store: SQLiteStore, mailer: FluxMail) -> None:
    outbox = store.outbox()
    mine, theirs, waiting = outbox.enqueue_many(items(mailer, 3))
    outbox.claim_due("w1", limit=1, lease=60, ids=[mine])
    outbox.claim_due("w2", limit=1, lease=60, ids=[theirs])
    assert outbox.mark("w1", [mine, theirs, waiting]) == {theirs, waiting}
    assert column(store, mine, "on_wire_at") is not None
    assert column(store, theirs, "on_wire_at") is None
    outbox.renew("w1", lease=-1)
    assert outbox.mark("w1", [mine]) == {mine}  # a lease that ran out is refused


def test_release_gives_back_only_unmarked_rows(store: SQLiteStore, mailer: FluxMail) -> None:
    outbox = store.outbox()
    quiet, wired = outbox.enqueue_many(items(mailer, 2))
    outbox.claim_due("w1", limit=10, lease=60)
    outbox.mark("w1", [wired])
    outbox.release("w2", [quiet])  # not w2's: nothing
    assert store.get(quiet).status == "sending"
    outbox.release("w1", [quiet, wired])
    assert (store.get(quiet).status, column(store, quiet, "tries")) == ("pending", 0)
    assert column(store, quiet, "lease_owner") is None
    assert store.get(wired).status == "sending"


def test_settle_reschedules_then_finishes(store: SQLiteStore, mailer: FluxMail) -> None:
    outbox = store.outbox()
    [audit_id] = outbox.enqueue_many(items(mailer, 1))
    outbox.claim_due("w1", limit=1, lease=60)
    outbox.mark("w1", [audit_id])
    first = failed_result()
    retry_at = time.time() - 0.5
    outbox.settle("w9", [Settlement(audit_id, sent_result())])  # not w9's: left alone
    outbox.settle("w1", [Settlement(audit_id, first, retry_at, ("bob0@example.com",))])
    record = store.get(audit_id)
    assert (record.status, record.sent_at, len(record.attempts)) == ("pending", None, 1)
    assert column(store, audit_id, "due_at") == retry_at
    assert outbox.next_due() == retry_at
    [delivery] = outbox.claim_due("w2", limit=1, lease=60)
    assert (delivery.tries, delivery.recipients) == (1, ("bob0@example.com",))
    assert delivery.prior_attempts[0]["error_code"] == "connection_failed"
    outbox.settle("w2", [Settlement(audit_id, sent_result())])
    record = store.get(audit_id)
    assert (record.status, record.sent_at is not None) == ("sent", True)
    assert column(store, audit_id, "lease_owner") is None
    assert column(store, audit_id, "retry_recipients") is None
    assert outbox.next_due() is None


def test_enqueue_is_idempotent(store: SQLiteStore, mailer: FluxMail) -> None:
    """Same key: the stored id, nothing written; cancelled: queued again; other content:
    the idempotency conflict."""
    outbox = store.outbox()
    item, _ = queued(mailer, key="order-1")
    [audit_id] = outbox.enqueue_many([item])
    assert outbox.enqueue_many([item, item]) == [audit_id, audit_id]
    assert len(store.list()) == 1
    outbox.cancel(audit_id)
    assert outbox.enqueue_many([item]) == [audit_id]
    assert store.get(audit_id).status == "pending"
    other, _ = queued(mailer, key="order-1", subject="Something else")
    with pytest.raises(AuditError) as info:
        outbox.enqueue_many([queued(mailer, 5)[0], other])
    assert info.value.code == "idempotency_conflict"
    assert len(store.list()) == 1  # the whole batch rolled back


def test_a_caller_connection_is_refused_before_any_write(
    store: SQLiteStore, mailer: FluxMail
) -> None:
    outbox = store.outbox()
    batch = items(mailer, 2)
    with pytest.raises(ConfigurationError) as info:
        outbox.enqueue_many(batch, connection=object())
    assert info.value.code == "outbox_connection_unsupported"
    assert "FLUXMAIL_AUDIT_URL" in str(info.value)
    with pytest.raises(ConfigurationError):
        asyncio.run(outbox.enqueue_many_async(batch, connection=object()))
    assert store.list() == []
    assert len(asyncio.run(outbox.enqueue_many_async(batch))) == 2


def test_stats_count_the_queue(store: SQLiteStore, mailer: FluxMail) -> None:
    outbox = store.outbox()
    now = time.time()
    due = [queued(mailer, n, due=now - 30 + n)[0] for n in range(3)]
    later = queued(mailer, 9, due=now + 3600)[0]
    _, b, c, _ = outbox.enqueue_many([*due, later])
    outbox.claim_due("w1", limit=1, lease=60, ids=[b])
    outbox.cancel(c)
    [retried] = outbox.enqueue_many(items(mailer, 1))
    outbox.claim_due("w1", limit=1, lease=60, ids=[retried])
    outbox.settle("w1", [Settlement(retried, failed_result(), now - 1)])
    stats = outbox.stats()
    assert (stats.pending, stats.due, stats.scheduled, stats.retrying) == (3, 2, 1, 1)
    assert (stats.sending, stats.cancelled, stats.failed, stats.unknown) == (1, 1, 0, 0)
    assert stats.oldest_due_age is not None and 29 <= stats.oldest_due_age < 60
    assert stats.to_dict()["pending"] == 3


def test_retry_and_cancel_refuse_what_they_cannot_do(store: SQLiteStore, mailer: FluxMail) -> None:
    outbox = store.outbox()
    waiting, busy = outbox.enqueue_many(items(mailer, 2))
    outbox.claim_due("w1", limit=1, lease=60, ids=[busy])
    with pytest.raises(AuditError) as info:
        outbox.cancel(busy)
    assert info.value.code == "outbox_not_cancellable"
    with pytest.raises(AuditError) as info:
        outbox.retry(waiting, deadline_at=time.time() + 60)
    assert info.value.code == "outbox_not_retryable"
    inline = store.claim(make_record()).audit_id  # sent inline: no stored model
    store.finish(inline, failed_result())
    with pytest.raises(AuditError, match="inline") as info:
        outbox.retry(inline, deadline_at=time.time() + 60)
    assert info.value.code == "outbox_not_retryable"
    with pytest.raises(RecordNotFound):
        outbox.retry("nope", deadline_at=0)
    with pytest.raises(RecordNotFound):
        outbox.cancel("nope")
    outbox.mark("w1", [busy])
    outbox.renew("w1", lease=-1)
    outbox.expire_leases()
    with pytest.raises(AuditError, match="force"):
        outbox.retry(busy, deadline_at=time.time() + 60)
    outbox.retry(busy, deadline_at=time.time() + 60, force=True)
    outbox.cancel(waiting)
    outbox.retry(waiting, deadline_at=time.time() + 60)
    got = {d.audit_id: d.tries for d in outbox.claim_due("w2", limit=10, lease=60)}
    assert got == {busy: 1, waiting: 0}


def test_reserve_paces_a_key_for_every_worker(store: SQLiteStore) -> None:
    outbox = store.outbox()
    assert outbox.reserve("smtp://a", 10.0, 5) == 0.0
    wait = outbox.reserve("smtp://a", 10.0, 5)  # the first 5 take 0.5 s at 10/s
    assert 0.3 < wait <= 0.5
    assert 0.8 < outbox.reserve("smtp://a", 10.0, 1) <= 1.0
    assert outbox.reserve("smtp://b", 10.0, 1) == 0.0
    with pytest.raises(ConfigurationError):
        outbox.reserve("smtp://a", 0.0, 1)


def test_prune_keeps_pending_and_recovery_leaves_leased_rows(
    store: SQLiteStore, mailer: FluxMail
) -> None:
    outbox = store.outbox()
    waiting, leased = outbox.enqueue_many(items(mailer, 2))
    outbox.claim_due("w1", limit=1, lease=60, ids=[leased])
    inline = store.claim(make_record()).audit_id
    assert store.recover_stale(older_than=-1) == 1  # only the inline record
    assert store.get(inline).status == "unknown"
    assert store.get(leased).status == "sending"
    assert store.prune(older_than=timedelta(seconds=-5)) == 1  # the inline record
    assert {r.id for r in store.list()} == {waiting, leased}


def test_the_waiter_wakes_on_due_work(store: SQLiteStore, mailer: FluxMail) -> None:
    outbox = store.outbox()
    waiter = outbox.waiter()
    assert waiter.wait(0.05) is False
    outbox.enqueue_many([queued(mailer, 1, due=time.time() + 3600)[0]])
    assert waiter.wait(0.05) is False  # scheduled, not due
    outbox.enqueue_many(items(mailer, 1))
    assert waiter.wait(5) is True
    waiter.close()
    assert waiter.wait(5) is False


def test_a_store_from_the_previous_schema_is_migrated(tmp_path: Path, mailer: FluxMail) -> None:
    """A folder an older fluxmail left (every migration but the newest) is upgraded in place
    and keeps its records."""
    folder = tmp_path / "audit"
    folder.mkdir()
    conn = sqlite3.connect(folder / "store.db")
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
    for version, steps in MIGRATIONS[:-1]:
        for step in steps:
            conn.execute(step)
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
    conn.execute(
        "INSERT INTO messages (id, created_at, updated_at, status, backend, sender, to_addrs, "
        "cc_addrs, bcc_addrs, subject, message_id, content_hash, folder) VALUES "
        "('01OLD', 1.0, 1.0, 'sent', 'smtp', 'a@example.com', '[\"b@example.com\"]', '[]', "
        "'[]', 'old', '<old@example.com>', 'h', 'messages/1970-01-01/01OLD')"
    )
    conn.commit()
    conn.close()
    assert sqlite_versions(folder) == list(range(1, LATEST_VERSION))
    store = open_sqlite(folder)
    assert sqlite_versions(folder) == list(range(1, LATEST_VERSION + 1))
    old = store.get("01OLD")
    assert (old.status, old.subject, old.to) == ("sent", "old", ("b@example.com",))
    assert store.outbox().stats().pending == 0
    [audit_id] = store.outbox().enqueue_many(items(mailer, 1))
    assert [d.audit_id for d in store.outbox().claim_due("w", limit=5, lease=60)] == [audit_id]
    store.close()


def _lease_index_entries(store: SQLiteStore) -> int:
    conn = sqlite3.connect(store.folder / "store.db")
    try:
        found = conn.execute("SELECT SUM(ncell) FROM dbstat WHERE name='messages_lease'")
        return int(found.fetchone()[0] or 0)
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no dbstat table to count index entries with")
    finally:
        conn.close()


def test_only_leased_outbox_rows_are_in_the_lease_index(
    store: SQLiteStore, mailer: FluxMail
) -> None:
    """Schema 9: a bulk run's claims ('sending', no lease) cost the lease index nothing; a
    worker's lease is in it, and an expired one is still found through it."""
    lease = store.begin_run()
    store.claim_many([make_record(f"bulk-{n}") for n in range(5)], run=lease.token)
    assert _lease_index_entries(store) == 0
    outbox = store.outbox()
    outbox.enqueue_many(items(mailer, 2))
    assert len(outbox.claim_due("w", limit=5, lease=-1)) == 2  # a lease that already ran out
    assert _lease_index_entries(store) == 2
    assert outbox.expire_leases() == 2
    assert _lease_index_entries(store) == 0 and outbox.stats().pending == 2
    lease.close(resolved=False)
