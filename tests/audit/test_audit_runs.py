"""Bulk-run leases on both backends: a dead run's claims are resolved, a live run's never."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxmail.audit import AuditStore, open_store
from fluxmail.audit.records import NEVER_HANDED
from fluxmail.audit.sqlite_schema import LATEST_VERSION, MIGRATIONS
from tests.support.audit import (
    failed_result,
    kill_bulk_run,
    make_record,
    postgres_at_version,
    postgres_versions,
    sqlite_versions,
)

KEYS = [f"run-{n}" for n in range(6)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """How to open an empty store of each backend (picklable, for child processes)."""
    if request.param == "sqlite":
        return {"directory": tmp_path / "audit", "explicit": True}
    return {"url": request.getfixturevalue("pg_database")}


@pytest.fixture
def store(spec: dict[str, Any]) -> Iterator[AuditStore]:
    opened = open_store(**spec)
    yield opened
    opened.close()


def _statuses(store: AuditStore) -> dict[str, str]:
    return {r.idempotency_key or "": r.status for r in store.list(limit=100)}


def _assert_resolved(store: AuditStore, marked: int) -> None:
    """Marked claims 'unknown' and replayed; the others failed, deferred, and sent again."""
    statuses = _statuses(store)
    assert [statuses[k] for k in KEYS] == ["unknown"] * marked + ["failed"] * (6 - marked)
    never = [r for r in store.list(limit=100) if r.status == "failed"]
    for record in never:
        assert {v["status"] for v in record.recipients.values()} == {"deferred"}
        assert {v["text"] for v in record.recipients.values()} == {NEVER_HANDED}
    assert store.claim(make_record(KEYS[0])).replay is not None
    again = store.claim(make_record(KEYS[-1]))
    assert again.replay is None and again.audit_id in {r.id for r in never}


@pytest.mark.slow
def test_a_killed_run_is_resolved_when_the_store_opens(spec: dict[str, Any]) -> None:
    """SIGKILL mid-run: the next opener turns marked claims 'unknown', the rest 'failed'."""
    kill_bulk_run(spec, KEYS, marked=2)
    store = open_store(**spec)
    try:
        _assert_resolved(store, marked=2)
        assert store.recover_runs() == 0  # the trail is gone: resolved once
    finally:
        store.close()


@pytest.mark.slow
def test_a_run_dying_while_a_store_is_open_is_resolved_by_its_next_claim(
    store: AuditStore, spec: dict[str, Any]
) -> None:
    """A store opened before the run died resolves it when a claim meets one of its keys."""
    store.list()  # connected (PostgreSQL connects lazily) before the run starts
    kill_bulk_run(spec, KEYS, marked=3)
    again = store.claim_many([make_record(KEYS[-1])])[0]
    assert again.replay is None  # never sent: a new attempt on the same record
    statuses = _statuses(store)
    assert [statuses[k] for k in KEYS] == ["unknown"] * 3 + ["failed"] * 2 + ["sending"]


def test_a_live_run_is_never_resolved(store: AuditStore, spec: dict[str, Any]) -> None:
    """While the lease is held, other openers leave its claims 'sending' and replay them."""
    lease = store.begin_run()
    store.claim_many([make_record(k) for k in KEYS], run=lease.token)
    other = open_store(**spec)
    try:
        assert other.recover_runs() == 0
        assert set(_statuses(other).values()) == {"sending"}
        replay = other.claim(make_record(KEYS[0])).replay
        assert replay is not None and replay.status == "unknown"
    finally:
        other.close()
    lease.close(resolved=False)  # the owner stops without resolving: now it is recoverable
    assert store.recover_runs() == 6
    assert [_statuses(store)[k] for k in KEYS] == ["failed"] * 6


def test_a_run_that_ends_leaves_no_trail(store: AuditStore) -> None:
    """close(resolved=True): nothing of the run is left to recover."""
    lease = store.begin_run()
    [claim] = store.claim_many([make_record("done")], run=lease.token)
    assert lease.mark([claim.audit_id]) == frozenset()
    lease.close(resolved=True)
    assert store.recover_runs() == 0
    assert _statuses(store) == {"done": "sending"}


def test_mark_refuses_a_record_no_longer_claimed_by_the_run(store: AuditStore) -> None:
    """A mark only counts for the run's own 'sending' record (PostgreSQL: a lost lease)."""
    lease = store.begin_run()
    [claim] = store.claim_many([make_record("gone")], run=lease.token)
    store.finish(claim.audit_id, failed_result())
    refused = lease.mark([claim.audit_id])
    lease.close(resolved=True)
    if "://" in store.location:  # SQLite: a live lease cannot be lost, nothing to refuse
        assert refused == {claim.audit_id}


def test_a_schema_3_store_opens_and_migrates(tmp_path: Path) -> None:
    """A store written before run tokens (schema 3) gains run_id; its records still work."""
    folder = tmp_path / "audit"
    folder.mkdir()
    conn = sqlite3.connect(folder / "store.db")
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
    for version, steps in MIGRATIONS[:3]:
        for sql in steps:
            conn.execute(sql)
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
    conn.execute(
        "INSERT INTO messages (id, created_at, updated_at, status, backend, sender, to_addrs, "
        "cc_addrs, bcc_addrs, subject, message_id, idempotency_key, content_hash, folder) "
        "VALUES ('01V3', 1.0, 1.0, 'sending', 'smtp', 'a@example.com', '[\"b@example.com\"]', "
        "'[]', '[]', 'v3', '<v3@example.com>', 'old', 'hash-1', 'messages/1970-01-01/01V3')"
    )
    conn.commit()
    conn.close()
    store = open_store(directory=folder, explicit=True, stale_after=3600 * 24 * 365 * 100)
    try:
        replay = store.claim(make_record("old")).replay  # an old claim: may have gone out
        assert replay is not None and replay.status == "unknown"
        lease = store.begin_run()
        [claim] = store.claim_many([make_record("new")], run=lease.token)
        lease.close(resolved=False)
        assert store.recover_runs() == 1 and store.get(claim.audit_id).status == "failed"
    finally:
        store.close()
    versions = sqlite_versions(folder)
    assert versions == list(range(1, LATEST_VERSION + 1)) and LATEST_VERSION >= 4


@pytest.mark.postgres
def test_a_schema_1_postgres_store_opens_and_migrates(pg_database: str) -> None:
    """A PostgreSQL store from before run leases (schema 1) migrates; its records still work."""
    from fluxmail.audit import postgres

    postgres_at_version(
        pg_database,
        1,
        "INSERT INTO fluxmail_audit_messages (id, created_at, updated_at, status, backend, "
        "sender, to_addrs, cc_addrs, bcc_addrs, subject, message_id, idempotency_key, "
        "content_hash, eml) VALUES ('01V1', now(), now(), 'sending', 'smtp', "
        "'a@example.com', '[\"b@example.com\"]', '[]', '[]', 'v1', '<v1@example.com>', "
        "'pg-old', 'hash-1', 'x')",
    )
    store = open_store(url=pg_database)
    try:
        replay = store.claim(make_record("pg-old")).replay  # an old claim: may have gone out
        assert replay is not None and replay.status == "unknown"
        lease = store.begin_run()
        [new] = store.claim_many([make_record("pg-new")], run=lease.token)
        lease.close(resolved=False)
        assert store.recover_runs() == 1 and store.get(new.audit_id).status == "failed"
    finally:
        store.close()
    assert postgres_versions(pg_database) == list(range(1, postgres.LATEST_VERSION + 1))
