"""enqueue() on PostgreSQL, inside the caller's own transaction (psycopg 3, sync and async)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest

from fluxmail import ConfigurationError, FluxMail, MessageError

pytestmark = pytest.mark.postgres

psycopg = pytest.importorskip("psycopg")


def _mailer(url: str, **options: Any) -> FluxMail:
    return FluxMail("memory", audit=True, audit_url=url, sender="s@example.com", **options)


def _rows(url: str) -> list[tuple[str, str, float]]:
    """Every outbox row as (subject, status, due_at), read with a connection of our own."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [
            (subject, status, float(due))
            for subject, status, due in conn.execute(
                "SELECT subject, status, extract(epoch FROM due_at) "
                "FROM fluxmail_audit_messages ORDER BY subject"
            )
        ]


def _business(conn: Any) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY)")


def test_enqueue_returns_pending_row(pg_database: str, smtp_server: Any) -> None:
    server = smtp_server()
    mailer = FluxMail(
        host=server.host, port=server.port, use_tls=False, sender="s@example.com",
        audit_url=pg_database,
    )  # fmt: skip
    draft = mailer.create("Hi", "a@example.com", "x")
    audit_id = draft.enqueue(send_at=timedelta(minutes=10))
    assert mailer.audit.get(audit_id).status == "pending"
    assert mailer.audit.get_eml(audit_id) == draft.as_bytes()
    [(_, status, due)] = _rows(pg_database)
    assert status == "pending" and due == pytest.approx(time.time() + 600, abs=5)
    assert mailer.outbox.stats().scheduled == 1 and server.connections == 0


def test_sync_connection_rollback_and_commit(pg_database: str) -> None:
    """Rolled back with the business change: no row; committed: exactly one."""
    mailer = _mailer(pg_database)
    mailer.outbox.stats()  # the schema exists before the caller's transaction begins
    with psycopg.connect(pg_database) as conn:
        _business(conn)
        conn.commit()
        conn.execute("INSERT INTO orders VALUES (1)")
        mailer.create("rolled back", "a@example.com", "x").enqueue(connection=conn)
        mailer.enqueue_many(
            [{"subject": "many", "recipients": "b@example.com", "body": "x"}], connection=conn
        )
        conn.rollback()
        assert _rows(pg_database) == []
        conn.execute("INSERT INTO orders VALUES (2)")
        audit_id = mailer.create("committed", "a@example.com", "x").enqueue(connection=conn)
        assert _rows(pg_database) == []  # not visible before the caller commits
        conn.commit()
    assert [(s, st) for s, st, _ in _rows(pg_database)] == [("committed", "pending")]
    assert mailer.audit.get(audit_id).subject == "committed"


def test_async_connection_rollback_and_commit(pg_database: str) -> None:
    mailer = _mailer(pg_database)
    mailer.outbox.stats()

    async def run() -> str:
        async with await psycopg.AsyncConnection.connect(pg_database) as conn:
            await conn.execute("SELECT 1")
            draft = mailer.create("rolled back", "a@example.com", "x")
            await draft.enqueue_async(connection=conn)
            await conn.rollback()
            assert _rows(pg_database) == []
            ids = await mailer.enqueue_many_async(
                [mailer.create(f"c{n}", "a@example.com", "x") for n in range(3)],
                connection=conn,
                batch_size=2,
            )
            await conn.commit()
            return ids[0]

    first = asyncio.run(run())
    assert [s for s, _, _ in _rows(pg_database)] == ["c0", "c1", "c2"]
    assert mailer.audit.get(first).status == "pending"


def test_connection_of_the_wrong_kind(pg_database: str) -> None:
    """A sync connection to enqueue_async (or any other object) is refused, nothing written."""
    mailer = _mailer(pg_database)
    mailer.outbox.stats()
    draft = mailer.create("Hi", "a@example.com", "x")
    with pytest.raises(ConfigurationError) as info:
        draft.enqueue(connection="postgresql://example")
    assert info.value.code == "outbox_connection_unsupported"
    with psycopg.connect(pg_database) as conn, pytest.raises(ConfigurationError):
        asyncio.run(draft.enqueue_async(connection=conn))
    assert _rows(pg_database) == []


def test_idempotent_in_a_transaction(pg_database: str) -> None:
    """The same key committed twice: one row, one id."""
    mailer = _mailer(pg_database)
    ids = []
    for _ in range(2):
        with psycopg.connect(pg_database) as conn:
            draft = mailer.create("Order", "a@example.com", "x", idempotency_key="order-1")
            ids.append(draft.enqueue(connection=conn))
            conn.commit()
    assert ids[0] == ids[1] and len(_rows(pg_database)) == 1


def test_bad_item_in_a_transaction(pg_database: str) -> None:
    """A bad item raises before its batch is written; the caller rolls the rest back."""
    mailer = _mailer(pg_database)
    items: list[Any] = [
        {"subject": f"n{n}", "recipients": "a@example.com", "body": "x"} for n in range(3)
    ]
    with psycopg.connect(pg_database) as conn:
        with pytest.raises(MessageError):
            mailer.enqueue_many([*items, {"subject": "bad"}], connection=conn, batch_size=2)
        conn.rollback()
    assert _rows(pg_database) == []


def test_enqueue_many_rate(pg_database: str) -> None:
    """Informal: batches of 500 go well above 2,000 messages a second on this machine."""
    mailer = _mailer(pg_database)
    items = [
        {"subject": f"n{n}", "recipients": f"u{n}@example.com", "body": "hello"}
        for n in range(2000)
    ]
    started = time.perf_counter()
    ids = mailer.enqueue_many(items)
    elapsed = time.perf_counter() - started
    assert len(set(ids)) == 2000 and mailer.outbox.stats().pending == 2000
    print(f"enqueue_many: {2000 / elapsed:.0f} msg/s")


def test_sqlalchemy_connection(pg_database: str) -> None:
    """A SQLAlchemy Connection over psycopg: its rollback drops the row, its commit keeps it."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    mailer = _mailer(pg_database)
    mailer.outbox.stats()
    engine = sqlalchemy.create_engine(pg_database.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
            mailer.create("rolled back", "a@example.com", "x").enqueue(connection=conn)
            conn.rollback()
            assert _rows(pg_database) == []
            mailer.create("committed", "a@example.com", "x").enqueue(connection=conn)
            conn.commit()
    finally:
        engine.dispose()
    assert [(s, st) for s, st, _ in _rows(pg_database)] == [("committed", "pending")]
