"""The PostgreSQL outbox against a real server: enqueue (also in the caller's transaction),
claims under leases, expiry, settling, operations, fleet-wide pacing and the migration."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from fluxmail import FluxMail
from fluxmail.audit import open_store
from fluxmail.audit import postgres as pg_store
from fluxmail.audit.log import outbound_record
from fluxmail.audit.outbox import Queued, Settlement
from fluxmail.audit.postgres import PostgresStore
from fluxmail.audit.postgres_outbox import PostgresOutbox
from fluxmail.errors import AuditError, ConfigurationError, RecordNotFound
from fluxmail.message.stored import message_from_spec, message_to_spec
from tests.support.audit import (
    failed_result,
    make_record,
    postgres_at_version,
    postgres_versions,
    sent_result,
)
from tests.support.postgres import PgServer

pytestmark = pytest.mark.postgres

MAILER = FluxMail(object_type="memory", sender="ann@example.com", audit=True)
DAY = 86400.0


def built(n: int = 0, *, key: str | None = None, due: float | None = None, **extra: Any) -> Any:
    """A real built message, and the Queued item the outbox takes for it."""
    draft = MAILER.create(
        f"Invoice {n}", ["bob@example.com"], f"Hello {n}", cc="cy@example.com",
        bcc="hidden@example.com", idempotency_key=key, **extra,
    )  # fmt: skip
    record = outbound_record(MAILER.config, draft.message, draft.as_bytes(), "pending")
    now = time.time()
    spec = message_to_spec(draft.message)
    return draft.message, Queued(record, spec, now - 1 if due is None else due, now + DAY)


def queued(n: int = 0, *, key: str | None = None, due: float | None = None) -> Queued:
    item: Queued = built(n, key=key, due=due)[1]
    return item


@pytest.fixture
def store(pg_database: str) -> Iterator[PostgresStore]:
    opened = open_store(url=pg_database)
    assert isinstance(opened, PostgresStore)
    yield opened
    opened.close()


@pytest.fixture
def outbox(store: PostgresStore) -> PostgresOutbox:
    box = store.outbox()
    assert box is store.outbox()  # one cached instance
    return box


def sql(url: str, statement: str, *args: Any) -> list[Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, args)
        return cursor.fetchall() if cursor.description is not None else []


def test_enqueue_then_claim_gives_the_same_message(outbox: PostgresOutbox, store: Any) -> None:
    message, item = built(1, attachments=[("report.pdf", b"%PDF-1.4 fake")])
    [audit_id] = outbox.enqueue_many([item])
    assert store.get(audit_id).status == "pending"
    [delivery] = outbox.claim_due("w1", limit=10, lease=60)
    assert (delivery.audit_id, delivery.tries, delivery.recipients) == (audit_id, 0, None)
    assert delivery.eml == item.record.eml
    assert delivery.attachments == (b"%PDF-1.4 fake",)
    assert message_from_spec(delivery.spec, delivery.attachments) == message
    assert abs(delivery.deadline_at - item.deadline_at) < 0.01
    assert store.get(audit_id).status == "sending"
    assert outbox.claim_due("w2", limit=10, lease=60) == []  # held by w1


def test_not_due_is_not_claimed_and_next_due_says_when(outbox: PostgresOutbox) -> None:
    later = time.time() + 3600
    outbox.enqueue_many([queued(1, due=later)])
    assert outbox.claim_due("w1", limit=10, lease=60) == []
    assert abs((outbox.next_due() or 0) - later) < 0.01
    stats = outbox.stats()
    assert (stats.pending, stats.due, stats.scheduled, stats.oldest_due_age) == (1, 0, 1, None)


def test_callers_transaction_rollback_and_commit(outbox: PostgresOutbox, pg_database: str) -> None:
    waiter = outbox.waiter()
    try:
        with psycopg.connect(pg_database) as conn:  # not autocommit: the caller's transaction
            conn.execute("CREATE TABLE orders (n int)")
            conn.commit()
            conn.execute("INSERT INTO orders VALUES (1)")
            outbox.enqueue_many([queued(1)], connection=conn)
            conn.rollback()
            assert sql(pg_database, "SELECT count(*) FROM fluxmail_audit_messages") == [(0,)]
            conn.execute("INSERT INTO orders VALUES (2)")
            [audit_id] = outbox.enqueue_many([queued(2)], connection=conn)
            assert conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
            assert not waiter.wait(0.3)  # not before the caller commits
            conn.commit()
        assert waiter.wait(10)
        assert sql(pg_database, "SELECT id FROM fluxmail_audit_messages") == [(audit_id,)]
    finally:
        waiter.close()


def test_callers_async_connection(outbox: PostgresOutbox, pg_database: str) -> None:
    async def scenario() -> str:
        async with await psycopg.AsyncConnection.connect(pg_database) as conn:
            await outbox.enqueue_many_async([queued(1)], connection=conn)
            await conn.rollback()
            [audit_id] = await outbox.enqueue_many_async([queued(2)], connection=conn)
            assert not waiter.wait(0.3)
            await conn.commit()
            return audit_id

    waiter = outbox.waiter()
    try:
        audit_id = asyncio.run(scenario())
        assert waiter.wait(10)
    finally:
        waiter.close()
    assert sql(pg_database, "SELECT id FROM fluxmail_audit_messages") == [(audit_id,)]
    # Without a connection: on a worker thread, committed by the store.
    [other] = asyncio.run(outbox.enqueue_many_async([queued(3)]))
    assert other != audit_id


def test_sqlalchemy_connection_and_unsupported_ones(
    outbox: PostgresOutbox, pg_database: str
) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine(pg_database.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            outbox.enqueue_many([queued(1)], connection=conn)
            conn.rollback()
            [audit_id] = outbox.enqueue_many([queued(2)], connection=conn)
            conn.commit()
    finally:
        engine.dispose()
    assert sql(pg_database, "SELECT id FROM fluxmail_audit_messages") == [(audit_id,)]
    with pytest.raises(ConfigurationError) as caught:
        outbox.enqueue_many([queued(3)], connection=object())
    assert caught.value.code == "outbox_connection_unsupported"
    assert "builtins.object" in str(caught.value)
    with pytest.raises(ConfigurationError):
        asyncio.run(outbox.enqueue_many_async([queued(3)], connection="nope"))
    assert sql(pg_database, "SELECT count(*) FROM fluxmail_audit_messages") == [(1,)]


def test_two_claimers_take_disjoint_sets(pg_database: str) -> None:
    stores = [open_store(url=pg_database) for _ in range(2)]
    boxes = [s.outbox() for s in stores]
    ids = set(boxes[0].enqueue_many([queued(n) for n in range(500)]))
    taken: list[list[str]] = [[], []]
    barrier = threading.Barrier(2)

    def work(n: int) -> None:
        barrier.wait(timeout=30)
        for _ in range(100):  # bounded: 500 rows, at least one row per turn until empty
            got = boxes[n].claim_due(f"w{n}", limit=7, lease=60)
            if not got:
                return
            taken[n] += [d.audit_id for d in got]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for s in stores:
        s.close()
    assert not set(taken[0]) & set(taken[1])
    assert set(taken[0]) | set(taken[1]) == ids
    assert len(taken[0]) + len(taken[1]) == 500
    assert taken[0] and taken[1]


def expire_now(url: str, audit_id: str) -> None:
    sql(url, "UPDATE fluxmail_audit_messages SET lease_until = now() - interval '1 second' "
        "WHERE id=%s", audit_id)  # fmt: skip


def test_lease_expiry_unmarked_pending_marked_unknown_then_late_settle(
    outbox: PostgresOutbox, store: Any, pg_database: str
) -> None:
    a, b = outbox.enqueue_many([queued(1), queued(2)])
    outbox.claim_due("w1", limit=10, lease=60)
    assert outbox.mark("w1", [b]) == frozenset()
    assert outbox.expire_leases() == 0  # still held
    expire_now(pg_database, a)
    expire_now(pg_database, b)
    assert outbox.expire_leases() == 2
    assert store.get(a).status == "pending"
    row_b = store.get(b, include_bcc=True)
    assert row_b.status == "unknown"
    assert {r["status"] for r in row_b.recipients.values()} == {"unknown"}
    assert set(row_b.recipients) == {"bob@example.com", "cy@example.com", "hidden@example.com"}
    assert sql(pg_database, "SELECT lease_owner, tries FROM fluxmail_audit_messages WHERE id=%s",
               a) == [(None, 0)]  # fmt: skip
    # The unmarked one is claimable again; the marked one never is.
    assert [d.audit_id for d in outbox.claim_due("w2", limit=10, lease=60)] == [a]
    # w1 was only slow: its late settle of the marked row records what really happened.
    outbox.settle("w1", [Settlement(b, sent_result())])
    outbox.settle("w1", [Settlement(a, sent_result())])  # a is w2's now: left alone
    assert store.get(b).status == "sent"
    assert store.get(a).status == "sending"


def test_mark_refuses_rows_not_the_owners(outbox: PostgresOutbox) -> None:
    a, b, c = outbox.enqueue_many([queued(1), queued(2), queued(3, due=time.time() + 3600)])
    outbox.claim_due("w1", limit=1, lease=60)
    outbox.claim_due("w2", limit=1, lease=60)
    assert outbox.mark("w1", [a, b, c]) == frozenset({b, c})
    assert outbox.renew("w1", lease=120) == 1
    outbox.release("w2", [b])  # unmarked: back to pending, its try not counted
    [again] = outbox.claim_due("w3", limit=5, lease=60)
    assert (again.audit_id, again.tries) == (b, 0)
    outbox.release("w1", [a])  # marked: never given back
    assert outbox.stats().sending == 2


def test_a_mark_carries_the_waiting_settlements(outbox: PostgresOutbox, store: Any) -> None:
    """mark(settle=...) records the outcomes and the marks in one statement: finals of rows
    the owner holds, and a reschedule; a settlement of a row not the owner's is left alone."""
    a, b, c, d = outbox.enqueue_many([queued(1), queued(2), queued(3), queued(4)])
    outbox.claim_due("w1", limit=3, lease=60)
    outbox.claim_due("w2", limit=1, lease=60)
    outbox.mark("w1", [a, b])
    later = time.time() + 3600
    refused = outbox.mark(
        "w1", [c],
        settle=[Settlement(a, sent_result()), Settlement(d, sent_result()),
                Settlement(b, failed_result(), retry_at=later)],
    )  # fmt: skip
    assert refused == frozenset()
    assert [store.get(x).status for x in (a, b, c, d)] == ["sent", "pending", "sending", "sending"]
    assert outbox.stats().scheduled == 1
    assert outbox.mark("w1", [d], settle=[Settlement(c, sent_result())]) == frozenset({d})
    assert store.get(c).status == "sent"


