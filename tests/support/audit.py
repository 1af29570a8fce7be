"""Helpers for the audit store tests: records, results, and functions run in child processes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from fluxmail.audit import OutboundRecord, open_store
from fluxmail.results import Attempt, RecipientOutcome, RecipientStatus, SendResult, ServerReply

EML = (
    b"From: Ann <ann@example.com>\r\nTo: bob@example.com\r\nCc: cy@example.com\r\n"
    b"Subject: Quarterly report\r\nMessage-ID: <m1@example.com>\r\n\r\n" + b"x" * 1800 + b"\r\n"
)


def make_record(
    key: str | None = None, content_hash: str = "hash-1", **changes: Any
) -> OutboundRecord:
    """A complete outbound record (To, Cc, Bcc, both bodies, one attachment)."""
    record = OutboundRecord(
        message_id="<m1@example.com>",
        idempotency_key=key,
        content_hash=content_hash,
        backend="smtp",
        provider="mailpit",
        host="127.0.0.1",
        sender="ann@example.com",
        to=("bob@example.com",),
        cc=("cy@example.com",),
        bcc=("hidden@example.com",),
        subject="Quarterly report",
        metadata={"campaign": "q3", "note": "héllo"},
        eml=EML,
        text="Hello Bob",
        html="<p>Hello Bob</p>",
        attachments=(("report.pdf", "application/pdf", b"%PDF-1.4 fake"),),
    )
    return replace(record, **changes)


def sent_result(status: str = "sent", *, message_id: str = "<m1@example.com>") -> SendResult:
    """A finished SendResult: every recipient accepted, one attempt, a final reply."""
    rcpts = ("bob@example.com", "cy@example.com", "hidden@example.com")
    outcome: RecipientOutcome = "sent" if status in ("sent", "queued") else "rejected"
    return SendResult(
        status=status,  # type: ignore[arg-type]
        message_id=message_id,
        recipients={
            a: RecipientStatus(a, outcome, 250 if outcome == "sent" else 550) for a in rcpts
        },
        attempts=(Attempt(number=1, started_at=1700000000.0, elapsed=0.05),),
        final_reply=ServerReply(250, "2.0.0 queued as ABC", "2.0.0"),
        elapsed=0.05,
    )


def failed_result(number: int = 1) -> SendResult:
    """A send that failed before anything was accepted (e.g. a refused connection)."""
    return SendResult(
        status="failed",
        message_id="<m1@example.com>",
        attempts=(
            Attempt(number=number, started_at=1700000000.0, elapsed=0.01, error="refused",
                    error_code="connection_failed"),
        ),
    )  # fmt: skip


def claim_keys(spec: Mapping[str, Any], keys: list[str], barrier: Any, queue: Any) -> None:
    """Child process: open the store, wait for the others, claim every key; report the claims."""
    store = open_store(**spec)
    barrier.wait(timeout=60)
    out = []
    for key in keys:
        claim = store.claim(make_record(key))
        out.append((key, claim.audit_id, claim.replay is None))
    store.close()
    queue.put(out)


def run_claimers(spec: Mapping[str, Any], keys: list[str], processes: int) -> list[Any]:
    """Start ``processes`` spawned children claiming the same keys at once; all their claims."""
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    children = [
        ctx.Process(target=claim_keys, args=(dict(spec), keys, barrier, queue))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    claims = [item for _ in children for item in queue.get(timeout=90)]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    return claims


def kill_during_send(spec: Mapping[str, Any], key: str) -> None:
    """Run claim_then_die in a spawned child and wait for it to be killed."""
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=claim_then_die, args=(dict(spec), key))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL


def claim_then_die(spec: Mapping[str, Any], key: str) -> None:
    """Child process: claim a key (committed), then die by SIGKILL before finishing."""
    store = open_store(**spec)
    store.claim(make_record(key))
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(30)  # not reached


def run_then_die(spec: Mapping[str, Any], keys: list[str], marked: int) -> None:
    """Child process: claim keys for a bulk run, mark the first ``marked`` as handed to the
    wire, then die by SIGKILL (the lease goes with the process)."""
    store = open_store(**spec)
    lease = store.begin_run()
    claims = store.claim_many([make_record(k) for k in keys], run=lease.token)
    lease.mark([c.audit_id for c in claims[:marked]])
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(30)  # not reached


def kill_bulk_run(spec: Mapping[str, Any], keys: list[str], marked: int) -> None:
    """Run run_then_die in a spawned child and wait for it to be killed."""
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=run_then_die, args=(dict(spec), keys, marked))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL
    if "url" in spec:
        wait_for_sessions_to_end(spec["url"], "fluxmail-audit-run")


def wait_for_sessions_to_end(url: str, application: str) -> None:
    """PostgreSQL ends a dead client's session (and its advisory locks) a moment later."""
    import psycopg

    deadline = time.monotonic() + 10
    with psycopg.connect(url, autocommit=True) as conn:
        sql = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name=%s AND datname=current_database()"
        )
        while conn.execute(sql, (application,)).fetchone()[0] and time.monotonic() < deadline:
            time.sleep(0.01)


def postgres_at_version(url: str, version: int, *inserts: str) -> None:
    """An empty database brought to audit schema ``version`` by the store's own migrations
    (as an older fluxmail left it), then ``inserts`` run: the starting point of a migration
    test."""
    import psycopg

    from fluxmail.audit import postgres

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE fluxmail_audit_schema "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for number, steps in postgres.MIGRATIONS[:version]:
            for sql in steps:
                conn.execute(sql)
            conn.execute("INSERT INTO fluxmail_audit_schema (version) VALUES (%s)", (number,))
        for sql in inserts:
            conn.execute(sql)


def postgres_versions(url: str) -> list[int]:
    import psycopg

    with psycopg.connect(url) as conn:
        return sorted(v for (v,) in conn.execute("SELECT version FROM fluxmail_audit_schema"))


def sqlite_versions(folder: Path) -> list[int]:
    import sqlite3

    conn = sqlite3.connect(folder / "store.db")
    try:
        return [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    finally:
        conn.close()


def pending_snapshots(root: Path) -> int:
    """Rows of ``pending_snapshots`` in the audit folder's database (read with sqlite3)."""
    import sqlite3

    conn = sqlite3.connect(root / "store.db")
    try:
        return int(conn.execute("SELECT COUNT(*) FROM pending_snapshots").fetchone()[0])
    finally:
        conn.close()


def folder_of(root: Path, audit_id: str) -> Path:
    """A record's snapshot folder, found on disk (whatever its day)."""
    [found] = (root / "messages").glob(f"*/{audit_id}")
    return found