def test_settle_retry_then_final(outbox: PostgresOutbox, store: Any, pg_database: str) -> None:
    [audit_id] = outbox.enqueue_many([queued(1)])
    outbox.claim_due("w1", limit=1, lease=60)
    outbox.mark("w1", [audit_id])
    soon = time.time() - 0.5  # due again at once
    outbox.settle("w1", [Settlement(audit_id, failed_result(), retry_at=soon,
                                    retry_recipients=("cy@example.com",))])  # fmt: skip
    record = store.get(audit_id)
    assert record.status == "pending"
    assert outbox.stats().retrying == 1
    [delivery] = outbox.claim_due("w2", limit=1, lease=60)
    assert delivery.tries == 1 and delivery.recipients == ("cy@example.com",)
    assert [a["error_code"] for a in delivery.prior_attempts] == ["connection_failed"]
    outbox.settle("w1", [Settlement(audit_id, sent_result())])  # not w1's any more
    assert store.get(audit_id).status == "sending"
    outbox.settle("w2", [Settlement(audit_id, sent_result())])
    record = store.get(audit_id)
    assert record.status == "sent" and record.sent_at is not None
    assert sql(pg_database, "SELECT lease_owner, retry_recipients, on_wire_at IS NULL FROM "
               "fluxmail_audit_messages") == [(None, None, True)]  # fmt: skip


def test_idempotent_enqueue(outbox: PostgresOutbox, store: Any, pg_database: str) -> None:
    first = outbox.enqueue_many([queued(1, key="k1"), queued(1, key="k1")])
    assert first[0] == first[1]
    assert outbox.enqueue_many([queued(1, key="k1")]) == first[:1]
    assert sql(pg_database, "SELECT count(*) FROM fluxmail_audit_messages") == [(1,)]
    with pytest.raises(AuditError) as caught:
        outbox.enqueue_many([queued(2, key="k1")])
    assert caught.value.code == "idempotency_conflict"
    # A failed row is queued again under the same key: pending, tries from 0.
    outbox.claim_due("w1", limit=1, lease=60)
    outbox.settle("w1", [Settlement(first[0], failed_result())])
    assert store.get(first[0]).status == "failed"
    assert outbox.enqueue_many([queued(1, key="k1")]) == first[:1]
    [delivery] = outbox.claim_due("w1", limit=1, lease=60)
    assert (delivery.audit_id, delivery.tries) == (first[0], 0)
    # An inline send() with the key now replays it, never sends again.
    assert store.claim(
        make_record("k1", content_hash=queued(1, key="k1").record.content_hash)
    ).replay


def test_stats_counts_and_oldest_age(outbox: PostgresOutbox, pg_database: str) -> None:
    now = time.time()
    ids = outbox.enqueue_many(
        [queued(1, due=now - 30), queued(2, due=now - 5), queued(3, due=now + 3600), queued(4)]
    )
    outbox.cancel(ids[3])
    store_inline = open_store(url=pg_database)
    store_inline.claim(make_record())  # an inline send: not the outbox's
    store_inline.close()
    stats = outbox.stats()
    assert (stats.pending, stats.due, stats.scheduled, stats.cancelled) == (3, 2, 1, 1)
    assert stats.oldest_due_age is not None and 29 < stats.oldest_due_age < 40
    [d] = outbox.claim_due("w1", limit=1, lease=60)
    assert d.audit_id == ids[0]  # oldest due first
    assert outbox.stats().sending == 1
    assert outbox.stats().to_dict()["due"] == 1


def test_retry_and_cancel_refusals(outbox: PostgresOutbox, store: Any, pg_database: str) -> None:
    a, b = outbox.enqueue_many([queued(1), queued(2)])
    outbox.cancel(a)
    with pytest.raises(AuditError) as caught:
        outbox.cancel(a)
    assert caught.value.code == "outbox_not_cancellable"
    with pytest.raises(AuditError) as caught:
        outbox.retry(b, deadline_at=time.time() + DAY)  # pending
    assert caught.value.code == "outbox_not_retryable"
    outbox.retry(a, deadline_at=time.time() + DAY)
    assert store.get(a).status == "pending"
    outbox.claim_due("w1", limit=5, lease=60)
    outbox.mark("w1", [a])
    expire_now(pg_database, a)
    outbox.expire_leases()
    assert store.get(a).status == "unknown"
    with pytest.raises(AuditError) as caught:
        outbox.retry(a, deadline_at=time.time() + DAY)
    assert caught.value.code == "outbox_not_retryable" and "force" in str(caught.value)
    outbox.retry(a, deadline_at=time.time() + DAY, force=True)
    assert sql(pg_database, "SELECT status, lease_owner FROM fluxmail_audit_messages WHERE id=%s",
               a) == [("pending", None)]  # fmt: skip
    inline = store.claim(make_record()).audit_id
    store.finish(inline, failed_result())
    with pytest.raises(AuditError) as caught:
        outbox.retry(inline, deadline_at=time.time() + DAY)
    assert caught.value.code == "outbox_not_retryable" and "inline" in str(caught.value)
    with pytest.raises(RecordNotFound):
        outbox.cancel("nope")
    with pytest.raises(RecordNotFound):
        outbox.retry("nope", deadline_at=0)


def test_reserve_paces_the_fleet(pg_database: str) -> None:
    stores = [open_store(url=pg_database) for _ in range(2)]
    one, two = (s.outbox() for s in stores)
    waits = [one.reserve("smtp://relay", 100, 50), two.reserve("smtp://relay", 100, 50),
             one.reserve("smtp://relay", 100, 50)]  # fmt: skip
    assert waits[0] == 0
    # The second waits for the first's 50 slots (0.5 s less the moment between the calls),
    # the third for both: the database keeps the count, whichever worker asks.
    assert 0.25 < waits[1] <= 0.5 and 0.75 < waits[2] <= 1.0
    assert 0.45 < waits[2] - waits[1] <= 0.5
    assert two.reserve("api://other", 10, 1) == 0  # keys are paced apart
    for s in stores:
        s.close()


def test_prune_leaves_pending(outbox: PostgresOutbox, store: Any) -> None:
    from datetime import timedelta

    [pending] = outbox.enqueue_many([queued(1)])
    done = store.claim(make_record()).audit_id
    store.finish(done, sent_result())
    assert store.prune(older_than=timedelta(seconds=-60)) == 1
    assert store.get(pending).status == "pending"


def test_stale_recovery_leaves_leased_rows(outbox: PostgresOutbox, store: Any) -> None:
    [leased] = outbox.enqueue_many([queued(1)])
    outbox.claim_due("w1", limit=1, lease=60)
    inline = store.claim(make_record()).audit_id
    assert store.recover_stale(older_than=-60) == 1
    assert store.get(inline).status == "unknown"
    assert store.get(leased).status == "sending"


def test_broken_listen_connection_is_unavailable(
    outbox: PostgresOutbox, pg_server: PgServer, pg_database: str
) -> None:
    waiter = outbox.waiter()
    try:
        sql(pg_database, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name='fluxmail-outbox-listen'")  # fmt: skip
        with pytest.raises(AuditError) as caught:
            for _ in range(50):  # bounded: the client notices the closed session
                waiter.wait(0.1)
        assert caught.value.code == "audit_unavailable"
        assert pg_server.password not in str(caught.value)
    finally:
        waiter.close()


def test_migration_from_version_4_keeps_rows(pg_database: str) -> None:
    postgres_at_version(
        pg_database, 4,
        "INSERT INTO fluxmail_audit_messages (id, created_at, updated_at, status, backend, "
        "sender, to_addrs, cc_addrs, bcc_addrs, subject, message_id, content_hash, eml) VALUES "
        "('old1', now(), now(), 'sent', 'smtp', 'a@example.com', '[]', '[]', '[]', 's', '<m@x>', "
        "'', '\\x00')",
    )  # fmt: skip
    store = open_store(url=pg_database)
    try:
        assert store.get("old1").status == "sent"
        assert postgres_versions(pg_database) == list(range(1, pg_store.LATEST_VERSION + 1))
        assert sql(pg_database, "SELECT tries, spec, due_at FROM fluxmail_audit_messages") == [
            (0, None, None)
        ]
        assert store.outbox().stats().failed == 0  # not an outbox row
        [audit_id] = store.outbox().enqueue_many([queued(1)])
        assert store.outbox().claim_due("w", limit=5, lease=60)[0].audit_id == audit_id
    finally:
        store.close()


def test_a_refused_enqueue_leaves_the_callers_transaction_usable(
    outbox: PostgresOutbox, pg_database: str
) -> None:
    """Only the savepoint is rolled back: the caller's own change still commits."""
    [first] = outbox.enqueue_many([queued(1, key="k")])
    with psycopg.connect(pg_database) as conn:
        conn.execute("CREATE TABLE orders (n int)")
        with pytest.raises(AuditError) as caught:
            outbox.enqueue_many([queued(2, key="k")], connection=conn)
        assert caught.value.code == "idempotency_conflict"
        conn.execute("INSERT INTO orders VALUES (1)")
        assert outbox.enqueue_many([queued(1, key="k")], connection=conn) == [first]
        conn.commit()
    assert sql(pg_database, "SELECT count(*) FROM orders") == [(1,)]
    assert sql(pg_database, "SELECT count(*) FROM fluxmail_audit_messages") == [(1,)]
